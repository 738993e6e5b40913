"""Training-aware selection: at a stage with training tokens, each candidate is trained, then scored.

DarwinLM (arXiv 2502.07780, §3.3): a candidate's fitness after a few training steps predicts the
post-trained model better than its one-shot fitness, so stages of the multi-step selection can
give every candidate `fidelity.train_tokens` of training first (the reference schedule: 16
offspring, 8@1k, 4@2k, 2@4k, 1@8k fitness tokens after 10k/50k/100k/200k training tokens).
Every candidate of a stage trains on the same pool rows in the same order (`train.sequences`,
keyed by the stage's draw) from the same starting weights, and its trained weights are dropped
after scoring (as in the reference), so its value depends on (genome, fidelity) alone and a
resumed search gets the same numbers. Stages without training use the fast objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evopress.search.fidelity import Fidelity


class TrainedObjective:
    """`fast` for plain fidelities; for training ones, per candidate: `apply`, train, `score`.

    `score(genomes, fidelity)` must score the model as it stands (its own apply does nothing):
    the trained weights are on the model, not in the bank.
    """

    def __init__(self, fast: Callable, score: Callable, apply: Callable, model, pool, cfg, seed: int = 0):
        self.fast, self.score, self.apply, self.model = fast, score, apply, model
        self.pool, self.cfg, self.seed = pool, cfg, seed

    def __call__(self, genomes: Sequence, fidelity: Fidelity) -> list[float]:
        from evopress.train import batches, loss_for, sequences, train

        if not fidelity.train_tokens:
            return self.fast(genomes, fidelity)
        rows = sequences(self.pool, fidelity.train_tokens, fidelity.draw, self.seed)
        steps = batches(self.model, rows, self.cfg, lambda: self.apply(None))  # kd: the dense model's log-probs
        plain = Fidelity(fidelity.tokens, fidelity.draw)
        values = []
        for genome in genomes:
            self.apply(genome)
            with train(self.model, steps, self.cfg, loss_for(self.cfg)):
                values += self.score([genome], plain)
        return values

    def __getattr__(self, name):  # tokens_evaluated, describe(), ... of the fast objective
        if name == "fast":
            raise AttributeError(name)
        return getattr(self.fast, name)
