"""The integration tier: the runtimes our users serve with, each in its own environment.

A runtime pins other versions than ours, so it lives in its own virtual environment, built by
`.ci/env/<name>.sh DIR` (from the package registry, nothing cached). A test reaches it through
`runtime("<name>")`: the environment's python, from `EVOPRESS_<NAME>_PYTHON`. Where that is not
set the test is skipped, except under `EVOPRESS_REQUIRE_RUNTIMES=1` (what `.ci/run` sets), where a
missing environment fails the test instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


class Runtime:
    """A runtime's environment: `run(script, *args)` runs a script of this folder with its python."""

    def __init__(self, name: str, python: str):
        self.name, self.python = name, python

    def run(self, script: str, *args, timeout: int = 900) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        done = subprocess.run([self.python, str(HERE / script), *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{self.name}: {script} failed ({done.returncode})\n{done.stdout[-4000:]}\n"
                                 f"{done.stderr[-8000:]}")
        return done


@pytest.fixture(scope="session")
def runtime():
    def get(name: str) -> Runtime:
        var = f"EVOPRESS_{name.upper()}_PYTHON"
        python = os.environ.get(var)
        if not python:
            message = f"{var} is not set: build the environment with .ci/env/{name}.sh DIR and point {var} at DIR/bin/python"
            if os.environ.get("EVOPRESS_REQUIRE_RUNTIMES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        return Runtime(name, python)
    return get
