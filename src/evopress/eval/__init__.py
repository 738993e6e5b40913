"""Scoring models on tokens: perplexity, KL to the dense teacher, and the search objective.

`metrics` holds the definitions, `teacher` the stored dense targets, `objective` the bridge
from a genome to a fitness value, `minibatch` the deterministic data draws.
"""

from evopress.eval.metrics import (
    PPL_PROTOCOL,
    kl_to_teacher,
    mean_kl,
    mean_nll,
    perplexity,
    perplexity_protocol,
)
from evopress.eval.minibatch import Minibatch, sample_minibatch
from evopress.eval.objective import KLObjective, PerplexityObjective
from evopress.eval.teacher import TeacherTargets, teacher_targets

__all__ = [
    "PPL_PROTOCOL", "KLObjective", "Minibatch", "PerplexityObjective", "TeacherTargets",
    "kl_to_teacher", "mean_kl", "mean_nll", "perplexity", "perplexity_protocol",
    "sample_minibatch", "teacher_targets",
]
