"""Allow ``python -m trackmilter``."""

from trackmilter.cli import main

main()
