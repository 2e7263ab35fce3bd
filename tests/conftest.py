import os
from pathlib import Path

import pytest
import torch

# Without a GPU every Triton kernel runs in the interpreter. This must be set before anything imports
# triton (transformers does): triton.jit and triton.language's own helpers decide at import time.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CLASSIFIER = ROOT / "models/classifier/task-classifier.json.gz"  # the shipped classifier


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; its benchmark runs on the lent GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
