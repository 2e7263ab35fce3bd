"""python -m archrouter.evals.labelled --out src/archrouter/evals/data --seed 0"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from archrouter.evals import DATA_DIR
from archrouter.evals.labelled import write_dataset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the labelled-prompt train/test split.")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-task", type=int, default=800)
    ap.add_argument("--handwritten", type=Path, default=DATA_DIR / "handwritten.jsonl")
    args = ap.parse_args(argv)
    m = write_dataset(args.out, args.seed, args.per_task, args.handwritten)
    print(
        json.dumps({k: m[k] for k in ("generated", "handwritten", "train", "test", "test_by_tag")}, indent=2)
    )


if __name__ == "__main__":
    main()
