"""`python -m archrouter ...`: the same as the `archrouter` console script."""

from archrouter.cli import main

main()
