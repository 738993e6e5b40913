"""Parallel workers (`pytest -n auto`, pytest-xdist) share the machine's cores instead of each taking
all of them, and take the longest test files first, so that the workers finish together."""

import os

workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if workers > 1:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

# The files whose module fixtures run whole searches, longest first (CI's --durations). With
# `--dist loadfile` a file is one worker's unit of work; started last, one of these would keep a
# worker busy long after the other has run out of work. Missing a file here costs time, not tests.
LONGEST = ("test_quant_e2e.py", "test_gguf_e2e.py", "test_gguf_e2e_q3.py", "test_sparsify_e2e.py", "test_e2e.py",
           "test_prune_e2e.py", "test_distributed.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would order files by their number of tests


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)
    items.sort(key=rank)  # stable: each file's tests keep their order
