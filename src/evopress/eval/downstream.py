"""Optional zero-shot tasks through lm-evaluation-harness on the in-memory (pruned) model.

The EvoPress paper reports arc_easy, arc_challenge, winogrande, hellaswag and piqa, 0-shot.
lm-eval downloads task data from the Hugging Face hub, so this needs a network or a warm cache.
"""

from __future__ import annotations

from evopress.errors import EvopressError

ZEROSHOT5 = ("arc_easy", "arc_challenge", "winogrande", "hellaswag", "piqa")


def run_tasks(model, tokenizer, tasks: list[str], batch_size: int = 8, limit: int | None = None) -> dict:
    """Run lm-eval `tasks` (0-shot) and return {task: {metric: value}} plus the versions used."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise EvopressError("lm-eval is not installed; run `pip install evopress[eval]`") from e
    if tasks == ["zeroshot5"]:
        tasks = list(ZEROSHOT5)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=0, limit=limit)
    except Exception as e:  # task downloads fail offline; say so instead of a long traceback
        raise EvopressError(f"lm-eval could not run {tasks}: {e}. Task data comes from the HF hub; "
                            "run online once or set HF_DATASETS_OFFLINE with a warm cache") from e
    results = {t: {k: v for k, v in r.items() if isinstance(v, (int, float))} for t, r in out["results"].items()}
    return {"results": results, "versions": out.get("versions", {}), "n-shot": out.get("n-shot", {}),
            "lm_eval": getattr(lm_eval, "__version__", "unknown")}
