"""Shared fixtures and helpers: an isolated dataset cache, the toy dataset plugin, small
engine runs and throw-away third-party plugin distributions."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import facedapt_plugins.report as report_plugin
import pytest
import torch
import toy_plugin
from loguru import logger

from facedapt.plugin_manager import ALLOW_ENV, AUTOLOAD_ENV, TRACE_ENV, Plugins, load_plugins, reset_plugins
from facedapt.recipe.load import LoadedRecipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
PADA = ROOT / "recipes" / "pada.yaml"

# Tiny models: one intra-op thread is faster than several and keeps runs reproducible.
torch.set_num_threads(1)

#: Overrides that turn the bundled pada recipe into a few-second run on the toy dataset.
TOY = (
    "data.dataset={name: toy}",
    "data.target_subjects={first: 2}",
    "data.augment=[]",
    "model.backbone.width=8",
    "train.precision=fp32",
    "train.source_steps=6",
    "train.steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "eval.probe_steps=5",
    "eval.batch_size=64",
)


#: The report plugin's writer; tests that look at reports put it back with the `reports` fixture.
WRITE_REPORT = report_plugin.write_report


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Never touch the user's dataset cache, never leak the cached plugin set between tests, and
    never let the environment of the shell that runs the tests choose or trace plugins."""
    monkeypatch.setenv("FACEDAPT_CACHE", str(tmp_path_factory.getbasetemp() / "facedapt-cache"))
    for name in (AUTOLOAD_ENV, ALLOW_ENV, TRACE_ENV):
        monkeypatch.delenv(name, raising=False)
    # Reports cost about a second a run and most tests do not read them (subprocess runs pass --no-report).
    monkeypatch.setattr(report_plugin, "write_report", lambda run_dir: None)
    reset_plugins()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    reset_plugins()
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs in this test write their report (as they do outside the tests)."""
    monkeypatch.setattr(report_plugin, "write_report", WRITE_REPORT)


@pytest.fixture(scope="session")
def toy_plugins() -> Plugins:
    """Built-in plugins plus the toy dataset (entry points of the test environment only)."""
    return load_plugins(extra=[toy_plugin])


def toy_recipe(*overrides: str, method: str = "pada", path: str | Path = PADA) -> LoadedRecipe:
    return load_recipe(path, [*TOY, f"method={{name: {method}}}", *overrides])


def run_toy(plugins: Plugins, run_dir: Path, *overrides: str, method: str = "pada", resume: bool = False,
            loaded: LoadedRecipe | None = None) -> dict[str, Any]:
    from facedapt.engine.run import Runner

    loaded = loaded or toy_recipe(*overrides, method=method)
    return Runner(loaded, run_dir=run_dir, resume=resume, plugins=plugins).execute()


def model_state(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(path, map_location="cpu", weights_only=True)["models"]


def assert_same_models(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


def write_recipe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def make_distribution(root: Path, dist: str, version: str, module: str, source: str,
                      entry_points: dict[str, str] | None = None) -> Path:
    """A package plus a ``*.dist-info`` folder under ``root``: importlib.metadata finds it like an
    installed distribution once ``root`` is on sys.path (no pip needed)."""
    write_recipe(root / module / "__init__.py", source)
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    eps = entry_points or {dist.replace("fd_", ""): module}
    lines = "".join(f"{name} = {target}\n" for name, target in eps.items())
    (info / "entry_points.txt").write_text(f"[facedapt]\n{lines}", encoding="utf-8")
    return root


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A temporary site folder on sys.path; modules imported from it are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name.startswith("fd_"):
            del sys.modules[name]
    importlib.invalidate_caches()


def benchmark_module(name: str) -> ModuleType:
    """A script of benchmarks/ imported as a module (they import their siblings, e.g. the harness)."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(folder) / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(folder)


@pytest.fixture
def restore_logging() -> Any:
    """The CLI's main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``facedapt ARGV...`` in process: exit status, standard output, standard error."""
    from facedapt.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def backbone_distributions(site: Path, *names: str) -> None:
    """One third-party distribution per name (``fd_<name>`` 1.0, entry point ``<name>``), each
    registering the backbone ``<name>_net``."""
    for name in names:
        source = f"""
            from facedapt import hookimpl

            @hookimpl
            def facedapt_register_backbones(registry):
                registry.register("{name}_net", object)
        """
        make_distribution(site, f"fd_{name}", "1.0", f"fd_{name}", source, {name: f"fd_{name}"})
