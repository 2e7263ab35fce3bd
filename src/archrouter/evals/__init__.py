"""The evaluation room: the synthetic task suite and zoo training, the capability matrix and policy fit,
labelled-set generation, executed evaluation (over HTTP) and reports."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"  # the labelled sets (package data)
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # the shipped capability matrix and reports
