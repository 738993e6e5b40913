"""Training compressed models: candidates during selection, plans before evaluation, `evopress train`."""

from evopress.train.trainer import Masters, batches, kd_loss, lm_loss, loss_for, sequences, train

__all__ = ["Masters", "batches", "kd_loss", "lm_loss", "loss_for", "sequences", "train"]
