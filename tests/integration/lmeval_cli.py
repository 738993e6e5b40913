"""Run `evopress` in this (the lm-eval) environment and record what a user would see.

    python lmeval_cli.py RECORD.json [NAME=VALUE ...] -- eval --model DIR --tasks zoo ...

The CLI runs as a child process with the extra environment variables given, and RECORD.json gets
its exit code, stdout, stderr, seconds and this environment's lm-eval version. This script exits 0
whatever the CLI did, so a test can also check a run that must fail (and how it says so).
"""

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version

record, rest = sys.argv[1], sys.argv[2:]
cut = rest.index("--")
env = dict(os.environ, **dict(item.split("=", 1) for item in rest[:cut]))
start = time.time()
done = subprocess.run([sys.executable, "-m", "evopress.cli.main", *rest[cut + 1:]], capture_output=True, text=True,
                      env=env)
with open(record, "w") as f:
    json.dump({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
               "seconds": round(time.time() - start, 1), "lm_eval": version("lm_eval")}, f)
