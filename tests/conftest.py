import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CLASSIFIER = ROOT / "models/classifier/task-classifier.json.gz"  # the shipped classifier


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; its benchmark runs on the lent GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
