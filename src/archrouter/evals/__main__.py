"""`python -m archrouter.evals ...`: the same commands as `archrouter eval ...` (an entry point of the CLI room)."""

from archrouter.cli.evals import app

app(prog_name="python -m archrouter.evals")
