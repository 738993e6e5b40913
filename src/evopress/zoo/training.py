"""Train a zoo preset from scratch on the built-in corpus and write a Hugging Face model folder.

Recipe: byte-level BPE on the train files, then a Llama trained with AdamW, linear warm-up and
cosine decay, on distinct windows of the train split. The held-out files give the final
perplexity. On CPU the thread count and kernels are fixed so that the same preset, seed and torch
version give the same weights bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from evopress.data import corpus_texts, describe_source, load_tokens
from evopress.eval.metrics import perplexity
from evopress.zoo.checkpoint import build_record, save_model, write_record
from evopress.zoo.evaluate import unigram_perplexity
from evopress.zoo.model import build_model
from evopress.zoo.presets import Preset, get_preset
from evopress.zoo.tokenizer import take_chars, train_tokenizer

log = logging.getLogger(__name__)


def lr_at(step: int, preset: Preset) -> float:
    """Linear warm-up to preset.lr, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < preset.warmup_steps:
        return preset.lr * (step + 1) / preset.warmup_steps
    progress = (step - preset.warmup_steps) / max(1, preset.steps - preset.warmup_steps)
    floor = preset.lr * preset.min_lr_ratio
    return floor + (preset.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextmanager
def _reproducible(preset: Preset, device: torch.device, seed: int):
    """Seed everything inside a forked RNG, fix CPU threads and kernels; restore all afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if device.type == "cpu":
            # matmul reductions split work by thread, so the thread count is part of the result
            torch.set_num_threads(preset.cpu_threads)
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)


def _batches(windows: torch.Tensor, batch_size: int, steps: int, seed: int):
    """`steps` batches of distinct windows; a fresh seeded permutation each pass over the data."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(windows), generator=gen)])
        yield windows[order[:batch_size]]
        order = order[batch_size:]


def _optimizer(model, preset: Preset, device: torch.device):
    """AdamW; matrices decay, norms do not (their scale is meaningful)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": preset.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=preset.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")


def _fit(model, windows, preset: Preset, device, seed: int, progress: bool) -> float:
    """Run the optimiser for preset.steps; return the mean loss of the last tenth of the steps."""
    opt = _optimizer(model, preset, device)
    bf16 = preset.bf16_autocast and device.type == "cuda"
    tail, losses = max(1, preset.steps // 10), []
    model.train()
    bar = tqdm(_batches(windows, preset.batch_size, preset.steps, seed), total=preset.steps, disable=not progress,
               desc=f"zoo {preset.name}", unit="step")
    for step, batch in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, preset)
        batch = batch.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step >= preset.steps - tail:
            losses.append((step, loss.item()))  # .item() syncs, so only every tenth step
            bar.set_postfix(loss=f"{losses[-1][1]:.3f}", lr=f"{lr_at(step, preset):.2e}")
    final = [value for step, value in losses if step >= preset.steps - tail]
    return sum(final) / len(final)


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _data(preset: Preset, seed: int):
    """The BPE learned on the train files, then train windows and held-out windows."""
    texts = take_chars(corpus_texts("train", preset.site_packages, seed), preset.tokenizer_chars)
    tokenizer = train_tokenizer(texts, preset.vocab_size)
    windows = load_tokens(preset.data_source, tokenizer, "train", preset.seq_len, preset.train_tokens, seed)
    heldout = load_tokens(preset.data_source, tokenizer, "heldout", preset.seq_len, preset.eval_tokens, seed)
    return tokenizer, windows, heldout


def train(preset, out_dir=None, device=None, seed: int = 0, progress: bool = True) -> Path:
    """Train preset (a name in PRESETS or a Preset) and write an HF model folder to `out_dir`.

    `out_dir` defaults to zoo/<preset name>; `device` to CUDA when there is one.
    The folder holds config.json, model.safetensors, the tokenizer files and zoo.json (preset,
    seed, tokens seen, held-out perplexity, versions). Returns the folder's path.
    """
    preset, device = get_preset(preset), _resolve_device(device)
    out_dir = Path(out_dir) if out_dir else Path("zoo") / preset.name
    started = time.perf_counter()
    with _reproducible(preset, device, seed):
        tokenizer, windows, heldout = _data(preset, seed)
        model = build_model(preset, tokenizer, seed).to(device)
        train_loss = _fit(model, windows, preset, device, seed, progress)
        # store first, then measure the stored weights: the number in zoo.json is the shipped model's
        save_model(model.to(getattr(torch, preset.save_dtype)), tokenizer, out_dir)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=preset.bf16_autocast and device.type == "cuda"):
            ppl = perplexity(model.float().eval(), heldout, batch_size=16)
    source = preset.data_source
    record = build_record(
        preset, seed, device,
        tokens_seen=preset.steps * preset.tokens_per_step,
        train_windows=len(windows),
        final_train_loss=train_loss,
        heldout_perplexity=ppl,
        heldout_unigram_perplexity=unigram_perplexity(heldout),
        data={
            "train": describe_source(source, "train", preset.seq_len, len(windows), seed),
            "heldout": describe_source(source, "heldout", preset.seq_len, len(heldout), seed),
        },
        train_seconds=time.perf_counter() - started,
    )
    write_record(out_dir, record)
    message = (
        f"zoo {preset.name}: held-out perplexity {ppl:.2f} after {record['tokens_seen']:,} tokens "
        f"in {record['train_seconds']:.0f} s"
    )
    log.info(message)
    if progress:
        tqdm.write(message)
    return out_dir
