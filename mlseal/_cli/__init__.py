"""Subcommand modules of the `mlseal` CLI (see `mlseal.cli.COMMANDS`)."""
