"""evopress: non-uniform LLM compression by evolutionary search (EvoPress, arXiv 2410.14649).

Importing the package is cheap and torch-free; the heavy parts load on first use.
"""

__version__ = "0.1.0"

from evopress.errors import EvopressError  # noqa: E402,F401
