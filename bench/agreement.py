"""How closely the stacked evaluator's values follow the straightforward objective's, on W1's data.

    python bench/agreement.py --model DIR [--method drop] [--trials 3]

In bf16 on a GPU the two paths round differently (the stacked one runs fused, compiled steps on
stacked candidates), so their values differ by bf16 noise; this measures how much. For each trial:
a random parent and 31 offspring (1 to 3 level switches), scored by both at 2,048 and 32,768
tokens (the W1 stages); prints the largest and median relative difference, the parent's, and
whether both pick the same two best candidates. One JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--trials", type=int, default=3)
    a = p.parse_args()

    from evopress.config import BaselineConfig, DataConfig, RunConfig, SearchConfig
    from evopress.eval.stacked import StackedKL
    from evopress.methods.depth import DropConfig
    from evopress.run import Run
    from evopress.search.fidelity import Fidelity

    cfg = RunConfig(model=a.model, device="cuda", dtype="bfloat16", run_dir="/tmp/agreement", batch_size=32,
                    export_format="none", options=DropConfig(target=4), search=SearchConfig(compile=True),
                    data=DataConfig(calibration="builtin+site-packages", seq_len=1024, calibration_tokens=131_072,
                                    heldout_tokens=8192),
                    baselines=BaselineConfig(names=()))
    r = Run(cfg, log=lambda s: None).open().prepare()
    s, rng = r.session, np.random.default_rng(0)
    targets = s.targets(0)
    simple = s.objective(r.bank.apply, cfg)
    fast = StackedKL(s.adapter, r.bank, s.calibration, targets, batch_size=32, compile="inductor")
    rows = []
    for trial in range(a.trials):
        parent = r.budget.random_genome(r.space, rng)
        genomes = [parent] + [r.budget.mutate(r.space, parent, rng, int(rng.integers(1, 4))) for _ in range(31)]
        for tokens in (2048, 32768):
            fidelity = Fidelity(tokens, trial)
            want = np.array(simple(genomes, fidelity))
            fast(genomes, fidelity)  # compiles
            got = np.array(fast(genomes, fidelity))
            rel = np.abs(want - got) / want
            rows.append({"tokens": tokens, "max_rel": float(rel.max()), "median_rel": float(np.median(rel)),
                         "parent_rel": float(rel[0]),
                         "same_best_two": set(np.argsort(want)[:2]) == set(np.argsort(got)[:2])})
    print(json.dumps({"figure": "stacked vs straightforward values (bf16)", "value": rows}))


if __name__ == "__main__":
    main()
