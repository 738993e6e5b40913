"""Apply a sparsity recipe with llm-compressor's own `oneshot` and measure what it pruned.

Run with the llm-compressor environment's python (`.ci/env/llmcompressor.sh`), not evopress's:

    python llmc_oneshot.py MODEL_DIR RECIPE_YAML TOKENS_JSON OUT_JSON

TOKENS_JSON is {"input_ids": [[int, ...], ...]}: calibration sequences already tokenized, so the
run is offline (no dataset or hub download). OUT_JSON gets, for every linear layer whose weight
oneshot changed, the fraction of exact zeros in it and its shape, plus the versions and the time
taken. Only
files cross between the two environments; evopress is not imported here.
"""

from __future__ import annotations

import json
import sys
import time

import llmcompressor
import torch
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, AutoTokenizer


def calibration_set(tokens_file: str) -> Dataset:
    """The calibration sequences as an in-memory dataset, which oneshot takes as pre-tokenized."""
    with open(tokens_file) as f:
        ids = json.load(f)["input_ids"]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]})


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def changed_layers(before: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The linear layers whose weight oneshot changed. Comparing with the dense weights, rather
    than reading the recipe's targets back, also catches a layer pruned that was not asked for."""
    return {name: w for name, w in linear_weights(model).items() if not torch.equal(w, before[name])}


def main(model_dir: str, recipe: str, tokens_file: str, out_file: str) -> None:
    # One thread: the tiny model's matrices gain nothing from two, and on a shared 2-core machine
    # a second thread spinning against other work made oneshot 7-17x slower (6.7 s against 113 s).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = calibration_set(tokens_file)
    before = linear_weights(model)
    start = time.perf_counter()
    # Every sequence, in order, at its own length: oneshot's defaults would sample 512 and shuffle.
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=recipe,
            num_calibration_samples=len(data), shuffle_calibration_samples=False,
            max_seq_length=len(data[0]["input_ids"]))
    seconds = time.perf_counter() - start
    changed = changed_layers(before, model)
    result = {"llmcompressor": llmcompressor.__version__, "torch": torch.__version__, "oneshot_seconds": seconds,
              "layers": {name: float((w == 0).sum()) / w.numel() for name, w in changed.items()},
              "shapes": {name: list(w.shape) for name, w in changed.items()}}
    with open(out_file, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
