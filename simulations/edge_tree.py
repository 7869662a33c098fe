"""The edge benchmark's deployed measurement: a device's whole process tree in a real loopback federation.

A deployed device is not one process: `fedrec client` starts `flower-supernode`, which starts `flower-superexec`,
which starts a `flwr-clientapp` for every message (train, each SecAgg+ stage, evaluate). What the device needs is
the memory of all of them at once, so `TreeSampler` samples the tree under the `fedrec client` process every
0.2 s and keeps the peak of the summed RSS and of the summed PSS (proportional set size: a page shared by several
processes, such as the Python interpreter's libraries, counted once in total; the honest "memory this device uses"),
and each kind of process's own peak RSS.

`deployed_devices` runs `fedrec server` (the Last.fm-2K catalog, record DP + user DP + SecAgg+, Poisson sampling of
both devices, 2 rounds, evaluation after the last) and two `fedrec client` devices on 127.0.0.1, each holding one
real user's history: device "cold" computes the catalog table itself (its first round on a new device), device
"warm" finds it in its cache (every later round). `recommend_peak` then runs `fedrec recommend --state-dir` on the
warm device's state directory, float32 and int8, and reads each process's exact peak RSS from the kernel
(`os.wait4`). Every process is stopped by PID; the users' history files are deleted afterwards.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

KINDS = ("flwr-clientapp", "flower-superexec", "flower-supernode", "fedrec")  # cmdline markers, first match wins
FEDREC = Path(sys.executable).parent / "fedrec"
SETTINGS = ("record_dp.enabled=true", "user_dp.enabled=true", "secagg.enabled=true", "run.client_sampling=poisson",
            "eval.every=2")


def _kind(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    return next((k for k in KINDS if k in cmd), proc.name())


class TreeSampler(threading.Thread):
    """Peak memory of the process tree under `pid`, sampled every `every` s until `stop()`."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss = self.peak_pss = 0.0  # MB, summed over the tree
        self.kind_rss: dict[str, float] = {}  # MB, each kind's largest single process
        self.clientapps: set[int] = set()
        self._halt = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0.0
            for p in procs:
                try:
                    info = p.memory_full_info()
                    kind = _kind(p)
                except psutil.Error:  # exited meanwhile
                    continue
                rss += info.rss / 2**20
                pss += info.pss / 2**20
                self.kind_rss[kind] = max(self.kind_rss.get(kind, 0.0), info.rss / 2**20)
                if kind == "flwr-clientapp":
                    self.clientapps.add(p.pid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            time.sleep(self.every)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(timeout=10)
        return {"peak_tree_rss_mb": self.peak_rss, "peak_tree_pss_mb": self.peak_pss,
                "peak_rss_by_kind_mb": dict(self.kind_rss), "clientapp_processes": len(self.clientapps)}


def _start(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([str(FEDREC), *argv], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _write_history(path: Path, user: str, items: list[str], weights: list[float]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "weight"])
        w.writerows([user, i, x] for i, x in zip(items, weights, strict=True))
    return path


def deployed_devices(run: Path, users: list[dict[str, Any]], work: Path, *, rounds: int = 2) -> dict[str, Any]:
    """Two devices ("cold", "warm") in a loopback federation on `run`'s catalog; their trees' peak memory.

    `users`: two {"user", "items" (catalog item ids), "weights"}; their histories are written into `work` and
    deleted at the end. Returns {"cold": {...}, "warm": {...}, "seconds", "server_code", "state_dirs"}.
    """
    from fedrec.shared.config import RunConfig
    from fedrec.shared.edge.node_keys import make_node_key
    from fedrec.shared.edge.processes import free_port, stop_tree, tool_env
    from fedrec.shared.edge.tls import make_certificates
    from fedrec.shared.model.backbone import load_backbone
    from fedrec.shared.model.catalog_table import catalog_embeddings, default_cache_dir
    from fedrec.shared.run_dir import read_catalog

    work.mkdir(parents=True, exist_ok=True)
    catalog = read_catalog(run)
    warm_cache, cold_cache = work / "cache-warm", work / "cache-cold"
    cfg = RunConfig.from_mapping({})
    warm_cache.mkdir(parents=True, exist_ok=True)
    for table in default_cache_dir().glob("catalog-*.npy"):  # a table computed before (by a simulation) is reused
        shutil.copy2(table, warm_cache / table.name)
    catalog_embeddings(load_backbone(cfg.model.name), catalog, cfg.model.item_tokens, cache_dir=warm_cache)
    make_certificates(work / "certs")
    names = ("cold", "warm")
    for name in names:
        make_node_key(work / "keys", name)
    histories = [_write_history(work / f"history-{n}.csv", u["user"], u["items"], u["weights"])
                 for n, u in zip(names, users, strict=True)]
    port, procs, samplers, out = free_port(), {}, {}, {}
    base = tool_env(extra={"OMP_NUM_THREADS": "2"})
    base.pop("FLWR_HOME", None)
    t0 = time.perf_counter()
    try:
        procs["server"] = _start(["server", "--data", str(run / "catalog.json"), "--nodes", "2", "--rounds",
                                  str(rounds), "--clients-per-round", "2", "--port", str(port), "--run-name", "edge",
                                  "--wait-timeout", "600", "--register", "keys",
                                  *(a for s in SETTINGS for a in ("-s", s))],
                                 work / "server.log", {**base, "FEDREC_CACHE": str(warm_cache)}, work)
        for name, history, cache in zip(names, histories, (cold_cache, warm_cache), strict=True):
            procs[name] = _start(["client", "--superlink", f"127.0.0.1:{port}", "--data", str(history),
                                  "--state-dir", f"device-{name}", "--root-cert", "certs/ca.crt", "--key",
                                  f"keys/{name}", "--connect-timeout", "600"],
                                 work / f"device-{name}.log", {**base, "FEDREC_CACHE": str(cache)}, work)
            samplers[name] = TreeSampler(procs[name].pid)
            samplers[name].start()
        out["server_code"] = procs["server"].wait(timeout=3600)
        out["seconds"] = time.perf_counter() - t0
        time.sleep(3)  # the last ClientApp processes exit
        for name in names:
            out[name] = samplers[name].stop()
    finally:
        for sampler in samplers.values():
            sampler.stop()
        stop_tree([p.pid for p in procs.values()], grace=20)
        for p in procs.values():
            p.wait(timeout=30)
        for h in histories:
            h.unlink(missing_ok=True)
    out["state_dirs"] = {name: str(work / f"device-{name}") for name in names}
    out["histories"] = users
    return out


def recommend_peak(state_dir: Path, user: dict[str, Any], work: Path, *, cache: Path, int8: bool) -> dict[str, Any]:
    """`fedrec recommend --state-dir` for one history, in a fresh process: its exact peak RSS (kernel) and time."""
    history = _write_history(work / "recommend-history.csv", user["user"], user["items"], user["weights"])
    argv = [str(FEDREC), "recommend", "--state-dir", str(state_dir), "--history", str(history), "--top-k", "10",
            *(["--int8"] if int8 else [])]
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "2", "FEDREC_CACHE": str(cache)})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    finally:
        history.unlink(missing_ok=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err[-2000:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - t0}
