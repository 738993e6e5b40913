"""The search engine: spaces, exact budgets, strategies, multi-stage selection, journals.

Pure Python and numpy; it never imports torch. Fitness comes from any callable
`objective(genomes, fidelity) -> list[float]` (lower is better).
"""

from evopress.search.budget import Budget, CostBudget, band_below
from evopress.search.exhaustive import count_feasible, exhaustive, feasible_genomes
from evopress.search.fidelity import Fidelity
from evopress.search.journal import Journal
from evopress.search.loop import Result, Settings, evolve, random_best
from evopress.search.selection import Stage, select
from evopress.search.space import Genome, Space, Unit
from evopress.search.strategies import EvoPress, RandomSearch, State, Strategy

__all__ = ["Budget", "CostBudget", "band_below", "EvoPress", "Fidelity", "Genome", "Journal", "RandomSearch", "Result", "Settings",
           "Space", "Stage", "State", "Strategy", "Unit", "count_feasible", "evolve", "exhaustive",
           "feasible_genomes", "random_best", "select"]
