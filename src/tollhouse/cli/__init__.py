"""``tollhouse``: one click group; each command lives in a module of this package."""

from __future__ import annotations

import click

from tollhouse.cli.credits import credits
from tollhouse.cli.db import db
from tollhouse.cli.demo import demo
from tollhouse.cli.devupstream import dev_upstream
from tollhouse.cli.governance import customers, keys, teams
from tollhouse.cli.ledger import ledger
from tollhouse.cli.policies import policies
from tollhouse.cli.sandboxes import sandboxes
from tollhouse.cli.secrets import secrets
from tollhouse.cli.serve import serve
from tollhouse.cli.smoke import smoke
from tollhouse.cli.usage import usage
from tollhouse.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tollhouse")
def main() -> None:
    """Tollhouse: an AI gateway where every unit of consumption is metered and budgeted."""


commands = (
    serve, db, usage, dev_upstream, demo, customers, teams, keys, credits, ledger, policies,
    sandboxes, secrets, worker, smoke,
)  # fmt: skip
for command in commands:
    main.add_command(command)

__all__ = ["main"]
