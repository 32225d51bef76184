"""Packaging: every package folder is listed in pyproject.toml, recipes travel with the
distribution, built-in plugin modules import."""

from __future__ import annotations

import importlib

import pytest
import tomllib
from conftest import ROOT

from facedapt.plugin_manager import BUILTIN_PLUGINS
from facedapt.recipe.load import bundled_dir, bundled_recipes

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]


def _package_name(folder) -> str:
    """The import name a source folder installs as, through package-dir."""
    rel = folder.relative_to(ROOT).as_posix()
    best = max((d for d in PACKAGE_DIR.values() if rel == d or rel.startswith(d + "/")), key=len)
    name = next(n for n, d in PACKAGE_DIR.items() if d == best)
    rest = rel[len(best):].strip("/")
    return f"{name}.{rest.replace('/', '.')}" if rest else name


SOURCE_PACKAGES = sorted(
    _package_name(init.parent)
    for top in ("facedapt", "plugins")
    for init in (ROOT / top).rglob("__init__.py")
    if "__pycache__" not in init.parts
)


def test_package_dir_mapping() -> None:
    assert PACKAGE_DIR == {"facedapt": "facedapt", "facedapt_plugins": "plugins", "facedapt.recipes": "recipes"}
    assert _package_name(ROOT / "plugins" / "datasets") == "facedapt_plugins.datasets"
    assert _package_name(ROOT / "recipes") == "facedapt.recipes"


@pytest.mark.parametrize("package", SOURCE_PACKAGES)
def test_every_package_folder_is_listed(package: str) -> None:
    assert package in PACKAGES, f"{package} is missing from [tool.setuptools] packages in pyproject.toml"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_listed_package_exists(package: str) -> None:
    head = max((n for n in PACKAGE_DIR if package == n or package.startswith(n + ".")), key=len)
    folder = ROOT / PACKAGE_DIR[head] / package[len(head):].strip(".").replace(".", "/")
    assert folder.is_dir(), package


def test_recipes_travel_as_package_data() -> None:
    assert "facedapt.recipes" in PACKAGES
    assert "*.yaml" in SETUPTOOLS["package-data"]["facedapt.recipes"]


def test_bundled_recipes_dir() -> None:
    assert (bundled_dir() / "pada.yaml").is_file()
    assert bundled_recipes()["pada"] == bundled_dir() / "pada.yaml"
    assert set(bundled_recipes()) == {p.stem for p in (ROOT / "recipes").glob("*.yaml")}


@pytest.mark.parametrize("module", BUILTIN_PLUGINS)
def test_builtin_plugin_modules_import(module: str) -> None:
    mod = importlib.import_module(module)
    assert any(name.startswith("facedapt_") for name in dir(mod))
    # The module lives in a package that the distribution installs.
    assert (mod.__name__ if hasattr(mod, "__path__") else mod.__name__.rpartition(".")[0]) in PACKAGES


def test_console_script_target() -> None:
    target = PYPROJECT["project"]["scripts"]["facedapt"]
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
