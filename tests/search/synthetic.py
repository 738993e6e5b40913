"""Synthetic spaces and objectives with known optima."""

import numpy as np

from evopress.search import Space, Unit


def binary_space(n_attn=8, n_mlp=8):
    units = [Unit(f"attn.{i}", "attn", ("keep", "drop"), (10.0, 0.0)) for i in range(n_attn)]
    units += [Unit(f"mlp.{i}", "mlp", ("keep", "drop"), (20.0, 0.0)) for i in range(n_mlp)]
    return Space(tuple(units))


class Linear:
    """A separable objective sum_i w_i[level_i]: its optimum is known in closed form per group."""

    def __init__(self, space, seed):
        rng = np.random.default_rng(seed)
        self.tables = [rng.normal(size=u.num_levels) for u in space.units]
        self.calls = 0

    def __call__(self, genomes, fidelity):
        self.calls += 1
        return [float(sum(t[level] for t, level in zip(self.tables, g))) for g in genomes]
