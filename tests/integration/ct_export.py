"""Export zoo:tiny at mixes of quantization levels, with evopress as installed in the runtime's environment.

    python ct_export.py OUT MIX [MIX ...]

For each mix, writes OUT/MIX (the compressed-tensors export) and OUT/MIX.reference.safetensors:
every linear layer's weight as evopress's `dequantize` gives it (float32), the values the loaded
model must compute with. Layer i (in the adapter's block order) gets level i mod len(mix); the
levels are round-to-nearest, each layer's computed once and shared between mixes.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from evopress.compress.formats import parse_format
from evopress.compress.gptq import dequantize, rtn_levels
from evopress.export.compressed import export_compressed
from evopress.models import adapter_for, load_model
from evopress.zoo import tiny_model_dir

WIDTHS = (2, 3, 4, 5, 6, 8)
ASYM = [parse_format(f"int{b}") for b in WIDTHS]
SYM = [parse_format(f"int{b}", symmetric=True) for b in WIDTHS]
FP4_BF16 = [parse_format("nvfp4"), parse_format("mxfp4"), parse_format("bf16")]
MIXES = {
    "all": ASYM + SYM + FP4_BF16,  # every integer width, both zero-point kinds, FP4 and bf16
    "symmetric": SYM + FP4_BF16,  # what the newest transformers loads by default
    "integers": ASYM + SYM,  # loads exactly in float32 (FP4 decodes to bf16)
    "int4-then-int8": [SYM[2], SYM[5]],  # int8's packed words unpack as int4 into a weight of the right shape
}


def main(out: Path, names: list[str]) -> None:
    torch.set_num_threads(1)
    model, tokenizer = load_model(tiny_model_dir(progress=False), dtype="float32")
    adapter = adapter_for(model)
    linears = {adapter.linear_name(b, short): m for b in range(adapter.num_blocks)
               for short, m in adapter.linears(b).items()}
    cache = {}
    for mix in names:
        levels, reference = {}, {}
        for i, (name, module) in enumerate(linears.items()):
            fmt = MIXES[mix][i % len(MIXES[mix])]
            if (name, fmt) not in cache:
                cache[name, fmt] = rtn_levels(module.weight.data, [fmt])[0]
            levels[name] = cache[name, fmt]
            reference[name] = dequantize(levels[name], module.weight.data).contiguous()
        export_compressed(adapter, levels, tokenizer, out / mix)
        save_file(reference, str(out / f"{mix}.reference.safetensors"))
        print(mix, "exported")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
