"""The bad-input matrix (docs/reliability.md): bad recipes, data, run directories, checkpoints
and command lines, and simulated runtime faults, each run through ``facedapt.cli.main``.

Every case must exit 2 (usage or data) or 1 (runtime fault) with one error line that starts
with ``facedapt: error:`` and names the file, key or value; no traceback; and every file that
existed before the command is still there, byte for byte (files a resume rewrites by design
are listed per case).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from conftest import PADA, TOY, make_distribution, write_recipe
from loguru import logger

from facedapt.cli import main
from facedapt.engine import checkpoint
from facedapt.errors import DataError
from facedapt.recipe.load import load_recipe, write_resolved

try:
    import fixtures_layouts as L
except ImportError:  # tests/ collected as a package
    from tests import fixtures_layouts as L

#: The toy dataset, plus a method whose loss term ``poison`` turns NaN at one step.
DIST = """
    from facedapt import hookimpl
    from test_reliability import NanProbe
    from toy_plugin import ToyFaces, facedapt_register_datasets


    @hookimpl
    def facedapt_register_methods(registry):
        registry.register("nan_probe", NanProbe)
"""

#: A short toy run of one target.
SHORT = (*TOY, "data.target_subjects=[T00]", "train.source_steps=2", "train.steps=2", "eval.leakage_probe=false")

#: loguru lines (warnings printed before the error, e.g. skipped files) are not the error line.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (WARNING|INFO|DEBUG|SUCCESS)\s")


@attrs.define
class Env:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    last_error: str = ""  # what the command under test printed to stderr

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    def run(self, *overrides: str, recipe: str | Path = PADA, run_dir: Path | None = None) -> list[str]:
        return ["-q", "run", str(recipe), *SHORT, *overrides, "--run-dir", str(run_dir or self.run_dir)]

    def recipe(self, text: str, name: str = "r.yaml") -> Path:
        return write_recipe(self.tmp / name, text)

    def finished_run(self, *overrides: str) -> Path:
        """A completed toy run (made with the command line itself)."""
        done = self.tmp / "done"
        assert main(self.run(*overrides, run_dir=done)) == 0
        self.capsys.readouterr()
        return done

    def resumable(self, ckpt: bytes) -> list[str]:
        """A run directory as an interrupted run leaves it, with ``ckpt`` as its newest checkpoint."""
        argv = self.run("train.checkpoint_every=1")
        self.run_dir.mkdir()
        write_resolved(load_recipe(PADA, [*SHORT, "train.checkpoint_every=1"]), self.run_dir / "recipe.yaml")
        (self.run_dir / "source").mkdir()
        (self.run_dir / "source" / "ckpt-0000001.pt").write_bytes(ckpt)
        return [*argv, "--resume"]


@attrs.frozen
class Case:
    id: str
    build: Callable[[Env], list[str]]
    code: int
    match: str
    check: Callable[[Env], None] | None = None
    may_change: tuple[str, ...] = ()  # files a command rewrites by design (relative to tmp)


CASES: list[Case] = []


def case(id: str, code: int, match: str, check: Callable[[Env], None] | None = None,
         may_change: tuple[str, ...] = ()) -> Callable:
    def register(build: Callable[[Env], list[str]]) -> Callable:
        CASES.append(Case(id, build, code, match, check, may_change))
        return build
    return register


# --------------------------------------------------------------------------- recipes


@case("malformed_yaml", 2, "bad.yaml: invalid YAML: line 3")
def _(env: Env) -> list[str]:
    return env.run(recipe=env.recipe("train:\n  steps: [1\n  batch_size: 2\n", "bad.yaml"))


def _not_pwned(env: Env) -> None:
    assert not (env.tmp / "pwned").exists()


@case("yaml_python_object_tag", 2, "could not determine a constructor for the tag", _not_pwned)
def _(env: Env) -> list[str]:
    return env.run(recipe=env.recipe(f'seed: !!python/object/apply:os.mkdir ["{env.tmp / "pwned"}"]\n'))


@case("recipe_not_a_mapping", 2, "r.yaml: a recipe is a mapping of sections, got list")
def _(env: Env) -> list[str]:
    return env.run(recipe=env.recipe("- train\n- data\n"))


@case("wrong_type_integer", 2, "train.steps: expected an integer, got 'many'")
def _(env: Env) -> list[str]:
    return env.run("train.steps=many")


@case("wrong_type_boolean", 2, "train.deterministic: expected true or false, got 'maybe'")
def _(env: Env) -> list[str]:
    return env.run("train.deterministic=maybe")


@case("section_not_a_mapping", 2, "r.yaml: train: expected a mapping, got 5")
def _(env: Env) -> list[str]:
    return ["-q", "run", str(env.recipe("extends: pada\ntrain: 5\n")), "--run-dir", str(env.run_dir)]


@case("unknown_key_in_file", 2, "r.yaml: data.augmnt: unknown key; did you mean 'augment'?")
def _(env: Env) -> list[str]:
    return ["-q", "run", str(env.recipe("extends: pada\ndata:\n  augmnt: []\n")), "--run-dir", str(env.run_dir)]


@case("unknown_method_suggests", 2, "method.name: unknown method 'padda'; did you mean pada")
def _(env: Env) -> list[str]:
    return env.run("method={name: padda}")


@case("unknown_dataset_suggests", 2, "data.dataset.name: unknown dataset 'synthetc'; did you mean synthetic")
def _(env: Env) -> list[str]:
    return env.run("data.dataset={name: synthetc}")


@case("unknown_augmentation_suggests", 2, "data.augment[0].name: unknown augmentation 'flp'; did you mean flip")
def _(env: Env) -> list[str]:
    return env.run("data.augment=[{name: flp}]")


@case("unknown_component_argument", 2, "depthh")
def _(env: Env) -> list[str]:
    return env.run("model.backbone.depthh=3")


@case("zero_batch_size", 2, "train.batch_size: must be positive, got 0")
def _(env: Env) -> list[str]:
    return env.run("train.batch_size=0")


@case("negative_step_count", 2, "train.source_steps: must not be negative, got -1")
def _(env: Env) -> list[str]:
    return env.run("train.source_steps=-1")


@case("zero_image_size", 2, "image_size")
def _(env: Env) -> list[str]:
    return env.run("data.dataset={name: synthetic, preset: tiny, image_size: 0}")


@case("value_not_a_choice", 2, "train.nan_policy: 'ignore' is not one of abort, skip")
def _(env: Env) -> list[str]:
    return env.run("train.nan_policy=ignore")


@case("fraction_out_of_range", 2, "data.target_holdout: must be in [0, 1), got 1.5")
def _(env: Env) -> list[str]:
    return env.run("data.target_holdout=1.5")


@case("negative_grad_clip", 2, "train.grad_clip: must be positive, got -1.0")
def _(env: Env) -> list[str]:
    return env.run("train.grad_clip=-1")


@case("zero_target_subjects", 2, "data.target_subjects: expected {first: N} with N > 0, got {'first': 0}")
def _(env: Env) -> list[str]:
    return env.run("data.target_subjects={first: 0}")


@case("unknown_synthetic_preset", 2, "synthetic dataset: unknown preset 'huge'")
def _(env: Env) -> list[str]:
    return env.run("data.dataset={name: synthetic, preset: huge}")


@case("extends_missing_file", 2, "extends: extended recipe 'nosuch.yaml' not found")
def _(env: Env) -> list[str]:
    return ["-q", "run", str(env.recipe("extends: nosuch.yaml\n")), "--run-dir", str(env.run_dir)]


@case("override_value_unparsable", 2, "train.steps: cannot parse value '[1'")
def _(env: Env) -> list[str]:
    return env.run("train.steps=[1")


@case("override_deletes_missing_key", 2, "train.nosuch: cannot delete: key not in recipe")
def _(env: Env) -> list[str]:
    return env.run("~train.nosuch")


# --------------------------------------------------------------------------- data


@case("missing_data_root", 2, "kdef root not found: ")
def _(env: Env) -> list[str]:
    return env.run(f"data.dataset={{name: kdef, root: {env.tmp / 'nope'}}}")


def _kdef(env: Env, damage: Callable[[Path], Any] | None = None) -> str:
    root = L.make_kdef(env.tmp)
    if damage is not None:
        damage(root / "AF01" / "AF01HAHR.JPG")
    return f"data.dataset={{name: kdef, root: {root}, image_size: 16}}"


@case("corrupt_image", 2, "AF01HAHR.JPG: unreadable image")
def _(env: Env) -> list[str]:
    return env.run(_kdef(env, L.garble), "data.target_subjects=[M02]")


@case("truncated_image", 2, "AF01HAHR.JPG: unreadable image")
def _(env: Env) -> list[str]:
    return env.run(_kdef(env, L.truncate), "data.target_subjects=[M02]")


@case("empty_target_subject", 2, "data.target_subjects: subject(s) AM03 not in dataset 'kdef'")
def _(env: Env) -> list[str]:
    return env.run(_kdef(env), "data.target_subjects=[AM03]")  # AM03 is a folder without images


@case("label_out_of_range", 2, "manifest.csv:3: expression index 9 is out of range")
def _(env: Env) -> list[str]:
    root = L.make_manifest(env.tmp)
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",3,p2,", ",9,p2,"))
    return env.run(f"data.dataset={{name: manifest, root: {root}, image_size: 16}}")


@case("class_count_mismatch", 2, "its model was trained for 3 expression classes but the data has 4")
def _(env: Env) -> list[str]:
    done = env.finished_run()
    return env.run("data.dataset={name: toy, classes: 4}", "train.source_steps=0", f"train.init_from={done}")


@case("image_size_mismatch", 2, "source images are (1, 16, 16) but target images are (1, 20, 20)")
def _(env: Env) -> list[str]:
    return env.run("data.protocol={name: cross_dataset}", "data.target_dataset={name: toy, image_size: 20}")


@case("init_from_missing", 2, "nope: no such checkpoint")
def _(env: Env) -> list[str]:
    return env.run("train.source_steps=0", f"train.init_from={env.tmp / 'nope'}")


# --------------------------------------------------------------------------- run directories, checkpoints


@case("unwritable_run_dir", 2, "a-file/sub: cannot write the run directory")
def _(env: Env) -> list[str]:
    (env.tmp / "a-file").write_text("not a folder\n")  # the tests run as root: chmod would not stop them
    return env.run(run_dir=env.tmp / "a-file" / "sub")


@case("run_dir_holds_another_run", 2, "already holds a run")
def _(env: Env) -> list[str]:
    done = env.finished_run()
    return env.run("seed=5", run_dir=done)


@case("resume_not_a_run_dir", 2, "not a run directory (no recipe.yaml) to resume")
def _(env: Env) -> list[str]:
    env.run_dir.mkdir()
    return [*env.run(), "--resume"]


@case("resume_without_earlier_run", 2, "--resume: no earlier run of recipe 'pada'")
def _(env: Env) -> list[str]:
    env.monkeypatch.chdir(env.tmp)
    return ["-q", "run", str(PADA), *SHORT, "--resume"]


@case("resume_corrupt_checkpoint", 2, "ckpt-0000001.pt: not a readable checkpoint",
      may_change=("run/environment.json", "run/log.txt"))
def _(env: Env) -> list[str]:
    return env.resumable(b"\x00garbage, not a checkpoint\n" * 8)


def _truncated_checkpoint(env: Env) -> bytes:
    path = env.tmp / "whole.pt"
    checkpoint.save({"step": 1, "models": {"m": {"w": torch.arange(4096.0)}}}, path)
    data = path.read_bytes()
    path.unlink()
    return data[: len(data) // 2]


@case("resume_truncated_checkpoint", 2, "ckpt-0000001.pt: not a readable checkpoint: the file is cut short at ",
      may_change=("run/environment.json", "run/log.txt"))
def _(env: Env) -> list[str]:
    return env.resumable(_truncated_checkpoint(env))


def _older_checkpoint_kept(env: Env) -> None:
    assert checkpoint.load(env.run_dir / "source" / "ckpt-0000002.pt")["step"] == 2
    assert "the one before it, ckpt-0000002.pt, is kept: delete ckpt-0000004.pt to resume from there" in env.last_error


@case("resume_truncated_checkpoint_with_an_older_one", 2,
      "ckpt-0000004.pt: not a readable checkpoint: the file is cut short at ", _older_checkpoint_kept,
      may_change=("run/environment.json", "run/log.txt", "run/source/metrics.jsonl"))
def _(env: Env) -> list[str]:
    argv = env.run("train.source_steps=6", "train.checkpoint_every=2")
    real = checkpoint.save
    with pytest.MonkeyPatch.context() as mp:  # the first run stops after its step-4 checkpoint
        def save(state: dict, path: Path) -> None:
            real(state, path)
            if state.get("step") == 4:
                raise KeyboardInterrupt
        mp.setattr(checkpoint, "save", save)
        assert main(argv) == 130
    env.capsys.readouterr()
    newest = env.run_dir / "source" / "ckpt-0000004.pt"
    newest.write_bytes(newest.read_bytes()[:2000])
    return [*argv, "--resume"]


@case("eval_missing_checkpoint", 2, "nope: no such file or directory")
def _(env: Env) -> list[str]:
    return ["-q", "eval", "--checkpoint", str(env.tmp / "nope"), "--dataset", "toy"]


class _Pwn:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.target,))


@case("eval_checkpoint_that_runs_code", 2, "evil.pt: not a readable checkpoint", _not_pwned)
def _(env: Env) -> list[str]:
    torch.save({"format": checkpoint.FORMAT, "models": _Pwn(str(env.tmp / "pwned"))}, env.tmp / "evil.pt")
    return ["-q", "eval", "--checkpoint", str(env.tmp / "evil.pt"), "--dataset", "toy"]


@case("inspect_unknown_dataset", 2, "unknown dataset 'kdeff'; did you mean kdef")
def _(env: Env) -> list[str]:
    return ["-q", "data", "inspect", "--dataset", "kdeff", "--root", str(env.tmp)]


@case("inspect_missing_root", 2, "kdef root not found: ")
def _(env: Env) -> list[str]:
    return ["-q", "data", "inspect", "--dataset", "kdef", "--root", str(env.tmp / "nope")]


# --------------------------------------------------------------------------- runtime faults (exit 1)


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _previous_checkpoint_intact(env: Env) -> None:
    source = env.run_dir / "source"
    assert sorted(p.name for p in source.iterdir()) == ["ckpt-0000002.pt", "metrics.jsonl"]  # no temporary file
    assert checkpoint.load(source / "ckpt-0000002.pt")["step"] == 2
    assert load_recipe(env.run_dir / "recipe.yaml").resolved == load_recipe(PADA, [*SHORT, "train.source_steps=6",
                                                                                   "train.checkpoint_every=2"]).resolved


@case("disk_full_on_checkpoint", 1, "ckpt-0000004.pt: cannot write the checkpoint (No space left on device)",
      _previous_checkpoint_intact)
def _(env: Env) -> list[str]:
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"PK\x03\x04 half a checkpoint")
            _enospc()
        real(obj, f, *args, **kwargs)

    env.monkeypatch.setattr(torch, "save", save)
    return env.run("train.source_steps=6", "train.checkpoint_every=2")


def _no_temporary_results(env: Env) -> None:
    assert not list((env.tmp / "done").glob("*.tmp"))


@case("disk_full_on_results", 1, "results.json: cannot write (No space left on device)", _no_temporary_results,
      may_change=("done/environment.json", "done/log.txt"))
def _(env: Env) -> list[str]:
    done = env.finished_run()
    real = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "results.json.tmp":
            real(self, "{\"partial")
            _enospc()
        return real(self, *args, **kwargs)

    env.monkeypatch.setattr(Path, "write_text", write_text)
    return [*env.run(run_dir=done), "--resume"]  # a finished run: only results.json is written again


def _full_disk_when_appending(env: Env, name: str) -> None:
    """Files named ``name`` opened for appending accept no more bytes."""
    real = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real(self, mode, *args, **kwargs)
        if self.name != name or "a" not in mode:
            return fh

        class Full:
            def __init__(self) -> None:
                self.name = fh.name

            def write(self, _text: str) -> None:
                _enospc()

            def flush(self) -> None:
                fh.flush()

            def close(self) -> None:
                fh.close()

        return Full()

    env.monkeypatch.setattr(Path, "open", open_)


@case("disk_full_on_metrics", 1, "source/metrics.jsonl: cannot write (No space left on device)")
def _(env: Env) -> list[str]:
    _full_disk_when_appending(env, "metrics.jsonl")
    return env.run("train.log_every=1")


@case("disk_full_on_log", 1, "log.txt: cannot write (No space left on device)")
def _(env: Env) -> list[str]:
    _full_disk_when_appending(env, "log.txt")
    return env.run()


@case("disk_full_on_environment", 1, "environment.json: cannot write (No space left on device)",
      lambda env: None if not list(env.run_dir.glob("*.tmp")) else pytest.fail("temporary file left"))
def _(env: Env) -> list[str]:
    real = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "environment.json.tmp":
            _enospc()
        return real(self, *args, **kwargs)

    env.monkeypatch.setattr(Path, "write_text", write_text)
    return env.run()


@case("nan_loss_aborts", 1, "non-finite loss at source step 2: poison=nan")
def _(env: Env) -> list[str]:
    return env.run("~model", "method={name: nan_probe, nan_at: 1}")


# --------------------------------------------------------------------------- the tests


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


@pytest.fixture
def env(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Env:
    make_distribution(site, "fd_badinputs", "0.1", "fd_badinputs", DIST, {"badinputs": "fd_badinputs"})
    work = tmp_path / "work"
    work.mkdir()
    return Env(work, monkeypatch, capsys)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_matrix_is_large_enough() -> None:
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {1, 2}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, env: Env) -> None:
    argv = case.build(env)
    env.capsys.readouterr()
    before = _snapshot(env.tmp)
    fresh_run_dir = not env.run_dir.exists()

    rc = main(argv)
    out, err = env.capsys.readouterr()
    env.last_error = err

    assert rc == case.code, err
    lines = [ln for ln in err.strip().splitlines() if not LOG_LINE.match(ln)]
    assert len(lines) == 1, err
    assert lines[0].startswith("facedapt: error: ") and case.match in lines[0], lines[0]
    assert "Traceback" not in out + err
    after = _snapshot(env.tmp)
    for name, digest in before.items():
        if name not in case.may_change:
            assert after.get(name) == digest, f"{name} was changed or removed"
    if case.check is not None:
        case.check(env)
    if fresh_run_dir and case.code == 2:  # a usage or data error trains nothing
        assert not (env.run_dir / "results.json").exists() and not (env.run_dir / "source" / "model.pt").exists()


def test_debug_shows_the_traceback(env: Env) -> None:
    with pytest.raises(DataError, match="kdef root not found"):
        main(["--debug", *env.run(f"data.dataset={{name: kdef, root: {env.tmp / 'nope'}}}")])
