"""Logits of a GPTQ export under GPTQModel (CPU), for tests/integration/test_gptqmodel.py.

Run with the GPTQModel environment's python (.ci/env/gptqmodel.sh), which has no evopress:

    python gptqmodel_logits.py REQUEST.json OUT_DIR

REQUEST.json: {"model": DIR, "sequences": [[token ids], ...], "dtype": "bfloat16"}. OUT_DIR gets
result.json: {"versions", "load_seconds", "layers": {name: {"kernel", "bits", "group_size", "sym"}}
for every quantized layer, "dense": {name: dtype} for every plain nn.Linear, "transformers": what
stock `AutoModelForCausalLM.from_pretrained` did with the same directory ({"error": last line} or
{"loaded": true})}; and tensors.safetensors: "logits.i" (float32 [len, vocab]) per sequence and
"weight.NAME" (each quantized layer's weight as GPTQModel dequantizes it, [out, in]).
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))  # its default assumes more cores


def gptqmodel_run(request: dict, out_dir: str) -> dict:
    import torch
    from gptqmodel import GPTQModel
    from safetensors.torch import save_file

    begin = time.perf_counter()
    dtype = getattr(torch, request["dtype"])
    model = GPTQModel.load(request["model"], device="cpu", dtype=dtype).model.eval()
    load_seconds = round(time.perf_counter() - begin, 1)
    layers, dense, tensors = {}, {}, {}
    for name, module in model.named_modules():
        if hasattr(module, "qweight"):
            layers[name] = {"kernel": type(module).__name__, "bits": module.bits,
                            "group_size": module.group_size, "sym": module.sym}
            tensors[f"weight.{name}"] = module.dequantize_weight().T.contiguous()
        elif isinstance(module, torch.nn.Linear):
            dense[name] = str(module.weight.dtype).removeprefix("torch.")
    with torch.no_grad():
        for i, ids in enumerate(request["sequences"]):  # one at a time: no padding in the way
            tensors[f"logits.{i}"] = model(torch.tensor([ids])).logits[0].float()
    save_file(tensors, os.path.join(out_dir, "tensors.safetensors"))
    return {"load_seconds": load_seconds, "layers": layers, "dense": dense}


def transformers_run(request: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        AutoModelForCausalLM.from_pretrained(request["model"], dtype=getattr(torch, request["dtype"]))
    except Exception:
        return {"error": traceback.format_exc().strip().splitlines()[-1]}
    return {"loaded": True}


def main(request_path: str, out_dir: str) -> None:
    with open(request_path) as f:
        request = json.load(f)
    import gptqmodel
    import torch
    import transformers

    result = {"versions": {"gptqmodel": gptqmodel.__version__, "transformers": transformers.__version__,
                           "torch": torch.__version__}}
    result.update(gptqmodel_run(request, out_dir))
    result["transformers"] = transformers_run(request)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
