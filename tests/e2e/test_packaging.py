"""The wheel: everything lives under `fedrec.*`, and the unpacked wheel alone is importable (no bare modules)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

REQUIRED = [
    "fedrec/server/server_app.py",
    "fedrec/client/client_app.py",
    "fedrec/shared/model/recommender.py",
    "fedrec/shared/config/presets/quick.toml",
    "fedrec/shared/data/hetrec.py",
    "fedrec/simulations/simulate.py",
]
BARE = ("server", "client", "shared", "simulations", "cli")

PROBE = r"""
import importlib, json, sys
out = {"files": {}, "bare": {}}
for name in ("fedrec.shared", "fedrec.server.server_app", "fedrec.client.client_app", "fedrec.shared.config"):
    out["files"][name] = importlib.import_module(name).__file__
out["loaded"] = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.startswith("fedrec.")}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out["bare"][name] = "imported"
    except ImportError as e:
        out["bare"][name] = type(e).__name__
print(json.dumps(out))
"""


def _copy_sources(dest: Path) -> Path:
    """A snapshot of what the build reads, so building never writes build/ or egg-info into the checkout."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    top = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    dest.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", dest)
    for extra in ("README.md", "LICENSE"):
        if (ROOT / extra).is_file():
            shutil.copy2(ROOT / extra, dest)
    for d in sorted(top):
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"))
    return dest


def _build_wheel(src: Path, out: Path) -> Path:
    if importlib.util.find_spec("build") is not None:
        # --skip-dependency-check: build-system.requires lists `wheel`, which setuptools >= 70.1 no longer needs
        # and the test environment need not have.
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
               "--outdir", str(out), str(src)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(out)]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = list(out.glob("fedrec-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return _build_wheel(_copy_sources(tmp / "src"), tmp / "dist")


@pytest.mark.slow
def test_wheel_holds_fedrec_namespace_only(wheel: Path) -> None:
    """The wheel ships the apps, model and loaders under fedrec/ and no top-level server/client/shared."""
    # Execute
    names = zipfile.ZipFile(wheel).namelist()
    # Assert
    for path in REQUIRED:
        assert path in names, f"{path} missing from the wheel"
    tops = {n.split("/")[0] for n in names}
    assert "fedrec" in tops and all(t == "fedrec" or t.endswith(".dist-info") for t in tops), tops
    assert not any(n.startswith(tuple(f"{b}/" for b in BARE)) for n in names)
    assert not any("tests/" in n or "__pycache__" in n for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fedrec = fedrec.cli.main:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_unpacked_wheel_imports_without_checkout(wheel: Path, tmp_path: Path) -> None:
    """From the unpacked wheel alone the Flower apps import, from there, and bare server/shared/client do not."""
    # Prepare
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = dict(os.environ)
    # Only the unpacked wheel: an inherited PYTHONPATH (Ray adds the checkout to it once a simulation ran in this
    # process) would make the checkout's bare folders importable.
    env["PYTHONPATH"] = str(site)
    env["PYTHONNOUSERSITE"] = "1"
    # Execute
    proc = subprocess.run([sys.executable, "-c", PROBE, *BARE], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    # Assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, file in {**out["files"], **out["loaded"]}.items():
        assert file is not None and Path(file).resolve().is_relative_to(site.resolve()), (
            f"{name} was imported from {file}, not from the unpacked wheel"
        )
    assert out["bare"] == dict.fromkeys(BARE, "ModuleNotFoundError")
