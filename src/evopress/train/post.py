"""`evopress train`: heal a compressed model by training it, without undoing its compression.

DarwinLM (arXiv 2502.07780, §3.3) post-trains its pruned models by knowledge distillation from the
dense model; here any compressed model (this package's exports of every method, or another tool's
dense-shaped checkpoint) trains either way:

- `loss kd`: KL(teacher || student) on full next-token logits, the teacher run on the same batch;
- `loss lm`: next-token cross-entropy.

The trainer is `Masters` (fp32 masters, AdamW, exact zeros of weight matrices kept), on the train
split of the data (held-out text stays unseen), one batch of `train_batch` rows per step, the rows
in a seeded order. Defaults: TrainConfig's, which follow DarwinLM's recipe (lr 1e-4, betas
(0.9, 0.95), no weight decay), with a cosine schedule to lr/10 after a short warm-up.

OUT holds the trained model in the input's layout, `train_report.{md,json}`, `loss.png` and
`train-state/`, where a checkpoint is written every `checkpoint_every` steps: rerunning the same
command resumes from it and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Annotated, Callable, Literal

import torch
from pydantic import Field

from evopress.config import Positive, TrainConfig, doc, plain, replace, section
from evopress.errors import DataError, RecipeError
from evopress.progress import bar
from evopress.train import checkpoint, model_dir
from evopress.train.trainer import Masters, kd_loss, lm_loss, logprobs

WORK = "train-state"
POST_TRAIN = TrainConfig(schedule="cosine", warmup_steps=50, loss="lm")  # kd needs --teacher
# Settings that do not change the trained weights, so a resume may change them.
FREE = ("out", "device", "checkpoint_every", "restart")


@section
class PostConfig:
    """`evopress train MODEL --out OUT`: one post-training of one model."""

    model: str = doc("zoo:tiny", "the model to train: an HF directory (any evopress export) or hub name")
    out: str = doc("", "output directory: the trained model, its report and loss curve, checkpoints")
    teacher: str = doc("", "the dense model, for --loss kd (and the held-out KL before and after)")
    tokens: Positive = doc(4_194_304, "training tokens (whole batches of train_batch x seq_len)")
    data: str = doc("builtin", "builtin | a local text file or directory | wikitext2 | c4 | fineweb-edu "
                               "(its train split; the held-out split scores before and after)")
    seq_len: Positive = doc(256, "tokens per training sequence (at most the model's max_position_embeddings)")
    seed: int = doc(0, "seed of the data draw and order")
    heldout_tokens: Annotated[int, Field(ge=0)] = doc(65_536, "held-out tokens scored before and after (0: none)")
    checkpoint_every: Positive = doc(200, "steps between checkpoints")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = doc(
        "auto", "auto: float32 on a CPU, the stored dtype on a GPU (with fp32 masters either way)")
    restart: bool = doc(False, "discard an earlier training in --out (its checkpoint, made with other settings "
                               "or finished) and train afresh")
    train: TrainConfig = dataclasses.field(default_factory=lambda: POST_TRAIN)


def settings(cfg: PostConfig) -> dict:
    """What a checkpoint must have been made with to be resumed: every setting that changes the weights."""
    values = plain(dataclasses.asdict(cfg))
    values["train"].pop("post_train_tokens")  # a run's setting, not this command's
    return {k: v for k, v in values.items() if k not in FREE}


def post_train(cfg: PostConfig, log: Callable[[str], None] = print,
               on_step: Callable[[int], None] | None = None) -> dict:
    """Train `cfg.model` into `cfg.out`; returns the report. `on_step(step)` runs after every step
    (a test's kill switch)."""
    from evopress.models.loading import resolve_device
    from evopress.rundir import RunDir

    device = resolve_device(cfg.device)
    inputs = _check(cfg)
    # the directories themselves, so a resume by another spelling of the same path is the same training
    cfg = replace(cfg, model=str(inputs["student"]), teacher=str(inputs["teacher"] or ""))
    out = Path(cfg.out).expanduser().resolve()
    with RunDir(out).lock():
        (out / WORK).mkdir(exist_ok=True)  # marks OUT as this command's, from the start
        state = _prior_state(cfg, out / WORK)
        if state is not None and state.get("done"):
            log(f"{out} already holds this training (step {state['step']}); pass --restart to train again")
            return state["report"]
        return _run(cfg, inputs, device, out, state, log, on_step)


def _check(cfg: PostConfig) -> dict:
    """Everything that needs no weights: flags, the data source, the output directory, both configs."""
    from evopress.data import resolve_source

    if not cfg.out:
        raise RecipeError("pass --out DIR: the directory the trained model, its report and checkpoints go to")
    if cfg.train.loss == "kd" and not cfg.teacher:
        raise RecipeError("--loss kd distils from a teacher: pass --teacher DENSE_DIR (the uncompressed model), "
                          "or train with --loss lm")
    if cfg.train.lora_rank:
        raise RecipeError("evopress train trains every weight (fp32 masters, resumable); adapters (--lora-rank) "
                          "are for a search's training stages and a run's --post-train-tokens: leave it at 0")
    resolve_source(cfg.data)  # a missing file or an unknown name, before any model is read
    student = model_dir.local_dir(cfg.model)
    out = Path(cfg.out).expanduser().resolve()
    if out == student or out in student.parents:
        raise RecipeError(f"--out {out} holds the input model; choose a new directory")
    ours = out.is_dir() and ((out / WORK).is_dir() or all(f.name == ".lock" for f in out.iterdir()))
    if out.exists() and not ours:
        raise RecipeError(f"{out} exists and is not an earlier `evopress train` output; choose a new directory")
    config = model_dir.check_student(student, cfg.seq_len)
    teacher = model_dir.local_dir(cfg.teacher) if cfg.teacher else None
    if teacher is not None:
        model_dir.check_teacher(teacher, config)
        model_dir.check_same_tokenizer(student, teacher)
    steps = cfg.tokens // (cfg.train.train_batch * cfg.seq_len)
    if steps < 1:
        raise RecipeError(f"--tokens {cfg.tokens} is less than one batch of train_batch x seq_len = "
                          f"{cfg.train.train_batch} x {cfg.seq_len} tokens")
    return {"student": student, "teacher": teacher, "steps": steps, "fingerprint": model_dir.fingerprint(student)}


def _prior_state(cfg: PostConfig, work: Path) -> dict | None:
    """The checkpoint to resume from (None: train afresh); one made with other settings is an error."""
    state = checkpoint.read_state(work)
    if state is None or cfg.restart:
        checkpoint.clear(work)
        (work / checkpoint.STATE).unlink(missing_ok=True)
        return None
    changed = _changes(state["settings"], settings(cfg))
    if changed:
        raise RecipeError(f"{work} holds a training made with other settings ({'; '.join(changed)}); rerun with "
                          "the same settings to resume it, or pass --restart to train afresh")
    return state


def _changes(old: dict, new: dict, where: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{where}{key}.")
        elif a != b:
            out.append(f"{where}{key}: {a!r} then, {b!r} now")
    return out


def _run(cfg, inputs, device, out, state, log, on_step) -> dict:
    from evopress.eval.metrics import perplexity_protocol
    from evopress.train.summary import write_report

    dtype = torch.float32 if device == "cpu" and cfg.dtype == "auto" else cfg.dtype
    model, tokenizer = model_dir.load(inputs["student"], dtype, device)
    rows, data = _training_rows(cfg, tokenizer, inputs["steps"])
    identity = {"model": str(inputs["student"]), "fingerprint": inputs["fingerprint"], "data": data}
    if state is not None and state["inputs"] != identity:
        raise RecipeError(f"{out / WORK} was made from other weights or data than these; rerun with the "
                          "inputs it was made from, or pass --restart to train afresh")
    heldout = _heldout(cfg, tokenizer)
    teacher = _teacher(inputs["teacher"], dtype, device)
    masters, work = Masters(model, cfg.train, inputs["steps"]), out / WORK
    names = [n for n, _ in model.named_parameters()]  # the checkpoint's keys, in Masters' order
    log(f"evopress train: {inputs['student']} -> {out}: {cfg.train.loss} loss, {inputs['steps']} steps of "
        f"{cfg.train.train_batch} x {cfg.seq_len} tokens, on {device}")
    if state is None:
        state = {"settings": settings(cfg), "inputs": identity, "history": [], "seconds": 0.0,
                 "before": score(model, teacher, heldout, "before")}
        if state["before"]:
            log("before training: " + ", ".join(f"held-out {k} {v:.4f}" for k, v in state["before"].items()))
    else:
        checkpoint.load(work, masters, names, state)
        log(f"resuming {out} at step {masters.steps} of {inputs['steps']}")
    state = _loop(cfg, model, teacher, masters, names, rows, work, state, log, on_step)
    after = score(model, teacher, heldout, "after")
    model_dir.write_model(inputs["student"], out, model, masters.masters)
    protocol = None if heldout is None else perplexity_protocol(heldout, cfg.data)
    report = write_report(cfg, out, state, after, protocol, device, log)
    checkpoint.write_state(work, {**state, "done": True, "report": report})
    checkpoint.clear(work)  # the trained model is written; its fp32 state is no longer needed
    return report


def score(model, teacher, heldout: torch.Tensor | None, when: str) -> dict:
    """Held-out perplexity (GPTQ convention) and, with a teacher, the mean per-token KL to it."""
    from evopress.eval.metrics import perplexity

    if heldout is None:
        return {}
    out = {"ppl": perplexity(model, heldout, progress=f"held-out ppl {when}")}
    if teacher is not None:
        out["kl"] = heldout_kl(model, teacher, heldout)
    return out


@torch.inference_mode()
def heldout_kl(model, teacher, tokens: torch.Tensor, batch: int = 8) -> float:
    """Mean per-token KL(teacher || model) over `tokens`, a few rows at a time (full logits)."""
    device, total = next(model.parameters()).device, 0.0
    for rows in tokens.split(batch):
        ids = rows.to(device)
        total += float(kd_loss(model, ids, teacher_logprobs(teacher, ids))) * rows.shape[0]
    return total / tokens.shape[0]


def _training_rows(cfg: PostConfig, tokenizer, steps: int) -> tuple[torch.Tensor, dict]:
    """The rows of every step, in training order, and the data protocol that fixes them."""
    from evopress.data import describe_source, load_tokens
    from evopress.eval.teacher import token_fingerprint

    wanted = steps * cfg.train.train_batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few rows is the error below, with the fix
        rows = load_tokens(cfg.data, tokenizer, "train", cfg.seq_len, wanted * cfg.seq_len, cfg.seed)
    if rows.shape[0] < wanted:
        raise DataError(f"{cfg.data!r} has {rows.shape[0] * cfg.seq_len:,} training tokens in windows of "
                        f"{cfg.seq_len}, fewer than the {wanted * cfg.seq_len:,} asked for; pass a smaller "
                        "--tokens or more text")
    # consecutive windows come from one document: shuffle them so a batch mixes documents
    order = torch.randperm(wanted, generator=torch.Generator().manual_seed(cfg.seed))
    data = {**describe_source(cfg.data, "train", cfg.seq_len, wanted, cfg.seed),
            "order": "torch.randperm(rows, Generator().manual_seed(seed)), train_batch rows per step",
            "tokens_sha256": token_fingerprint(rows)}
    return rows[order], data


def _heldout(cfg: PostConfig, tokenizer) -> torch.Tensor | None:
    from evopress.data import load_tokens

    if not cfg.heldout_tokens:
        return None
    return load_tokens(cfg.data, tokenizer, "heldout", cfg.seq_len, cfg.heldout_tokens, 0)


def _teacher(path, dtype, device):
    if path is None:
        return None
    return model_dir.load(path, dtype, device)[0].requires_grad_(False)


def teacher_logprobs(teacher, ids: torch.Tensor) -> torch.Tensor:
    """The teacher's next-token log-probabilities on `ids` (fp32, no graph)."""
    with torch.no_grad():
        return logprobs(teacher, ids)


def _loss_fn(cfg: PostConfig, model, teacher):
    if cfg.train.loss == "kd":
        return lambda ids: kd_loss(model, ids, teacher_logprobs(teacher, ids))
    return lambda ids: lm_loss(model, ids)


def _loop(cfg, model, teacher, masters, names, rows, work, state, log, on_step) -> dict:
    """Train from `masters.steps` to the last step, checkpointing; returns the final state."""
    batch, total, first = cfg.train.train_batch, masters.total_steps, masters.steps
    loss_fn, device = _loss_fn(cfg, model, teacher), next(model.parameters()).device
    history, start, seconds = list(state["history"][:first]), time.time(), state["seconds"]
    every = max(1, total // 20)  # about twenty lines per training, in logs as on a terminal
    with torch.enable_grad():
        for step in bar(range(first, total), "train", total - first, "step"):
            ids = rows[step * batch:(step + 1) * batch].to(device)
            history.append(float(masters.step(loss_fn(ids))))
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == total:
                state = {**state, "history": history, "seconds": seconds + time.time() - start}
                checkpoint.save(work, masters, names, state)
            if done % every == 0 or done == total:
                rate = (done - first) * batch * cfg.seq_len / max(time.time() - start, 1e-9)
                recent = history[-every:]
                log(f"step {done}/{total}  loss {sum(recent) / len(recent):.4f}  "
                    f"lr {masters.lr(step):.2e}  {rate:,.0f} tokens/s")
            if on_step is not None:
                on_step(done)
    return {**state, "history": history, "seconds": seconds + time.time() - start}
