"""Static layering: server and client never import each other, shared imports neither (nor the CLI/simulations)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> the fedrec packages its modules must not import
FORBIDDEN = {
    "server": ("fedrec.client", "fedrec.cli", "fedrec.simulations"),
    "client": ("fedrec.server", "fedrec.cli", "fedrec.simulations"),
    "shared": ("fedrec.server", "fedrec.client", "fedrec.cli", "fedrec.simulations"),
}
BARE = ("server", "client", "shared", "simulations", "cli")  # only ever reachable as fedrec.<name>


def module_name(path: Path) -> str:
    """shared/data/load.py -> fedrec.shared.data.load; server/__init__.py -> fedrec.server."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["fedrec", *parts])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in `path`, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, a module of `package` (any depth in the AST)."""
    tree = ast.parse(source)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from fedrec import client` imports fedrec.client: count each name as a possible submodule too.
            out.append((node.lineno, mod))
            out.extend((node.lineno, f"{mod}.{alias.name}") for alias in node.names)
    return out


def _hits(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_scanner_sees_every_import_form() -> None:
    """The scanner maps files to fedrec.* names and catches absolute, relative, aliased and nested imports."""
    # Prepare
    source = (
        "import fedrec.client.client_app as ca\n"
        "from .. import server\n"
        "from ...client import client_app\n"
        "from fedrec import client\n"
        "def f():\n    import shared.model\n"
    )
    # Execute
    names = [m for _, m in imports_in(source, "fedrec.shared.data")]
    # Assert
    assert module_name(ROOT / "shared" / "data" / "load.py") == "fedrec.shared.data.load"
    assert module_name(ROOT / "server" / "__init__.py") == "fedrec.server"
    assert "fedrec.client.client_app" in names
    assert "fedrec.shared.server" in names  # `from .. import server` inside fedrec.shared.data is not fedrec.server
    assert "fedrec.client" in names
    assert "shared.model" in names
    flagged = [m for m in names if _hits(m, FORBIDDEN["shared"]) or _hits(m, BARE)]
    assert set(flagged) == {"fedrec.client.client_app", "fedrec.client", "shared.model"}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports(folder: str) -> None:
    """No module under `folder` imports a forbidden fedrec layer, nor a bare top-level server/client/shared."""
    # Prepare
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules under {folder}/"
    # Execute
    bad = [
        f"{f.relative_to(ROOT)}:{line}: {mod}"
        for f in files
        for line, mod in imported_modules(f)
        if _hits(mod, FORBIDDEN[folder]) or _hits(mod, BARE)
    ]
    # Assert
    assert not bad, "layering violations:\n" + "\n".join(bad)
