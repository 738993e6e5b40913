"""The theory suite: pseudo-Boolean benchmarks and one-parent EAs that reproduce the results the
search engine rests on (docs/theory.md has the commands and the measured figures).

- `functions`: OneMax, LeadingOnes, linear and random linear, BinVal, the dynamic BinVal family
  (DBV, ADBV, FDBV, SDBV with a movable switch), budget-constrained linear functions;
- `disom`: OneMax with frozen-noise planted optima of random height (DisOM);
- `mutation`: standard bit, heavy-tailed and EvoPress level-switch mutation, as flip lists;
- `strategies`: (1+1), (1+λ), (1,λ) and self-adjusting EAs, vectorised over runs (`evolve`);
- `markov`: the exact count-level chain of the (1+1)-EA (expected runtimes, drift);
- `stats`: censoring-aware summaries and exponent fits;
- `experiments`: (a)–(f), each `run(...) -> Report` plus a plot (`evopress theory ...`).

NumPy only: importing it never imports torch, and matplotlib only loads when a plot is drawn.
"""

from evopress.theory.disom import DisOM, Heights
from evopress.theory.functions import (ADBV, FDBV, SDBV, BinVal, BudgetLinear, DynamicBinVal, Function, LeadingOnes,
                                       Linear, OneMax, Parents, random_linear)
from evopress.theory.markov import drift, expected_runtime, hitting_times, transition_matrix
from evopress.theory.mutation import Flips, HeavyTailed, LevelSwitch, StandardBit
from evopress.theory.stats import fit_exponent, summarize
from evopress.theory.strategies import EA, Runs, comma, evolve, one_plus_one, plus, self_adjusting

__all__ = ["ADBV", "BinVal", "BudgetLinear", "DisOM", "DynamicBinVal", "EA", "FDBV", "Flips", "Function",
           "HeavyTailed", "Heights", "LeadingOnes", "LevelSwitch", "Linear", "OneMax", "Parents", "Runs", "SDBV",
           "StandardBit", "comma", "drift", "evolve", "expected_runtime", "fit_exponent", "hitting_times",
           "one_plus_one", "plus", "random_linear", "self_adjusting", "summarize", "transition_matrix"]
