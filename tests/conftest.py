"""Parallel workers (`pytest -n auto`, pytest-xdist) share the machine's cores instead of each taking all of them."""

import os

workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if workers > 1:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
