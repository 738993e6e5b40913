"""Compression methods: one file each, registered by name (`evopress.methods.base`)."""

from evopress.methods.base import METHODS, Bank, Method, get_method, register
from evopress.methods import depth, sparsity  # noqa: F401,E402  (each registers itself)

__all__ = ["METHODS", "Bank", "Method", "get_method", "register"]
