import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from evopress.errors import JournalError
from evopress.search import Journal, Settings, evolve
from evopress.search.loop import header

from tests.search.synthetic import Linear


class Crash(Exception):
    pass


def test_resume_after_crash_gives_identical_result(tmp_path, space, budget):
    settings = Settings(generations=15, offspring=8, seed=3)
    whole = evolve(space, budget, Linear(space, 0), settings)

    path = tmp_path / "journal.jsonl"
    f = Linear(space, 0)

    def crashing(genomes, fidelity):
        if f.calls == 12:
            raise Crash
        return f(genomes, fidelity)

    with pytest.raises(Crash):
        evolve(space, budget, crashing, settings, Journal(path, header(space, budget, settings, {})))
    g = Linear(space, 0)
    resumed = evolve(space, budget, g, settings, Journal(path, header(space, budget, settings, {})))
    assert (resumed.best, resumed.fitness) == (whole.best, whole.fitness)
    assert g.calls < f.calls + 30  # the first 12 evaluations came from the journal
    assert [h["parent"] for h in resumed.history] == [h["parent"] for h in whole.history]


def test_partial_last_line_is_dropped(tmp_path, space, budget):
    settings = Settings(generations=3, offspring=4)
    path = tmp_path / "j.jsonl"
    first = evolve(space, budget, Linear(space, 1), settings, Journal(path, header(space, budget, settings, {})))
    with open(path, "a") as fh:
        fh.write('{"type": "eval", "tok')
    again = evolve(space, budget, Linear(space, 1), settings, Journal(path, header(space, budget, settings, {})))
    assert again.best == first.best
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_journal_of_another_search_is_refused(tmp_path, space, budget):
    path = tmp_path / "j.jsonl"
    Journal(path, {"seed": 0})
    with pytest.raises(JournalError, match="different search"):
        Journal(path, {"seed": 1})


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.search.synthetic import Linear, binary_space
    from evopress.search import Budget, Journal, Settings, evolve
    from evopress.search.loop import header
    space, budget = binary_space(), Budget.of(attn=2, mlp=2)
    settings = Settings(generations=12, offspring=8, seed=5)
    f = Linear(space, 4)
    def slow(genomes, fidelity):
        time.sleep(float(sys.argv[2]))
        return f(genomes, fidelity)
    journal = Journal(sys.argv[1], header(space, budget, settings, {{}}))
    r = evolve(space, budget, slow, settings, journal)
    print(list(r.best), r.fitness)
""")


def test_killed_process_resumes_to_identical_result(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    whole = subprocess.run([sys.executable, script, tmp_path / "whole.jsonl", "0"],
                           capture_output=True, text=True, check=True).stdout
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, script, path, "0.05"])
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 8):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = path.read_text().count("\n")
    resumed = subprocess.run([sys.executable, script, path, "0"], capture_output=True, text=True, check=True)
    assert 8 <= done and resumed.stdout == whole
