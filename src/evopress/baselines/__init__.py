"""Baselines that EvoPress is compared against, computed on the same model and data.

Each module implements one published method exactly as defined there; none of them searches.
"""
