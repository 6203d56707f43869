"""``python -m tollhouse`` runs the CLI."""

from tollhouse.cli import main

main()
