"""Named presets: small TOML files that list only the settings they change, and why.

`fedrec simulate --preset quick` (or any path to such a file) applies one before `-s` overrides. The same files
work with Flower's own launcher, whose `--run-config` accepts a TOML file of overrides:
`flwr run . --run-config "$(fedrec config --preset-path quick)"`. A preset is a plain override file: the nested
tables of `[tool.flwr.app.config]`, nothing else, so what it does is visible at a glance.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fedrec.shared.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name_or_path: str) -> Path:
    """The file of a named preset (`quick`), or `name_or_path` itself if it is an existing .toml file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"preset {name_or_path!r}: no such preset (known: {', '.join(preset_names())}) and no "
                          "such .toml file")
    return path


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The settings of a preset as nested tables ({section: {field: value}}); `RunConfig.from_mapping` reads it."""
    path = preset_path(name_or_path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the preset: {e}") from None
