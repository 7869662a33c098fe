"""`fedrec`: the command line. It parses arguments and calls into the package; no logic lives here.

Commands live by job: `simulate` (cli.simulate), `recommend`, `score`, `export` (cli.model), `schema`
(cli.schemas), `audit ...` (cli.audit), `keys/register/server/client` (cli.deploy), `settings` here.
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fedrec.cli.audit import app as audit_app
from fedrec.cli.common import console
from fedrec.cli.deploy import install as install_deploy_commands
from fedrec.cli.model import install as install_model_commands
from fedrec.cli.schemas import schema
from fedrec.cli.simulate import simulate

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated, privacy-preserving LoRA recommender over interaction histories (music by default).")
app.add_typer(audit_app, name="audit")
app.command()(simulate)
install_model_commands(app)  # recommend, score, export (fedrec.cli.model)
app.command()(schema)


@app.command()
def settings() -> None:
    """List every setting with its default (use with `fedrec simulate --set KEY=VALUE`)."""
    from fedrec.shared.config import RunConfig, help_text

    table = Table()
    table.add_column("setting", no_wrap=True)  # a key must stay copyable as one word
    table.add_column("default")
    table.add_column("meaning")
    helps = help_text()
    for k, v in RunConfig().to_flat().items():
        table.add_row(k, escape(repr(v)), escape(helps.get(k, "")))
    console.print(table)


install_deploy_commands(app)  # keys, register, server, client (fedrec.cli.deploy)

if __name__ == "__main__":
    app()
