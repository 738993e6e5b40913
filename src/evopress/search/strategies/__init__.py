"""Search strategies behind one ask/carry/tell interface."""

from evopress.search.strategies.base import State, Strategy
from evopress.search.strategies.evopress import EvoPress
from evopress.search.strategies.random import RandomSearch

__all__ = ["EvoPress", "RandomSearch", "State", "Strategy"]
