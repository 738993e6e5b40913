"""Stock transformers loads evopress's compressed-tensors exports and computes what evopress computes.

In the runtime's environment (`.ci/env/ctensors.sh`: the newest transformers and compressed-tensors,
and the oldest supported transformers kept beside them), `ct_export.py` exports zoo:tiny at mixes
of levels (one level per linear layer, cycling through the mix) and `ct_load.py` loads each
export with `AutoModelForCausalLM.from_pretrained`, runs one forward and hands back every linear
layer's weight and the logits. Each layer is checked on its own against evopress's `dequantize`
(a layer loaded at another layer's scheme fails, whatever the logits do), then the logits against
the in-memory model with those weights:

- in bfloat16 (the config's dtype, what users get), FP4 and bf16 layers are bit-equal to our
  values rounded to bf16; integer layers within 2^-6 relative: the loader rounds the fp16 scale
  to bf16 (2^-8) and rounds the product again (2^-8);
- in float32, integer layers are bit-equal to ours.

The known failures are tests too: the newest transformers rejects asymmetric zero-points on the
default path, loads every layer at the first group's scheme with `dequantize=True` (silently:
shown here to be caught by the per-layer check), and no transformers runs FP4 layers in float32.
When a release fixes one of these, its test fails and docs/export.md needs the good news.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from evopress.compress.formats import parse_format
from evopress.export.compressed import ct_layer_bytes
from evopress.models import adapter_for, load_model
from evopress.zoo import tiny_model_dir

MIXES = ("all", "symmetric", "integers", "int4-then-int8")  # ct_export.py defines them
INT_BF16_RTOL = 2.0 ** -6
# bf16: the integer layers' rounding (above) moves logits of up to 14 by at most 0.094 (mean 0.01)
# after 12 blocks; the per-layer check is the sharp one. float32: the same weights, the same sums.
LOGITS_ATOL = {torch.bfloat16: 0.25, torch.float32: 1e-5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, runtime):
    env = runtime("ctensors")
    root = tmp_path_factory.mktemp("ctensors")
    env.run("ct_export.py", root, *MIXES, timeout=600)
    ids = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(0))
    (root / "tokens.json").write_text(json.dumps(ids.tolist()))
    return env, root, ids


def load(exported, mix, *options, oldest=False):
    """What `ct_load.py` reports for `mix`: (record, tensors or None, stderr)."""
    env, root, _ = exported
    out = root / f"{mix}-{'oldest' if oldest else 'newest'}{''.join(options).replace('-', '_')}"
    extra = ["--transformers", Path(env.python).parent.parent / "transformers-oldest"] if oldest else []
    done = env.run("ct_load.py", root / mix, root / "tokens.json", out, *options, *extra)
    record = json.loads(Path(f"{out}.json").read_text())
    tensors = None if record["error"] else load_file(f"{out}.safetensors")
    return record, tensors, done.stderr


def levels_of(root, mix) -> dict[str, str]:
    return json.loads((root / mix / "evopress_plan.json").read_text())["levels"]


def wrong_layers(root, mix, tensors, dtype) -> list[str]:
    """The layers whose loaded weight is not evopress's within the rounding of `dtype`."""
    reference = load_file(str(root / f"{mix}.reference.safetensors"))
    wrong = []
    for name, level in levels_of(root, mix).items():
        ours, got = reference[name], tensors[f"{name}.weight"]
        if level.startswith("int") and dtype == torch.bfloat16:
            ok = bool(((got - ours).abs() <= INT_BF16_RTOL * ours.abs()).all())
        else:
            ok = torch.equal(got, ours.to(dtype).float())
        if not ok:
            wrong.append(name)
    return wrong


@torch.no_grad()
def reference_logits(root, mix, ids, dtype) -> torch.Tensor:
    """zoo:tiny in memory with each linear layer's weight set to our dequantized values, and the
    other tensors in bf16, as exported."""
    model, _ = load_model(tiny_model_dir(progress=False), dtype=dtype)
    adapter = adapter_for(model)
    for param in model.parameters():
        param.data = param.data.to(torch.bfloat16).to(dtype)
    reference = load_file(str(root / f"{mix}.reference.safetensors"))
    for b in range(adapter.num_blocks):
        for short, module in adapter.linears(b).items():
            module.weight.data = reference[adapter.linear_name(b, short)].to(dtype)
    return model(ids).logits.float()


def assert_loads_ours(exported, mix, *options, oldest=False, dtype=torch.bfloat16):
    record, tensors, stderr = load(exported, mix, *options, oldest=oldest)
    assert record["error"] is None, f"{record}\n{stderr[-3000:]}"
    _, root, ids = exported
    assert wrong_layers(root, mix, tensors, dtype) == []
    expected = reference_logits(root, mix, ids, dtype)
    torch.testing.assert_close(tensors["logits"], expected, rtol=0, atol=LOGITS_ATOL[dtype])
    return record


def format_of(level: str):
    """The `Format` of a level as evopress_plan.json describes it ("int4 g128 asym", "nvfp4")."""
    name, *rest = level.split()
    return parse_format(name, group=int(rest[0][1:]), symmetric=rest[1] == "sym") if rest else parse_format(name)


def test_every_layer_takes_ct_layer_bytes_on_disk(exported):
    _, root, _ = exported
    model, _ = load_model(tiny_model_dir(progress=False), dtype="float32")
    adapter = adapter_for(model)
    shapes = {adapter.linear_name(b, s): tuple(m.weight.shape) for b in range(adapter.num_blocks)
              for s, m in adapter.linears(b).items()}
    dense = sum(2 * t.numel() for k, t in model.state_dict().items() if k.rsplit(".", 1)[0] not in shapes)
    for mix in MIXES:
        layers, rest = dict.fromkeys(shapes, 0), 0
        with safe_open(str(root / mix / "model.safetensors"), "pt") as f:
            for key in f.keys():
                module, param = key.rsplit(".", 1)
                t = f.get_tensor(key)
                if module in layers and param.startswith("weight"):
                    layers[module] += t.numel() * t.element_size()
                else:
                    rest += t.numel() * t.element_size()
        for name, level in levels_of(root, mix).items():
            assert layers[name] == ct_layer_bytes(format_of(level), *shapes[name]), (mix, name, level)
        assert rest == dense  # embeddings, norms and head, in bf16


def test_newest_transformers_loads_symmetric_mixes_by_default(exported):
    record = assert_loads_ours(exported, "symmetric")
    assert not record["transformers"].startswith("5.17.")


@pytest.mark.parametrize("options", [(), ("--dequantize",)], ids=["default", "dequantize"])
def test_oldest_transformers_loads_every_mix(exported, options):
    record = assert_loads_ours(exported, "all", *options, oldest=True)
    assert record["transformers"].startswith("5.17")


def test_integer_layers_load_bit_exact_in_float32(exported):
    assert_loads_ours(exported, "integers", "--dtype", "float32", oldest=True, dtype=torch.float32)


def test_newest_default_path_rejects_asymmetric_zero_points(exported):
    # compressed-tensors sizes the zero-point unpacked ([rows, groups]) before loading, but its
    # own compressor packs it along the rows (weight_zero_point [ceil(rows*bits/32), groups])
    record, _, stderr = load(exported, "all")
    assert "ignore_mismatched_sizes" in record["error"]
    assert "weight_zero_point" in stderr and "MISMATCH" in stderr


def test_newest_dequantize_true_loads_every_layer_at_the_first_scheme_and_is_caught(exported):
    # int4 (group_0) then int8 (group_1), both symmetric with groups of 128: an int8 layer's packed
    # words unpack as int4 into a weight of the right shape, so it loads without an error, wrong.
    # (Most other mixes fail loudly there: a shape or dtype the first scheme does not expect.)
    record, tensors, _ = load(exported, "int4-then-int8", "--dequantize")
    assert record["error"] is None
    _, root, ids = exported
    int8 = [name for name, level in levels_of(root, "int4-then-int8").items() if level.startswith("int8")]
    assert wrong_layers(root, "int4-then-int8", tensors, torch.bfloat16) == int8
    expected = reference_logits(root, "int4-then-int8", ids, torch.bfloat16)
    assert (tensors["logits"] - expected).abs().max() > 10 * LOGITS_ATOL[torch.bfloat16]


def test_fp4_layers_do_not_run_in_float32(exported):
    record, _, _ = load(exported, "symmetric", "--dtype", "float32")
    assert "same dtype" in record["error"] and "BFloat16" in record["error"]
