"""Compression methods: one file each, registered by name (`evopress.methods.base`).

Methods of other packages register through the entry-point group `evopress.methods` (each entry
names a module that calls `register` when imported).
"""

from importlib.metadata import entry_points

from evopress.methods.base import METHODS, Bank, Method, get_method, register
from evopress.methods import depth, gguf, quant, sparsity, structured  # noqa: F401,E402  (each registers itself)

for _entry in entry_points(group="evopress.methods"):
    _entry.load()

__all__ = ["METHODS", "Bank", "Method", "get_method", "register"]
