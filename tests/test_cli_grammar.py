"""One command-line grammar: overrides taken the same way by every recipe command, the common
options (-p, -q, -v, --debug) before or after any subcommand's name, and -p no:NAME applied
to every plugin set a command loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PADA, run_cli, write_recipe

import facedapt.cli as cli
from facedapt.cli import build_parser, main
from facedapt.errors import UsageError
from facedapt.plugin_manager import get_plugins


pytestmark = pytest.mark.usefixtures("restore_logging")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *parts: str) -> str:
    rc, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("facedapt: error:") and "Traceback" not in out + err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# -- overrides ------------------------------------------------------------------------------
def test_validate_override_with_bad_value_names_the_key(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(PADA.parents[1])
    line = _one_line_error(capsys, ["validate", "recipes/pada.yaml", "train.steps=ten"], "train.steps", "'ten'")
    assert "no such recipe" not in line


@pytest.mark.parametrize(("override", "key", "value"), [
    ("data.protocol.source_yaw_max=abc", "data.protocol.source_yaw_max", "'abc'"),
    ("method.cross_mode=sideways", "method.cross_mode", "'sideways'"),
    ("method.partner_fraction=2", "method.partner_fraction", "2"),
])
def test_validate_checks_method_and_protocol_values(override: str, key: str, value: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Values the method's and protocol's constructors refuse fail at validate, not at run time."""
    monkeypatch.chdir(PADA.parents[1])
    _one_line_error(capsys, ["validate", "recipes/pada.yaml", override], "recipes/pada.yaml", key, value)


@pytest.mark.parametrize("argv", [
    ["validate", "pada", "train.steps=3", "~train.eval_every"],
    ["validate", "pada", "--set", "train.steps=3", "~train.eval_every"],
    ["validate", "train.steps=3", "pada", "~train.eval_every"],  # overrides are known by their form
    ["validate", "pada", "-q", "train.steps=3", "--set", "~train.eval_every"],
])
def test_validate_takes_overrides_positionally_and_with_set(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    assert out.strip().endswith(": ok") and len(out.splitlines()) == 1


def test_validate_overrides_apply_to_every_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, ["validate", "pada", str(PADA), "train.stpes=3"], "train.stpes", "unknown key")
    assert "pada.yaml" in line


def test_an_argument_with_equals_is_never_a_recipe_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Files named like overrides exist, and are valid recipes: they must still be read as overrides.
    monkeypatch.chdir(tmp_path)
    for name in ("train.steps=3", "~train.eval_every"):
        write_recipe(tmp_path / name, f"extends: {PADA}\n")
    rc, out, err = run_cli(capsys, "validate", "pada", "train.steps=3", "~train.eval_every")
    assert rc == 0, err
    assert len(out.splitlines()) == 1 and "pada.yaml: ok" in out
    for argv in (["validate", "train.steps=3"], ["run", "train.steps=3"], ["sweep", "~train.eval_every"]):
        _one_line_error(capsys, argv, f"{argv[0]}: no recipe given")


@pytest.mark.parametrize(("argv", "parts"), [
    (["run", "pada", "train.steps", "--run-dir", "{tmp}/run"], ["'train.steps'", "must look like key=value"]),
    (["run", "pada", "other", "--run-dir", "{tmp}/run"], ["'other'", "run takes one recipe"]),
    (["run", "pada", "--run-dir", "{tmp}/run", "train.steps=ten"], ["train.steps", "'ten'"]),
    (["run", "pada", "--run-dir", "{tmp}/run", "--set", "train.steps=ten"], ["train.steps", "'ten'"]),
    (["sweep", "pada", "--sweep-dir", "{tmp}/run", "--subjects", "none", "--dry-run", "train.steps=ten"],
     ["train.steps", "'ten'"]),
    (["sweep", "pada", "x.yaml", "--sweep-dir", "{tmp}/run"], ["'x.yaml'", "sweep takes one recipe"]),
    (["eval", "--checkpoint", "{tmp}", "--dataset", "toy", "split"], ["eval: 'split'", "key=value"]),
    (["eval", "--checkpoint", "{tmp}", "--dataset", "toy", "~split"], ["'~split'", "only set"]),
    (["adapt", "--from", "{tmp}", "--images", "{tmp}", "steps"], ["adapt: 'steps'", "adapt takes no recipe"]),
])
def test_bad_overrides_are_one_line(argv: list[str], parts: list[str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, [a.format(tmp=tmp_path) for a in argv], *parts)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tail", [
    ["train.steps=3", "--dry-run"],
    ["--dry-run", "train.steps=3"],
    ["--dry-run", "--set", "train.steps=3"],
])
def test_sweep_overrides_any_position(tail: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "sweep", "pada", "--subjects", "none", "--sweep-dir", str(tmp_path / "s"), *tail)
    assert rc == 0, err
    (job,) = (tmp_path / "s").glob("*/recipe.yaml")
    assert yaml.safe_load(job.read_text())["train"]["steps"] == 3


@pytest.mark.parametrize("argv", [
    ["train.steps=3", "~eval.leakage_probe"],
    ["--set", "train.steps=3", "--set", "~eval.leakage_probe"],
    ["--subject", "me", "train.steps=3", "~eval.leakage_probe"],
])
def test_adapt_overrides(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    import facedapt.engine.adapt as adapt_module

    seen: dict[str, Any] = {}

    def fake(run_from: Path, images: Path, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise UsageError("stop")

    monkeypatch.setattr(adapt_module, "adapt", fake)
    rc, _, err = run_cli(capsys, "adapt", "--from", str(tmp_path), "--images", str(tmp_path), *argv)
    assert rc == 2 and "stop" in err
    assert seen["overrides"] == ["train.steps=3", "~eval.leakage_probe"]


def test_eval_dataset_options_parse_like_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import facedapt.engine.model_io as model_io

    seen: dict[str, Any] = {}

    def fake_evaluate(model: Any, dataset: str, options: dict[str, Any]) -> None:
        seen.update(dataset=dataset, options=options)
        raise UsageError("stop")

    monkeypatch.setattr(model_io, "load_model", lambda path: object())
    monkeypatch.setattr(model_io, "evaluate_dataset", fake_evaluate)
    rc, _, err = run_cli(capsys, "eval", "split=test", "--checkpoint", str(tmp_path), "--dataset", "kdef",
                      "subjects=[S1, S2]", "--set", "crop.size=64", "--root", "/data")
    assert rc == 2 and "stop" in err
    assert seen == {"dataset": "kdef", "options": {"split": "test", "subjects": ["S1", "S2"], "crop": {"size": 64},
                                                  "root": "/data"}}


# -- common options on every subcommand -----------------------------------------------------
#: The smallest valid argument list of every subcommand (a new one must be added here).
MINIMAL: dict[str, list[str]] = {
    "run": ["run", "pada"],
    "validate": ["validate", "pada"],
    "plugins": ["plugins"],
    "recipes": ["recipes"],
    "adapt": ["adapt", "--from", "r", "--images", "i"],
    "eval": ["eval", "--checkpoint", "c", "--dataset", "d"],
    "report": ["report", "r"],
    "predict": ["predict", "--checkpoint", "c", "x.png"],
    "sweep": ["sweep", "pada"],
    "compare": ["compare", "d"],
    "data synth": ["data", "synth", "--out", "o"],
    "data inspect": ["data", "inspect", "--dataset", "d", "--root", "r"],
}


def _parsed(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> argparse.Namespace:
    """The arguments main() works with, stopped before any command runs."""
    seen: list[argparse.Namespace] = []

    def stop(args: argparse.Namespace) -> None:
        seen.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "_configure_logging", stop)
    with pytest.raises(SystemExit):
        main(argv)
    return seen[0]


def test_minimal_covers_every_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    data = next(a for a in sub.choices["data"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(MINIMAL) == {n for n in sub.choices if n != "data"} | {f"data {n}" for n in data.choices}


@pytest.mark.parametrize("command", MINIMAL)
def test_common_options_before_or_after_the_subcommand(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = MINIMAL[command]
    n = 2 if command.startswith("data ") else 1
    args = _parsed(monkeypatch, argv)
    assert (args.quiet, args.verbose, args.debug, args.plugin_opts) == (False, False, False, [])
    args = _parsed(monkeypatch, ["-p", "no:a", *argv[:n], "-q", "-p", "no:b", *argv[n:], "--debug"])
    assert (args.quiet, args.verbose, args.debug, args.plugin_opts) == (True, False, True, ["no:a", "no:b"])
    args = _parsed(monkeypatch, ["-q", *argv, "-v", "-p", "no:c"])
    assert (args.quiet, args.verbose, args.plugin_opts) == (True, True, ["no:c"])


def test_data_takes_common_options_at_both_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parsed(monkeypatch, ["-p", "no:a", "data", "-p", "no:b", "-v", "synth", "-p", "no:c", "--out", "o"])
    assert args.plugin_opts == ["no:a", "no:b", "no:c"] and args.verbose


# -- -p no:NAME, one rule for every subcommand ----------------------------------------------
PROBES: dict[str, tuple[str, str, list[str]]] = {
    # command: (module, function that runs inside the command, argv)
    "run": ("facedapt.engine.run", "run", ["run", "pada"]),
    "validate": ("facedapt.recipe.validate", "validate", ["validate", "pada"]),
    "adapt": ("facedapt.engine.adapt", "adapt", ["adapt", "--from", "{tmp}", "--images", "{tmp}"]),
    "eval": ("facedapt.engine.model_io", "load_model", ["eval", "--checkpoint", "{tmp}", "--dataset", "kdef"]),
    "predict": ("facedapt.engine.model_io", "load_model", ["predict", "--checkpoint", "{tmp}", "x.png"]),
    "sweep": ("facedapt.sweep", "run_sweep", ["sweep", "pada", "--sweep-dir", "{tmp}/s"]),
    "report": ("facedapt.report", "build_report", ["report", "{tmp}"]),
    "data synth": ("facedapt.data.store", "materialize", ["data", "synth", "--out", "{tmp}/o"]),
}


@pytest.mark.parametrize("command", PROBES)
@pytest.mark.parametrize("before", [True, False])
def test_block_applies_inside_every_command(command: str, before: bool, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    module, name, argv = PROBES[command]
    argv = [a.format(tmp=tmp_path) for a in argv]
    seen: list[list[str]] = []

    def probe(*args: Any, **kwargs: Any) -> None:
        seen.append(get_plugins().registry("augmentations").names())
        raise UsageError("probe reached")

    monkeypatch.setattr(importlib.import_module(module), name, probe)
    block = ["-p", "no:augmentations", "-p", "no:SOMEPLUGIN"]  # an unknown name is accepted, as in pytest
    rc, _, err = run_cli(capsys, *(block + argv if before else argv + block))
    assert rc == 2 and "probe reached" in err, err
    assert seen == [[]]
    assert get_plugins().registry("augmentations").names()  # lifted when the command returns


@pytest.mark.parametrize("argv", [
    ["data", "synth", "--out", "{tmp}/o", "-p", "no:synthetic"],
    ["-p", "no:synthetic", "data", "synth", "--out", "{tmp}/o"],
])
def test_block_applies_to_data_commands(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, [a.format(tmp=tmp_path) for a in argv], "unknown dataset 'synthetic'")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [
    ["-p", "no:metrics", "validate", "pada"],
    ["validate", "pada", "-p", "no:protocols"],
    ["plugins", "-p", "no:facedapt_plugins.metrics"],
    ["eval", "--checkpoint", "{tmp}", "--dataset", "kdef", "-p", "no:metrics"],
    ["data", "synth", "--out", "{tmp}/o", "-p", "no:protocols"],
    ["run", "pada", "--run-dir", "{tmp}/run", "-p", "no:metrics"],
])
def test_blocking_an_essential_builtin_is_refused(argv: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, [a.format(tmp=tmp_path) for a in argv], "is essential", "cannot be blocked")
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_recipe_cannot_block_an_essential_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", f"extends: {PADA}\nplugins: {{block: [metrics]}}\n")
    _one_line_error(capsys, ["validate", str(recipe)], "plugins.block: 'metrics'", "is essential")


def test_sweep_jobs_record_the_command_line_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", f"extends: {PADA}\nplugins: {{block: [b]}}\n")
    rc, _, err = run_cli(capsys, "-p", "no:a", "sweep", str(recipe), "--subjects", "none", "--dry-run",
                      "--sweep-dir", str(tmp_path / "s"), "-p", "no:b", "-p", "no:c")
    assert rc == 0, err
    (job,) = (tmp_path / "s").glob("*/recipe.yaml")
    assert yaml.safe_load(job.read_text())["plugins"]["block"] == ["b", "a", "c"]  # added to, not replacing


def test_bad_plugin_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["plugins", "-p", "metrics"], ["-p", "no:", "recipes"]):
        _one_line_error(capsys, argv, "expected -p no:NAME")


def test_help_shows_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "validate", "sweep", "adapt"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "OVERRIDE" in out and "--set" in out and "no:NAME" in out and "-q" in out, command
