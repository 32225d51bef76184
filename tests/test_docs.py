"""The documentation: the generated recipe reference is current, the site builds in strict
mode, every page is in the nav, and the example third-party plugin installs and runs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from facedapt.engine.run import Runner
from facedapt.plugin_manager import load_plugins
from facedapt.recipe.load import bundled_recipes, load_recipe
from facedapt.recipe.reference import render_reference

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOCS = ROOT / "docs"
EXAMPLE = DOCS / "examples" / "facedapt-example-plugin"
EXAMPLE_MODULE = "facedapt_example_plugin"
EXAMPLE_DIST = "facedapt-example-plugin"


def test_recipe_reference_is_current() -> None:
    committed = (DOCS / "recipe-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), (
        "docs/recipe-reference.md is out of date: run "
        "`python -m facedapt.recipe.reference > docs/recipe-reference.md`")


def test_reference_lists_every_schema_key() -> None:
    from facedapt.recipe.schema import fields_reference

    text = render_reference()
    for key, type_name, _, _ in fields_reference():
        if type_name != "section":
            assert f"`{key}`" in text, key


def _nav_files(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in _nav_files(value)]
    return []


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(_nav_files(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from the nav in mkdocs.yml"
    assert listed - pages == set(), "nav entries without a page"


def test_bundled_recipes_are_documented() -> None:
    text = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for name in bundled_recipes():
        assert f"`{name}`" in text, f"recipe {name} is not in the bundled recipes table of docs/recipes.md"


def test_site_builds_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]' or '.[test]')")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "recipe-reference" / "index.html").is_file()


# -- the example third-party plugin ---------------------------------------------------------
def _example_entry_points() -> dict[str, str]:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["name"] == EXAMPLE_DIST
    return dict(meta["project"]["entry-points"]["facedapt"])


@pytest.fixture
def example_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example package plus a dist-info folder matching its pyproject, on sys.path: found by
    importlib.metadata as if pip had installed it."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / EXAMPLE_MODULE, site / EXAMPLE_MODULE, ignore=shutil.ignore_patterns("__pycache__"))
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    version = meta["project"]["version"]
    info = site / f"{EXAMPLE_MODULE}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {EXAMPLE_DIST}\nVersion: {version}\n", encoding="utf-8")
    eps = {"example": EXAMPLE_MODULE}
    (info / "entry_points.txt").write_text("[facedapt]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()),
                                           encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield eps, version
    sys.modules.pop(EXAMPLE_MODULE, None)
    importlib.invalidate_caches()


def test_example_pyproject_entry_point_matches_the_test(example_installed: Any) -> None:
    eps, _ = example_installed
    assert _example_entry_points() == eps


@pytest.mark.slow
def test_example_plugin_installs_and_runs(example_installed: Any, tmp_path: Path) -> None:
    _, version = example_installed
    plugins = load_plugins()
    assert plugins.failed == []
    entry = plugins.registry("backbones").entry("example_mlp")
    assert (entry.origin.plugin, entry.origin.distribution, entry.origin.version) == ("example", EXAMPLE_DIST, version)
    assert entry.factory(in_channels=3, image_size=16).out_features == 128

    loaded = load_recipe(EXAMPLE / "example.yaml", [
        "data.dataset={name: synthetic, preset: tiny}",
        "train.source_steps=4", "train.steps=2", "train.batch_size=8",
        "data.target_subjects={first: 1}", "eval.leakage_probe=false", "train.precision=fp32",
    ])
    assert loaded.recipe.method.name == "pada"  # extends the bundled recipe by name
    assert loaded.recipe.model["backbone"].name == "example_mlp"
    assert "width" not in loaded.recipe.model["backbone"].kwargs  # a renamed component drops old arguments

    run_dir = tmp_path / "run"
    results = Runner(loaded, run_dir=run_dir, plugins=plugins).execute()
    assert len(results["per_subject"]) == 1
    (target,) = results["per_subject"]

    counts = json.loads((run_dir / "step_counts.json").read_text(encoding="utf-8"))
    assert counts["phases"] == {"source": 4, f"adapt:{target}": 2}
    assert counts["total"] == 6
    assert sys.modules[EXAMPLE_MODULE].LAST_COUNTS == counts["phases"]
    env = json.loads((run_dir / "environment.json").read_text(encoding="utf-8"))
    assert env["versions"][f"plugin:{EXAMPLE_DIST}"] == version
