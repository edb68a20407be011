"""Files shipped inside the package, found through ``importlib.resources`` so an installed wheel has them:
frozen manifests (``manifests/NAME.csv``), training configurations (``configs/NAME.json``), the papers'
recipes (``configs/papers/NAME.json``) and style banks (``configs/banks/NAME.json``).

Each resolver takes a name (``pbc-seed0``) or a path: a file that exists at the path wins, then a
shipped file of that name (with or without its suffix); anything else is refused in one sentence that
lists the known names. The bundled models live in :mod:`bloodcell.weights`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from bloodcell.errors import ConfigError, DataError

ROOT = Path(str(files(__name__)))
MANIFESTS = ROOT / "manifests"
CONFIGS = ROOT / "configs"
RECIPES = CONFIGS / "papers"
BANKS = CONFIGS / "banks"


def _shipped(folder: Path, suffix: str) -> dict[str, Path]:
    return {path.stem: path for path in sorted(folder.glob(f"*{suffix}"))}


def _resolve(spec: str | Path, shipped: dict[str, Path], kind: str, error: type[Exception]) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    by_name = {**shipped, **{file.name: file for file in shipped.values()}}
    if str(spec) in by_name:
        return by_name[str(spec)]
    raise error(f"{spec}: {kind} file not found, and no shipped {kind} has that name ({kind}s by name: "
                f"{', '.join(shipped) or 'none'})")


def manifest_names() -> list[str]:
    """Names of the frozen manifests shipped with the package."""
    return list(_shipped(MANIFESTS, ".csv"))


def manifest_path(spec: str | Path) -> Path:
    """The file of a frozen manifest's name (``pbc-seed0``) or of an existing manifest path."""
    return _resolve(spec, _shipped(MANIFESTS, ".csv"), "manifest", DataError)


def config_path(spec: str | Path) -> Path:
    """The file of a shipped training config's or paper recipe's name (``pbc8-lite0``) or of an existing path."""
    return _resolve(spec, {**_shipped(CONFIGS, ".json"), **_shipped(RECIPES, ".json")}, "config", ConfigError)


def recipe_path(name: str) -> Path:
    """The training recipe of paper model ``name`` (``configs/papers/NAME.json``)."""
    recipes = _shipped(RECIPES, ".json")
    if name not in recipes:
        raise ConfigError(f"no paper recipe named {name!r} (paper recipes: {', '.join(recipes)})")
    return recipes[name]


def style_bank_path(spec: str | Path) -> Path:
    """The file of a shipped style bank's name (``four-sources``) or of an existing style bank path."""
    return _resolve(spec, _shipped(BANKS, ".json"), "style bank", DataError)


def shipped_name(path: Path) -> str:
    """A shipped file's path inside the installed package (``bloodcell/resources/...``), the same in a
    source checkout (under ``src/``) and an installed wheel."""
    return path.relative_to(ROOT.parents[1]).as_posix()
