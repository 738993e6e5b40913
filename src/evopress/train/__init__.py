"""Training compressed models: candidates during selection, plans before evaluation, `evopress train`."""

from evopress.train.trainer import Masters, kd_loss, lm_loss, sequences, train

__all__ = ["Masters", "kd_loss", "lm_loss", "sequences", "train"]
