"""Labelled-prompt records for the evaluator and the generator (defined in policies.labelled, which the
classifier also reads; policies imports nothing of ours, so the model lives there)."""

from archrouter.policies.labelled import (
    LabelledDataError,
    LabelledPrompt,
    Message,
    parse_lines,
    read_labelled,
    render_messages,
    write_labelled,
)

__all__ = [
    "LabelledDataError",
    "LabelledPrompt",
    "Message",
    "parse_lines",
    "read_labelled",
    "render_messages",
    "write_labelled",
]
