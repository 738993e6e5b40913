"""The naive floor of a search generation (BENCHMARKS.md): its candidate tokens through one plain
bf16 forward pass of the dense model plus the KL to a teacher, in large batches.

    python bench/floor.py --model DIR [--workload W1|W3] [--tokens N] [--batch 32]

A generation's candidate tokens are fixed by the workload's schedule (W1: 32 offspring on 2,048
tokens, then 2 survivors and the parent on 32,768; W3: 64 on 2,048, 8 on 16,384, 2 and the
parent on 65,536; W5: 128 on 2,048, 16 on 16,384, 4 and the parent on 131,072). Nothing here is clever on purpose: it is what running every candidate
through the whole model would cost with no per-candidate overhead, so a search's seconds per
generation divided by this is how far it is from that. Self-contained (torch and transformers
only), so the same floor serves trees of any commit measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

WORKLOADS = {"W1": 32 * 2048 + 3 * 32768, "W3": 64 * 2048 + 8 * 16384 + 3 * 65536,
             "W5": 128 * 2048 + 16 * 16384 + 5 * 131072}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="W1")
    p.add_argument("--tokens", type=int, default=0, help="candidate tokens per generation (default: the workload's)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32, help="rows per forward pass")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    tokens = a.tokens or WORKLOADS[a.workload]
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq_len), device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0))
    with torch.inference_mode():
        teacher = F.log_softmax(model(ids).logits.float(), dim=-1)

        def generation() -> None:
            done = 0
            while done < tokens:
                logp = F.log_softmax(model(ids).logits.float(), dim=-1)
                (teacher.exp() * (teacher - logp)).sum().item()
                done += a.batch * a.seq_len

        generation()  # warm-up
        times = []
        for _ in range(a.repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            generation()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"figure": f"{a.workload} naive floor s/generation", "value": round(statistics.median(times), 4),
                      "tokens": tokens, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
