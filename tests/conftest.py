import os
from pathlib import Path

import pytest
import torch

# Without a GPU every Triton kernel runs in the interpreter; this must be set before any kernel
# module is imported (triton.jit decides at decoration time).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]

# Without CUDA, Triton kernels run interpreted. TRITON_INTERPRET must be set before anything imports
# triton (transformers does, when triton is installed): triton.language's own @jit helpers (tl.zeros,
# tl.sum, ...) are built at import, and the interpreter can call them only if they were built under it.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CLASSIFIER = ROOT / "models/classifier/task-classifier.json.gz"  # the shipped classifier


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; its benchmark runs on the lent GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
