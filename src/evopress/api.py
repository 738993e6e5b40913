"""The Python API the CLI wraps: a RunConfig in, a RunResult out, everything saved in a run directory.

    from evopress.api import run
    from evopress.config import RunConfig
    from evopress.methods.depth import DropConfig
    result = run(RunConfig(method="drop", options=DropConfig(target=0.25)))
    print(result.summary, result.best["ppl"])

Every method runs through the one skeleton (`evopress.run`); `evaluate_model` and `export_run`
work on any method's run directory.
"""

from evopress.evaluate import evaluate_model, export_run
from evopress.run import STEPS, RunResult, run

__all__ = ["STEPS", "RunResult", "evaluate_model", "export_run", "run"]
