#!/usr/bin/env bash
# W1 on one GPU and spread over two GPUs of one host (torchrun), same seed: speed-up and equality.
#   bash bench/w1_two_gpus.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/w1-two-gpus}
python -c "from evopress.zoo import train; train('bench', '$out/bench-model')" > /dev/null
python bench/w1_depth_search.py --model "$out/bench-model" --out "$out/one" | grep -E "s/generation|final search KL"
torchrun --nproc_per_node 2 bench/w1_depth_search.py --model "$out/bench-model" --out "$out/two" \
  | grep -E "s/generation|final search KL" | head -2
python - "$out" <<'PY'
import json, sys
one, two = (json.load(open(f"{sys.argv[1]}/{d}/search/plan.json"))["genome"] for d in ("one", "two"))
print(json.dumps({"figure": "same final configuration on one and two GPUs", "value": one == two}))
PY
