"""`fedrec server`: a SuperLink with TLS and SuperNode authentication, one deployed run on it, then a clean stop.

What it does, in order (everything it writes lives in the work directory, default `fedrec-server/`):

1. checks the certificates (`fedrec keys tls`) and the run's settings (a deployed run: `deployment-nodes` N > 0,
   `data` naming the public catalog; `fedrec.server.deployment`);
2. writes a minimal Flower app, `app/pyproject.toml` (the `[tool.flwr.app]` of fedrec, defaults = `RunConfig`
   defaults), and `run-config.toml` (this run's settings); why a generated app and not the source tree: see
   `fedrec.server.app_files`;
3. writes the connection `[superlink.fedrec]` into `$FLWR_HOME/config.toml`, so `flwr ... fedrec` commands reach it;
4. starts `flower-superlink --enable-supernode-auth` with the certificates, a persistent `superlink.db`
   (registered keys survive a restart) and runtime dependency installation off;
5. (before step 4) registers the given device public keys on a loopback SuperLink of the same database, so the
   real one refuses no listed device (`fedrec.server.nodes`); waits until N registered SuperNodes are
   online (`wait_timeout`), submits the run (`flwr run app fedrec --run-config run-config.toml`) and streams its
   log (`flwr log`) until the run finishes;
6. stops, by PID, everything it started (SuperLink, its SuperExec and ServerApp, the log stream), also on errors,
   Ctrl-C and SIGTERM.

The Control API (run submission, node registration) listens on the same address as the Fleet API in flwr 1.41 and,
without Flower's enterprise OIDC plugin, does not authenticate its callers: bind to a network interface only behind
a firewall that lets in the devices (see docs/deployment.md).

Each step's job is in its own module: the plan and its error in `launch_plan`, the files of step 2 in
`app_files`, the connection and the process of steps 3, 4 and 6 in `superlink`, the `flwr` calls in
`flwr_control`, the devices of step 5 in `nodes`. This module only runs them in order (`serve`) and reads the
outcome.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrec.server.app_files import run_settings, write_app, write_run_config
from fedrec.server.flwr_control import flwr_cli, run_status
from fedrec.server.launch_plan import LaunchError, Say, ServerPlan
from fedrec.server.nodes import public_keys, register_before_start, wait_for_online
from fedrec.server.superlink import CONNECTION, superlink_running
from fedrec.shared.config import ConfigError
from fedrec.shared.edge.processes import ManagedProcess, tool, tool_env


@dataclass(frozen=True)
class RunOutcome:
    """What `fedrec server` reports at the end: Flower's final status and how many of the run's rounds were ok."""

    run_id: int
    status: str  # Flower's, e.g. "finished:completed"
    run_dir: Path
    rounds_ok: int
    rounds: int



def serve(plan: ServerPlan, say: Say = print) -> RunOutcome:
    """Start the SuperLink, register keys, wait for the devices, run, stop. See the module docstring."""
    cfg = run_settings(plan.settings, plan.work_dir)
    from fedrec.server.deployment import server_population

    population = server_population(cfg)  # the catalog loads (clear error now, not inside the ServerApp)
    note = cfg.run.cohort_note(cfg.run.deployment_nodes)
    if note and any(k in plan.settings for k in ("run.clients_per_round", "run.fraction_train")):
        raise ConfigError(f"{note}; a deployed run of {cfg.run.deployment_nodes} devices (--nodes) cannot ask more "
                          "per round: lower --clients-per-round")  # asked for explicitly: an error, not a clamp
    if note:
        say(f"warning: {note} (the default; set --clients-per-round)")
    if cfg.secagg_warning:  # a deployment runs SecAgg+ unless told not to, and then says so
        say(cfg.secagg_warning)
    say(f"deployed run {cfg.run.name}: {cfg.run.deployment_nodes} devices, catalog {len(population.catalog)} items, "
        f"{cfg.run.rounds} rounds -> {Path(cfg.run.dir) / cfg.run.name}")
    app_dir = plan.work_dir / "app"
    write_app(app_dir)
    run_config = write_run_config(plan.work_dir / "run-config.toml", cfg)
    keys = public_keys(plan.register)
    if keys:  # every listed key, before the SuperLink accepts its first node
        register_before_start(plan, keys, say)
    logs: ManagedProcess | None = None
    with superlink_running(plan, say) as (link, flwr_home):
        try:
            wait_for_online(cfg.run.deployment_nodes, flwr_home=flwr_home, timeout=plan.wait_timeout, say=say,
                            alive=link.process.alive if link.process else lambda: False)
            doc = flwr_cli(["run", str(app_dir.resolve()), CONNECTION, "--run-config", str(run_config.resolve())],
                           flwr_home=flwr_home)
            run_id = int(doc["run-id"])
            say(f"run {run_id} started; streaming its log")
            logs = ManagedProcess("flwr-log", [tool("flwr"), "log", str(run_id), CONNECTION, "--stream"],
                                  env=tool_env(flwr_home), log_path=plan.work_dir / f"run-{run_id}.log", echo=True)
            status = _wait_finished(run_id, logs, flwr_home=flwr_home, alive=link.process.alive)
        finally:
            if logs is not None:
                logs.stop()
    return _outcome(run_id, status, Path(cfg.run.dir) / cfg.run.name)


def _wait_finished(run_id: int, logs: ManagedProcess, *, flwr_home: Path, alive: Callable[[], bool]) -> str:
    """Flower's final status of the run. `flwr log --stream` returns when the run finishes; the status is then
    checked (flwr exits 0 even for a failed run), and polled if the stream ended before the run did."""
    while True:
        try:
            logs.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            if not alive():
                raise LaunchError("the SuperLink exited during the run") from None
    while True:
        status = run_status(run_id, flwr_home=flwr_home)
        if status.startswith("finished"):
            return status
        if not alive():
            raise LaunchError(f"the SuperLink exited during the run (last status {status})")
        time.sleep(5)


def _outcome(run_id: int, status: str, run_dir: Path) -> RunOutcome:
    rounds: list[dict[str, Any]] = []
    if (run_dir / "rounds.json").is_file():
        rounds = json.loads((run_dir / "rounds.json").read_text(encoding="utf-8"))
    return RunOutcome(run_id, status, run_dir, sum(r.get("status") == "ok" for r in rounds), len(rounds))

