"""Static layering: server and client never import each other, shared imports neither (nor the CLI/simulations);
no import cycles between fedrec modules; no module over 400 lines; docs/architecture.md names files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

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


PACKAGES = ("server", "client", "shared", "simulations", "cli")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    return {module_name(f): f for folder in PACKAGES for f in sorted((ROOT / folder).rglob("*.py"))}


def module_level_imports(path: Path, known: set[str] | None = None) -> set[str]:
    """fedrec modules imported when `path` is imported: module-scope imports, not those inside functions or under
    `if TYPE_CHECKING:` (those cannot form an import-time cycle). `from pkg import sub` depends on `pkg.sub` when
    that is a module (`known`), on `pkg` otherwise."""
    try:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    except ValueError:  # a file outside the checkout (tests of the scanner itself)
        package = "fedrec.shared"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [m for _, m in imports_in(ast.unparse(node), package)]
                base, subs = names[0], names[1:]
                if isinstance(node, ast.Import):
                    out.update(names)
                else:
                    hit = [s for s in subs if known and s in known]
                    out.update(hit if len(hit) == len(subs) else [base, *hit])

    visit(tree.body)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    """No cycle among fedrec modules at import time (a name imported from a package counts as the package)."""
    # Prepare
    modules = _modules()
    # Execute
    graph = {name: {m for m in module_level_imports(path, set(modules)) if m in modules and m != name}
             for name, path in modules.items()}
    # Assert
    assert find_cycle(graph) is None, "import cycle: " + " -> ".join(find_cycle(graph) or [])


def test_no_module_over_the_size_limit() -> None:
    """One job per file: no module of the package over 400 lines."""
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_architecture_doc_names_files_that_exist() -> None:
    """docs/architecture.md lists the round's files; every `path.py` it names exists (the doc stays true)."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:server|client|shared|simulations|cli)/[\w/]+\.py)`", doc))
    assert len(named) >= 18
    assert not [p for p in named if not (ROOT / p).is_file()]


def test_cycle_scan_sees_a_cycle_through_from_imports(tmp_path: Path) -> None:
    """The module-level scan turns `from pkg import sub` and `from pkg.mod import name` into graph edges."""
    a = tmp_path / "a.py"
    a.write_text("from fedrec.shared import protocol\nfrom fedrec.shared.io import atomic_write_bytes\n"
                 "if TYPE_CHECKING:\n    from fedrec.server import federation\n"
                 "def f():\n    from fedrec.client import train\n")
    known = {"fedrec.shared.protocol", "fedrec.shared.io", "fedrec.server.federation", "fedrec.client.train"}
    deps = module_level_imports(a, known)
    assert {"fedrec.shared.protocol", "fedrec.shared.io"} <= deps
    assert "fedrec.server.federation" not in deps and "fedrec.client.train" not in deps
