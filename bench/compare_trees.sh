#!/usr/bin/env bash
# W1 and W3 of two source trees on one subject in one run: this checkout and OLD (a tree exported
# from another commit, e.g. `git archive COMMIT src bench | tar -x -C OLD`), with the naive floors
# (bench/floor.py) measured on the same machine, so each tree's seconds per generation is a ratio.
#
#     bench/compare_trees.sh OLD OUT [W3_GENERATIONS]
#
# Trains the zoo bench subject once; W3's database is built once (by this checkout) and read by
# both trees. Every figure is a JSON line in OUT/figures.jsonl, tagged with its tree.
set -uo pipefail
OLD=$1; OUT=$2; G3=${3:-16}
mkdir -p "$OUT"
log() { while read -r line; do echo "$line"; [[ $line == \{* ]] && echo "{\"tree\": \"$1\", ${line:1}" >> "$OUT/figures.jsonl"; done; }
PYTHONPATH=src python -m evopress.cli.main zoo train --preset bench --out "$OUT/model" | tail -1
for w in W1 W3; do PYTHONPATH=src python bench/floor.py --model "$OUT/model" --workload $w | log floor; done
for tree in old new; do
  src=src; bench=bench; [[ $tree == old ]] && src=$OLD/src && bench=$OLD/bench
  PYTHONPATH=$src python $bench/w1_depth_search.py --model "$OUT/model" --out "$OUT/$tree-w1" --compile --results '' | log $tree
done
PYTHONPATH=src python bench/w23_sparsity.py --model "$OUT/model" --out "$OUT/new-w3" --generations "$G3" --compile --results '' | log new
mkdir -p "$OUT/old-w3" && ln -sfn "$(realpath "$OUT/new-w3/db")" "$OUT/old-w3/db"
PYTHONPATH=$OLD/src python $OLD/bench/w23_sparsity.py --model "$OUT/model" --out "$OUT/old-w3" --skip-build \
  --generations "$G3" --compile --results '' | log old
