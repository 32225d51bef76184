"""The command line, called in-process (plus one real console-script call)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PADA, TOY, backbone_distributions, make_distribution, run_cli, write_recipe

import facedapt
from facedapt.cli import main
from facedapt.errors import RecipeError, UsageError
from facedapt.recipe.load import load_recipe

TOY_DIST = """
    from toy_plugin import ToyFaces, facedapt_register_datasets
"""


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"facedapt {facedapt.__version__}"


@pytest.mark.parametrize("argv", [[], ["run"], ["validate"], ["plugins"], ["recipes"], ["data"], ["data", "synth"],
                                  ["data", "inspect"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: facedapt")


def test_console_script_version() -> None:
    script = Path(sys.executable).with_name("facedapt")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "facedapt"]
    proc = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"facedapt {facedapt.__version__}"


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "plugins")
    assert rc == 0
    lines = out.splitlines()
    assert "backbones:" in lines and "methods:" in lines
    convnet = next(ln for ln in lines if ln.split()[:1] == ["convnet"])
    assert convnet.split()[1:] == ["facedapt", facedapt.__version__]


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "plugins", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["failed"] == []
    rows = {(fam, row["name"]): row for fam, entries in data["families"].items() for row in entries}
    for fam, name in [("backbones", "convnet"), ("heads", "linear"), ("methods", "pada"), ("methods", "source_only"),
                      ("protocols", "personalized"), ("datasets", "manifest")]:
        assert rows[fam, name]["distribution"] == "facedapt"
        assert rows[fam, name]["version"] == facedapt.__version__


@pytest.mark.parametrize("argv", [["-p", "no:augmentations", "plugins", "--json"],
                                  ["plugins", "--json", "-p", "no:augmentations"]])
def test_plugins_block_builtin_module(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, *argv)
    assert rc == 0
    families = json.loads(out)["families"]
    assert families["augmentations"] == [] and families["backbones"]


def test_plugins_lists_failed_plugin(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_distribution(site, "fd_broken", "0.2", "fd_broken", "raise RuntimeError('boom')\n", {"broken": "fd_broken"})
    rc, out, _ = run_cli(capsys, "plugins")
    assert rc == 0
    assert "failed to load: broken (fd_broken): RuntimeError: boom" in out


def test_recipes_list(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "recipes")
    assert rc == 0
    assert any(ln.split()[:1] == ["pada"] for ln in out.splitlines())
    assert run_cli(capsys, "recipes", "list")[1] == out


def test_recipes_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "mine.yaml"
    rc, out, _ = run_cli(capsys, "recipes", "copy", "pada", str(dest))
    assert rc == 0 and str(dest) in out
    assert load_recipe(dest).recipe == load_recipe("pada", ["name=mine"]).recipe
    # Into a folder; and never over an existing file.
    assert run_cli(capsys, "recipes", "copy", "pada", str(tmp_path))[0] == 0
    assert (tmp_path / "pada.yaml").is_file()
    rc, _, err = run_cli(capsys, "recipes", "copy", "pada", str(dest))
    assert rc == 2 and "already exists" in err
    rc, _, err = run_cli(capsys, "recipes", "copy", "nosuch", str(tmp_path / "x.yaml"))
    assert rc == 2 and "unknown recipe 'nosuch'" in err


def test_recipes_copy_of_extending_recipe_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from facedapt.recipe.load import bundled_recipes, read_yaml

    extending = [n for n, p in bundled_recipes().items() if read_yaml(p).get("extends")]
    if not extending:
        pytest.skip("no bundled recipe extends another")
    for name in extending:
        dest = tmp_path / f"{name}-copy.yaml"
        assert run_cli(capsys, "recipes", "copy", name, str(dest))[0] == 0
        assert load_recipe(dest).recipe == load_recipe(name, [f"name={name}-copy"]).recipe


@pytest.mark.parametrize("recipe", ["recipes/pada.yaml", "pada"])
def test_validate_ok(recipe: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PADA.parents[1])
    rc, out, err = run_cli(capsys, "validate", recipe, "--set", "train.steps=3")
    assert rc == 0, err
    assert out.strip().endswith(": ok")


def test_validate_several(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "validate", str(PADA), "pada")
    assert rc == 0 and len(out.splitlines()) == 2


@pytest.fixture
def bad_yaml(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "bad.yaml", "train:\n  steps: [1\n  batch_size: 2\n")


@pytest.mark.parametrize(("argv", "match"), [
    (["validate", "{tmp}/nosuch.yaml"], "no such recipe file"),
    (["validate", "{bad_yaml}"], "invalid YAML: line 3"),
    (["validate", "pada", "--set", "trian.steps=1"], "trian: unknown key; did you mean 'train'"),
    (["validate", "pada", "--set", "train.stpes=1"], "train.stpes: unknown key; did you mean 'steps'"),
    (["validate", "pada", "--set", "model.backbone.name=convnt"], "unknown backbone 'convnt'; did you mean convnet"),
    (["validate", "pada", "--set", "train.steps"], "must look like key=value"),
    (["validate", "pada", "--set", "train.steps=0"], "train.steps: must be positive"),
    (["-p", "nosuch", "validate", "pada"], "-p 'nosuch': expected -p no:NAME"),
    (["-p", "no:", "plugins"], "expected -p no:NAME"),
    (["-p", "no:augmentations", "validate", "pada"], "unknown augmentation 'flip'"),
    (["validate", "pada", "-p", "no:augmentations"], "unknown augmentation 'flip'"),
    (["run", "pada", "train.steps", "--run-dir", "{tmp}/run"], "must look like key=value"),
    (["run", "{tmp}/nosuch.yaml"], "no such recipe file"),
])
def test_bad_input_is_one_line(argv: list[str], match: str, tmp_path: Path, bad_yaml: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, bad_yaml=bad_yaml) for a in argv]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("facedapt: error:") and match in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "error"), [
    (["--debug", "validate", "pada", "--set", "train.stpes=1"], RecipeError),
    (["--debug", "-p", "nosuch", "plugins"], UsageError),
])
def test_debug_reraises(argv: list[str], error: type, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(error):
        main(argv)


def test_internal_error_is_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import facedapt.recipe.validate as validate_module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(validate_module, "validate", broken)
    rc, _, err = run_cli(capsys, "validate", "pada")
    assert rc == 1 and err.strip().splitlines() == [
        "facedapt: internal error: ZeroDivisionError: oops (rerun with --debug for the traceback)"]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "validate", "pada"])


def test_run_and_resume_from_the_command_line(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_distribution(site, "fd_toy", "0.3", "fd_toy", TOY_DIST, {"toy": "fd_toy"})
    run_dir = tmp_path / "run"
    args = ["run", "pada", *TOY, "train.source_steps=2", "train.steps=2", "data.target_subjects=[T00]",
            "--run-dir", str(run_dir)]
    rc, out, err = run_cli(capsys, "-q", *args)
    assert rc == 0, err
    assert out.splitlines()[0].startswith("target accuracy ") and "T00:" in out
    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["data"]["dataset"] == {"name": "toy"}
    # The same command again refuses to overwrite; --resume finds every target done.
    rc, _, err = run_cli(capsys, "-q", *args)
    assert rc == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    rc, out2, _ = run_cli(capsys, "-q", *args, "--resume")
    assert rc == 0 and out2 == out
    rc, _, err = run_cli(capsys, "-q", *args, "train.steps=3", "--resume")
    assert rc == 2 and "train.steps: 2 -> 3" in err


@pytest.mark.parametrize("argv", [
    ["validate", "pada", "--bogus"], ["run", "pada", "--bogus"], ["run", "pada", "--run-dir", "d", "x"],
    ["run", "pada", "--run-dir", "d", "--rundir=e"]])
def test_unknown_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_command_line_block_adds_to_recipe_block_list(site: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    backbone_distributions(site, "a", "b")
    recipe = write_recipe(tmp_path / "r.yaml", "extends: pada\nplugins: {block: [b]}\nmodel: {backbone: b_net}\n")
    rc, _, err = run_cli(capsys, "-p", "no:a", "validate", str(recipe))
    assert rc == 2 and "unknown backbone 'b_net'" in err
    rc, _, err = run_cli(capsys, "-p", "no:b", "validate", str(recipe), "--set", "model.backbone=a_net")
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "-p", "no:a", "validate", str(recipe), "--set", "model.backbone=a_net")
    assert rc == 2 and "unknown backbone 'a_net'" in err
