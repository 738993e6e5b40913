"""A loaded model with its data: the torch side of a run, built once and shared by every method.

Everything a search or baseline needs from torch goes through here, so `api` stays a readable
list of steps and the search engine stays torch-free.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evopress.config import RunConfig
from evopress.errors import DataError


def model_name(name: str) -> str:
    """The name a config records: a local directory made absolute; `zoo:` and hub names as given."""
    local = Path(name).expanduser()
    return str(local.resolve()) if not name.startswith("zoo:") and local.exists() else name


def resolve_model(name: str) -> str:
    """What to load: `zoo:NAME` is a zoo model's directory (tiny is shipped, the others are trained
    once into the cache); anything else as `model_name`."""
    if name.startswith("zoo:"):
        from evopress.zoo.shipped import zoo_model_dir
        return str(zoo_model_dir(name[len("zoo:"):]))
    return model_name(name)


@dataclass
class Session:
    model: torch.nn.Module
    tokenizer: object
    adapter: object
    calibration: torch.Tensor
    heldout: torch.Tensor
    protocol: dict
    fingerprint: str
    log: Callable[[str], None] = print
    batch_size: int = 8
    pool: torch.Tensor | None = None  # training pool (--training-tokens): the windows after the calibration ones
    _targets: object = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def targets(self, topk: int):
        """The dense model's targets on the calibration tokens (the model must be dense on first use)."""
        from evopress.eval.metrics import teacher_targets

        if self._targets is None:
            t0 = time.perf_counter()
            self._targets = teacher_targets(self.model, self.calibration, topk=topk or None,
                                            batch_size=self.batch_size, progress="teacher targets")
            self.log(f"dense teacher targets for {self.calibration.numel():,} tokens "
                     f"({self._targets.nbytes / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s")
        return self._targets

    def objective(self, apply: Callable, cfg: RunConfig):
        from evopress.eval.objective import KLObjective, PerplexityObjective

        if cfg.search.fitness == "ppl":
            return PerplexityObjective(self.model, apply, self.calibration, seed=cfg.data.seed,
                                       batch_size=self.batch_size)
        return KLObjective(self.model, apply, self.calibration, self.targets(cfg.search.topk),
                           seed=cfg.data.seed, batch_size=self.batch_size)

    def search_objective(self, cfg: RunConfig, bank):
        """A search's objective: with KL fitness and `--evaluator batched`, the candidates stacked from
        their first changed block (`evopress.eval.stacked`, for a bank that knows its units' blocks),
        else the straightforward objective over `bank.apply`; shared out over the processes when run
        under torchrun (`evopress.distributed`)."""
        from evopress.distributed import SplitObjective, world
        from evopress.eval.stacked import StackedKL

        s = cfg.search
        if s.fitness != "kl" or s.evaluator != "batched" or getattr(bank, "blocks", None) is None:
            objective = self.objective(bank.apply, cfg)
        else:
            objective = StackedKL(self.adapter, bank, self.calibration, self.targets(s.topk), seed=cfg.data.seed,
                                  batch_size=self.batch_size, max_tokens=s.stack_tokens,
                                  compile="inductor" if s.compile else None)
        if s.training_tokens:
            from evopress.eval.trained import TrainedObjective

            # a trained candidate is scored as it stands: its weights are on the model, not in the bank
            objective = TrainedObjective(objective, self.objective(lambda genome: None, cfg), bank.apply,
                                         self.model, self.pool, cfg.train, seed=cfg.data.seed)
        return SplitObjective(objective) if world()[1] > 1 else objective


def fingerprint(model) -> str:
    """Config plus a checksum of the weights: a journal never resumes on another model."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            h.update(name.encode())
            h.update(f"{p.double().sum().item():.10e}".encode())
    return h.hexdigest()[:16]


def open_session(cfg: RunConfig, log: Callable[[str], None] = print) -> Session:
    from evopress.data import load_tokens
    from evopress.models import adapter_for, load_model
    from evopress.models.loading import check_seq_len, resolve_device

    t0 = time.perf_counter()
    path = resolve_model(cfg.model)
    model, tokenizer = load_model(path, dtype=cfg.dtype, device=resolve_device(cfg.device), require_tokenizer=True)
    adapter = adapter_for(model)
    d = cfg.data
    check_seq_len(model.config, d.seq_len)
    # The training pool continues the calibration draw, so the calibration windows stay the same.
    rows = d.calibration_tokens // d.seq_len
    calibration = load_tokens(d.calibration, tokenizer, "train", d.seq_len, rows * d.seq_len + d.training_tokens, d.seed)
    calibration, pool = calibration[:rows], calibration[rows:]
    if d.training_tokens and len(pool) < d.training_tokens // d.seq_len:
        raise DataError(f"{d.calibration!r} has {len(pool) * d.seq_len:,} tokens after the calibration windows, "
                        f"fewer than --training-tokens {d.training_tokens:,}: lower it, or give a larger source")
    heldout = load_tokens(d.heldout or d.calibration, tokenizer, "heldout", d.seq_len, d.heldout_tokens, d.seed)
    device = next(model.parameters()).device
    protocol = {"model": path, "calibration": {"source": d.calibration, "split": "train", "seq_len": d.seq_len,
                                               "sequences": int(calibration.shape[0]), "seed": d.seed},
                "heldout_ppl": {"source": d.heldout or d.calibration, "split": "heldout", "seq_len": d.seq_len,
                                "sequences": int(heldout.shape[0]), "windows": "non-overlapping",
                                "normalisation": "token-level mean NLL, exp", "seed": d.seed},
                "dtype": str(next(model.parameters()).dtype), "device": str(device)}
    if d.training_tokens:
        protocol["training_pool"] = {"source": d.calibration, "split": "train", "seq_len": d.seq_len,
                                     "sequences": int(pool.shape[0]), "after": "the calibration windows"}
    log(f"loaded {path} ({adapter.num_blocks} blocks) on {device}; calibration {tuple(calibration.shape)}, "
        f"held-out {tuple(heldout.shape)} tokens ({time.perf_counter() - t0:.1f}s)")
    return Session(model, tokenizer, adapter, calibration.to(device), heldout.to(device), protocol,
                   fingerprint(model), log, batch_size=cfg.batch_size,
                   pool=pool.to(device) if d.training_tokens else None)
