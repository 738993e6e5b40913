"""Load an export with stock transformers, as a user does, and write what it computes.

    python ct_load.py MODEL TOKENS OUT [--dequantize] [--dtype DTYPE] [--transformers DIR]

`AutoModelForCausalLM.from_pretrained(MODEL)`, with `CompressedTensorsConfig(dequantize=True)`
under --dequantize and `dtype=DTYPE` when given (the config's bfloat16 otherwise), runs the token
ids of TOKENS (JSON) once, then writes OUT.safetensors (the logits and every linear layer's weight
as the model holds it after that forward, float32) and OUT.json (the versions; the error, if the
load or the forward raised one). --transformers DIR puts another transformers release first on
the path (the oldest supported one, which the environment keeps beside its own).
"""

import argparse
import json
import sys
import traceback

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("tokens")
parser.add_argument("out")
parser.add_argument("--dequantize", action="store_true")
parser.add_argument("--dtype")
parser.add_argument("--transformers")
args = parser.parse_args()
if args.transformers:
    sys.path.insert(0, args.transformers)

import compressed_tensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, CompressedTensorsConfig  # noqa: E402

torch.set_num_threads(1)
record = {"transformers": transformers.__version__, "compressed_tensors": compressed_tensors.__version__,
          "dequantize": args.dequantize, "dtype": args.dtype, "error": None}
options = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if args.dequantize else {}
if args.dtype:
    options["dtype"] = getattr(torch, args.dtype)
try:
    model = AutoModelForCausalLM.from_pretrained(args.model, **options).eval()
    ids = torch.tensor(json.loads(open(args.tokens).read()))
    with torch.no_grad():
        logits = model(ids).logits  # the default path decompresses the weights on this first forward
    out = {"logits": logits.float()}
    out.update({f"{name}.weight": module.weight.detach().float().contiguous()
                for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})
    save_file(out, args.out + ".safetensors")
except Exception as e:  # the test decides whether this failure is the known one
    record["error"] = f"{type(e).__name__}: {e}"
    traceback.print_exc()
with open(args.out + ".json", "w") as f:
    json.dump(record, f)
print(json.dumps(record))
