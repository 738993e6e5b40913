"""Greedy generation with vLLM (offline `LLM`), for tests/integration/test_vllm.py.

Run with the vLLM environment's python (.ci/env/vllm.sh), which has no evopress:

    python vllm_greedy.py REQUEST.json RESULT.json

REQUEST.json: {"models": {NAME: DIR, ...}, "prompts": [[token ids], ...], "max_tokens": 16,
"logprobs": K, "dtype": "bfloat16"}. Every directory runs in this one process, one engine after
another, so vLLM is imported once. Prompts go in as token ids, so both sides of a comparison see
the same tokens whatever the tokenizers do. RESULT.json: {"vllm_version", "seconds": {NAME: s},
"models": {NAME: [per prompt {"tokens": generated ids, "logprobs": per generated position the
top-K {token id: logprob}}]}}, or {NAME: {"error": traceback}} where vLLM failed on a directory
(the other directories still run).
"""

import json
import os
import sys
import time
import traceback

# The engine runs in this process: no spawned engine process that imports vLLM a second time.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def is_nemotron_nas(model_dir: str) -> bool:
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f).get("model_type") == "nemotron-nas"


def start(model_dir: str, request: dict):
    from vllm import LLM

    return LLM(model=model_dir, dtype=request["dtype"], seed=0,
               trust_remote_code=is_nemotron_nas(model_dir),  # the DeciLM config carries an auto_map
               max_model_len=max(map(len, request["prompts"])) + request["max_tokens"],
               max_num_seqs=len(request["prompts"]),
               kv_cache_memory_bytes=64 * 2**20,  # a tiny model: the default reserves 4 GiB
               enforce_eager=True)  # no torch.compile: start-up in seconds on 2 cores


def generate(llm, request: dict) -> list[dict]:
    from vllm import SamplingParams, TokensPrompt

    # Greedy, exactly max_tokens (EOS does not stop it); logprobs of the raw logits (vLLM's default).
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True,
                            logprobs=request["logprobs"])
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in request["prompts"]], params,
                           use_tqdm=False)
    return [{"tokens": list(out.outputs[0].token_ids),
             "logprobs": [{str(tok): lp.logprob for tok, lp in position.items()}
                          for position in out.outputs[0].logprobs]}
            for out in outputs]


def run_one(model_dir: str, request: dict):
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm = None
    try:
        llm = start(model_dir, request)
        return generate(llm, request)
    except Exception:  # one directory vLLM cannot load or run must not hide the others' results
        return {"error": traceback.format_exc()}
    finally:
        del llm
        # The next engine initialises its process groups afresh; without this, an engine that
        # failed mid-forward leaves them half torn down and every later start-up fails.
        cleanup_dist_env_and_memory()


def main(request_path: str, result_path: str) -> None:
    with open(request_path) as f:
        request = json.load(f)
    import vllm

    results = {"vllm_version": vllm.__version__, "seconds": {}, "models": {}}
    for name, model_dir in request["models"].items():
        begin = time.perf_counter()
        results["models"][name] = run_one(model_dir, request)
        results["seconds"][name] = round(time.perf_counter() - begin, 1)
        print(f"vllm_greedy: {name} in {results['seconds'][name]} s", flush=True)
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":  # vLLM may start worker processes by spawning, which re-imports this file
    main(*sys.argv[1:])
