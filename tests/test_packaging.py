"""What a wheel ships: every package directory of the source tree is named in pyproject.toml.

The package list is explicit because ``actors/`` and ``storage/`` sit at the top of the repo and
install as ``ray_broker.actors`` and ``ray_broker.storage``; a subpackage left out of the list
still imports from a checkout (or an editable install) and is missing only from a built wheel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> tuple[set[str], dict[str, str]]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(setuptools["packages"]), setuptools["package-dir"]


def _package_dirs() -> set[str]:
    _, mapping = _declared()
    found = set()
    roots = {"ray_broker": ROOT / "ray_broker", **{name: ROOT / d for name, d in mapping.items()}}
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder)
            if (
                any(part in mapping.values() for part in relative.parts[:1])
                and name == "ray_broker"
            ):
                continue  # the symlinked folders, counted under their own names
            found.add(".".join((name, *relative.parts)))
    return found


def test_every_package_directory_is_declared() -> None:
    declared, _ = _declared()
    missing = _package_dirs() - declared
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_declared_package_exists() -> None:
    declared, _ = _declared()
    assert declared <= _package_dirs(), sorted(declared - _package_dirs())
