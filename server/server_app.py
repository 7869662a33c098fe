"""The Flower ServerApp. Wiring only: read the run config once, hand over to `run_federation`.

`flwr run .` uses `app` (settings from `[tool.flwr.app.config]` plus `--run-config` overrides);
`fedrec simulate` builds its own ServerApp with `make_server_app` to attach a progress display.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrec.server.federation import Event, run_federation
from fedrec.shared.config import RunConfig

log = logging.getLogger("fedrec.server")


def _log_event(kind: str, payload: dict) -> None:
    if kind == "round":
        log.warning("fedrec round %s: %s", payload["round"],
                    {k: v for k, v in payload.items() if k.startswith(("eval_ndcg", "eval_hr", "train_loss", "wall"))})
    else:
        log.warning("fedrec %s: %s", kind, {k: v for k, v in payload.items() if k != "rounds"})


def make_server_app(cfg: RunConfig | None = None, on_event: Event | None = None,
                    resume: Path | None = None) -> ServerApp:
    """A ServerApp running `cfg` (or, if None, the run config Flower passes in the Context); `resume`: continue
    that run directory from its checkpoint (`fedrec.server.checkpoint`) instead of starting a new run."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = cfg or RunConfig.from_mapping(context.run_config, source="[tool.flwr.app.config]")
        run_federation(grid, run_cfg, on_event=on_event or _log_event, resume=resume)

    return server


app = make_server_app()
