"""The Flower ServerApp. Wiring only: read the run config once, hand over to `run_federation`.

`flwr run .` uses `app` (settings from `[tool.flwr.app.config]` plus `--run-config` overrides);
`fedrec simulate` builds its own ServerApp with `make_server_app` to attach a progress display. Either way the
grid reports replies as they arrive (`server.progress_grid`) and `synthetic:users=auto` is sized to the connected
SuperNodes (`server.auto_size`) before the run starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrec.server.auto_size import size_to_nodes
from fedrec.server.federation import Event, run_federation
from fedrec.server.progress_grid import ProgressGrid
from fedrec.shared.config import RunConfig

log = logging.getLogger("fedrec.server")


def _log_event(kind: str, payload: dict) -> None:
    if kind == "clients":
        return
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
        emit = on_event or _log_event
        run_cfg = cfg or RunConfig.from_mapping(context.run_config, source="[tool.flwr.app.config]")
        if resume is None:
            run_cfg = size_to_nodes(grid, run_cfg)
        run_federation(ProgressGrid(grid, emit), run_cfg, on_event=emit, resume=resume)

    return server


app = make_server_app()
