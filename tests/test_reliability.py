"""Reliability: exact resume after SIGKILL, SIGTERM/SIGINT, atomic checkpoints and
retention, safe checkpoint loading, numerical faults and no network at run time.

The kill tests run the real command line in subprocesses. A plugin distribution (written to a
temporary site folder) adds the toy dataset and a step hook that reports each logged step in
a marker file and, at a chosen step, waits there: the test kills the process only once the
marker says that step has been reached and that the checkpoint it resumes from is on disk.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import toy_plugin
from conftest import (
    PADA,
    ROOT,
    TOY,
    assert_same_models,
    make_distribution,
    model_state,
    run_toy,
    toy_recipe,
)
from torch import nn

from facedapt import hookimpl
from facedapt.engine import checkpoint
from facedapt.engine.run import Runner
from facedapt.errors import (
    CheckpointError,
    Interrupted,
    NumericalError,
    StorageError,
    UsageError,
)
from facedapt.method import Method
from facedapt.plugin_manager import Plugins, load_plugins
from facedapt.recipe.load import load_recipe

# --------------------------------------------------------------------------- subprocess runs

#: The toy dataset plus a step hook driven by environment variables (see ``_arm``).
RELIABILITY_DIST = '''
import os
import time
from pathlib import Path

from facedapt import hookimpl
from toy_plugin import ToyFaces, facedapt_register_datasets


def _report(marker, text):
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, marker)


@hookimpl
def facedapt_on_step_end(run, step, metrics):
    marker = os.environ.get("FDREL_MARKER")
    if not marker:
        return
    marker = Path(marker)
    _report(marker, f"{run.phase} {step}")
    if run.phase != os.environ["FDREL_PHASE"] or step != int(os.environ["FDREL_STEP"]):
        return
    phase_dir = run.run_dir / "source" if run.phase == "source" else run.run_dir / "subjects" / run.target
    need = phase_dir / os.environ["FDREL_NEED"]
    if not need.is_file():
        _report(marker, f"missing {need}")
        os._exit(3)
    _report(marker, f"ready {run.phase} {step}")
    go = Path(os.environ["FDREL_GO"]) if os.environ.get("FDREL_GO") else None
    deadline = time.monotonic() + 120  # never outlive a failed test
    while time.monotonic() < deadline:
        if go is not None and go.exists():
            return
        time.sleep(0.01)
    os._exit(4)
'''

#: Small, deterministic, with everything that carries state across steps: the GRL warm-up of
#: pada, Adam moments, a scheduler, source and target samplers and flip augmentation on both.
EXACT = (*TOY, "method={name: pada}", "data.target_subjects=[T00]", "data.augment=[{name: flip, p: 0.5}]",
         "data.augment_target=true", "train.source_steps=8", "train.steps=8", "train.checkpoint_every=3",
         "train.log_every=1", "train.deterministic=true", "eval.leakage_probe=false",
         "train.scheduler={name: torch.optim.lr_scheduler.StepLR, step_size: 3, gamma: 0.7}")


@pytest.fixture(scope="module")
def dist_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    return make_distribution(root, "fd_reliability", "0.1", "fd_reliability", RELIABILITY_DIST,
                             {"reliability": "fd_reliability"})


def _env(site: Path, **hook: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # the same intra-op threading in every run
    for key in [k for k in env if k.startswith("FDREL_")]:
        del env[key]
    env.update({f"FDREL_{k.upper()}": v for k, v in hook.items()})
    return env


def _cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "facedapt", "-q", "run", str(PADA), *EXACT, "--run-dir", str(run_dir), "--no-report",
            *extra]


def _run(site: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cli(run_dir, *extra), env=_env(site), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _start_and_wait(site: Path, run_dir: Path, marker: Path, **hook: str) -> subprocess.Popen:
    """Start a run that waits at hook['phase'] step hook['step']; return once it is there."""
    log = (run_dir.parent / f"{run_dir.name}.stderr").open("w")
    proc = subprocess.Popen(_cli(run_dir), env=_env(site, marker=str(marker), **hook), stdout=subprocess.DEVNULL,
                            stderr=log, text=True)
    deadline = time.monotonic() + 240
    try:
        while True:
            text = marker.read_text() if marker.exists() else ""
            if text.startswith("ready"):
                return proc
            if proc.poll() is not None or text.startswith("missing") or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"run did not reach {hook}: marker {text!r}, rc {proc.returncode}, "
                                     f"stderr {(run_dir.parent / f'{run_dir.name}.stderr').read_text()[-2000:]}")
            time.sleep(0.02)
    finally:
        log.close()


def _results(run_dir: Path) -> dict[str, Any]:
    out = json.loads((run_dir / "results.json").read_text())
    out.pop("timing")  # wall-clock seconds: the only thing allowed to differ
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    assert _results(a) == _results(b)
    for rel in ("source/model.pt", "subjects/T00/model.pt"):
        assert_same_models(model_state(a / rel), model_state(b / rel))
    sa, sb = (json.loads((d / "subjects" / "T00" / "results.json").read_text()) for d in (a, b))
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb


@pytest.fixture(scope="module")
def reference(dist_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every killed-and-resumed run must match bit for bit."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    _run(dist_site, run_dir)
    return run_dir


@pytest.mark.parametrize(("phase", "phase_dir"), [("source", "source"), ("adapt", "subjects/T00")])
def test_sigkill_then_resume_is_bitwise_exact(phase: str, phase_dir: str, dist_site: Path, reference: Path,
                                               tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Wait at step 7: ckpt-6 (the newest) is on disk, step 7 must be redone.
    proc = _start_and_wait(dist_site, run_dir, tmp_path / "marker", phase=phase, step="7", need="ckpt-0000006.pt")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    pdir = run_dir / phase_dir
    assert [p.name for p in checkpoint.periodic(pdir)] == ["ckpt-0000003.pt", "ckpt-0000006.pt"]
    assert not (pdir / ("model.pt" if phase == "source" else "results.json")).exists()
    assert not (run_dir / "results.json").exists()

    _run(dist_site, run_dir, "--resume")
    _assert_same_run(run_dir, reference)
    assert not checkpoint.periodic(pdir)  # finished phases drop their periodic checkpoints
    steps = [json.loads(ln)["step"] for ln in (pdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # step 7 redone after the resume, logged once


def test_sigterm_saves_checkpoint_and_says_how_to_resume(dist_site: Path, reference: Path, tmp_path: Path) -> None:
    run_dir, go = tmp_path / "run", tmp_path / "go"
    proc = _start_and_wait(dist_site, run_dir, tmp_path / "marker", phase="source", step="5",
                           need="ckpt-0000003.pt", go=str(go))
    proc.send_signal(signal.SIGTERM)
    go.write_text("go")
    assert proc.wait(timeout=120) == 130
    err = (tmp_path / "run.stderr").read_text()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("facedapt: error: stopped by SIGTERM at source step 5; checkpoint saved")
    assert f"--run-dir {run_dir} --resume" in lines[0] and "Traceback" not in err
    saved = checkpoint.load(run_dir / "source" / "ckpt-0000005.pt")
    assert saved["step"] == 5 and saved["phase"] == "source"
    _run(dist_site, run_dir, "--resume")
    _assert_same_run(run_dir, reference)


class SelfSignal:
    """Sends the process a signal at one step of one phase (the run's own handler receives it)."""

    def __init__(self, sig: signal.Signals, phase: str, step: int) -> None:
        self.sig, self.phase, self.step = sig, phase, step

    @hookimpl
    def facedapt_on_step_end(self, run: Any, step: int, metrics: dict[str, Any]) -> None:
        if run.phase == self.phase and step == self.step:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("phase", ["source", "adapt"])
def test_sigint_saves_checkpoint_and_resumes(phase: str, toy_plugins: Plugins, tmp_path: Path) -> None:
    overrides = (*SMALL, "train.source_steps=6", "train.steps=6", "train.checkpoint_every=4")
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        run_toy(load_plugins(extra=[toy_plugin, SelfSignal(signal.SIGINT, phase, 5)]), tmp_path / "run", *overrides)
    assert signal.getsignal(signal.SIGINT) is previous  # the run restores the handlers it replaced
    message = str(info.value)
    assert message.startswith(f"stopped by SIGINT at {phase} step 5; checkpoint saved") and "--resume" in message
    assert info.value.exit_code == 130
    pdir = tmp_path / "run" / ("source" if phase == "source" else "subjects/T00")
    assert [p.name for p in checkpoint.periodic(pdir)] == ["ckpt-0000004.pt", "ckpt-0000005.pt"]
    run_toy(toy_plugins, tmp_path / "run", *overrides, resume=True)
    assert (tmp_path / "run" / "subjects" / "T00" / "results.json").is_file() and not checkpoint.periodic(pdir)


# --------------------------------------------------------------------------- atomic saves, retention


class Stopper:
    """Stops the run like Ctrl-C at one source step."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def facedapt_on_step_end(self, run: Any, step: int, metrics: dict[str, Any]) -> None:
        if run.phase == "source" and step == self.step:
            raise KeyboardInterrupt


SMALL = ("data.target_subjects=[T00]", "train.steps=2", "eval.leakage_probe=false", "train.log_every=1")


def test_crash_during_save_keeps_previous_checkpoint(toy_plugins: Plugins, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_save, calls = torch.save, []

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "step" in obj:  # a periodic checkpoint (not, e.g., the dataset cache)
            calls.append(obj["step"])
        if calls and calls[-1] == 6 and len(calls) == 3:  # the third periodic checkpoint: half written, then the disk is full
            f.write(b"PK\x03\x04 partial checkpoint bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    overrides = (*SMALL, "train.source_steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=2")
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(StorageError, match=r"ckpt-0000006\.pt: cannot write the checkpoint \(No space left"):
        run_toy(toy_plugins, tmp_path / "run", *overrides)
    monkeypatch.setattr(torch, "save", real_save)

    source = tmp_path / "run" / "source"
    assert sorted(p.name for p in source.iterdir()) == ["ckpt-0000002.pt", "ckpt-0000004.pt", "metrics.jsonl"]
    assert checkpoint.load(source / "ckpt-0000004.pt")["step"] == 4
    # The resumed run finishes and equals one that never failed.
    run_toy(toy_plugins, tmp_path / "run", *overrides, resume=True)
    run_toy(toy_plugins, tmp_path / "clean", *overrides)
    assert_same_models(model_state(tmp_path / "run" / "source" / "model.pt"),
                       model_state(tmp_path / "clean" / "source" / "model.pt"))


def test_interrupted_write_leaves_no_file_at_the_final_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    checkpoint.save({"models": {"m": {"w": torch.ones(2)}}}, path)
    before = path.read_bytes()

    def crash(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"half")
        raise KeyboardInterrupt  # not an OSError: re-raised as it is

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"models": {"m": {"w": torch.zeros(2)}}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_checkpoints_keeps_the_newest_n(keep: int, tmp_path: Path) -> None:
    source = tmp_path / "run" / "source"
    source.mkdir(parents=True)
    stale = source / ".ckpt-0000001.pt.abc123"  # what a process killed while saving leaves
    stale.write_bytes(b"partial")
    with pytest.raises(KeyboardInterrupt):
        run_toy(load_plugins(extra=[toy_plugin, Stopper(8)]), tmp_path / "run", *SMALL, "train.source_steps=10",
                "train.checkpoint_every=1", f"train.keep_checkpoints={keep}")
    assert [p.name for p in checkpoint.periodic(source)] == [f"ckpt-{s:07d}.pt" for s in range(8 - keep, 8)]
    assert not stale.exists()


# --------------------------------------------------------------------------- what a checkpoint holds


def test_checkpoints_record_recipe_digest_and_versions(tmp_path: Path) -> None:
    loaded = toy_recipe(*SMALL, "train.source_steps=6", "train.checkpoint_every=2")
    with pytest.raises(KeyboardInterrupt):
        Runner(loaded, run_dir=tmp_path / "run", plugins=load_plugins(extra=[toy_plugin, Stopper(5)])).execute()
    ckpt = tmp_path / "run" / "source" / "ckpt-0000004.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain tensors and containers only
    assert state["recipe_digest"] == loaded.digest
    assert state["versions"]["torch"] == str(torch.__version__) and state["versions"]["facedapt"]
    assert {"models", "optimizers", "schedulers", "samplers", "rng", "partner_rng", "step"} <= set(state)
    assert checkpoint.load(ckpt)["step"] == 4


class _Pwn:
    """Unpickling this calls os.mkdir(target): code execution through a checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.target),))


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    target, evil = tmp_path / "pwned", tmp_path / "ckpt-0000002.pt"
    torch.save({"format": checkpoint.FORMAT, "step": 2, "models": _Pwn(target)}, evil)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        checkpoint.load(evil)
    assert not target.exists()
    assert "posix.mkdir" in str(info.value) and "weights_only" not in str(info.value)  # no advice to trust it
    # The file is a real threat: an unrestricted load runs its code.
    torch.load(evil, weights_only=False)
    assert target.is_dir()


def test_changed_recipe_lists_every_change(tmp_path: Path, toy_plugins: Plugins) -> None:
    run_toy(toy_plugins, tmp_path / "run", *SMALL, "train.source_steps=2")
    changed = [*SMALL, "train.source_steps=3", "seed=1", "train.batch_size=4", "train.steps=3", "eval.batch_size=8",
               "train.log_every=2", "eval.probe_steps=3", "model.backbone.width=4"]
    with pytest.raises(UsageError) as info:
        Runner(toy_recipe(*changed), run_dir=tmp_path / "run", resume=True, plugins=toy_plugins)
    message = str(info.value)
    assert "\n" not in message and "--allow-changed-recipe" in message
    assert "seed: 0 -> 1" in message and "; and 2 more" in message  # 8 changes: 6 shown, the rest counted


# --------------------------------------------------------------------------- numerical faults


class NanProbe(Method):
    """A linear classifier whose extra loss term ``poison`` is NaN at one step (0-based
    ``ctx.step``); records the gradient norm after every update."""

    adapts = False
    grad_norms: ClassVar[list[float]] = []

    def __init__(self, nan_at: int = -1, term: str = "poison") -> None:
        self.nan_at, self.term = nan_at, term

    def build(self, ctx: Any) -> dict[str, nn.Module]:
        c, h, w = ctx.image_shape
        return {"net": nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, ctx.num_classes))}

    def train_step(self, batch: Any, ctx: Any) -> dict[str, torch.Tensor]:
        logits = self.models["net"](batch.source.images)
        terms = {"expression": nn.functional.cross_entropy(logits, batch.source.expression),
                 self.term: logits.sum() * (float("nan") if ctx.step == self.nan_at else 0.0)}
        if ctx.update(sum(terms.values()), "main", terms):
            grads = [p.grad for p in self.models["net"].parameters()]
            NanProbe.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return {k: v.detach() for k, v in terms.items()}

    def predict(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor:
        return self.models["net"](images)

    def features(self, images: torch.Tensor, domain: str = "target") -> dict[str, torch.Tensor]:
        return {"expression": self.models["net"](images)}


class NanPlugin:
    @hookimpl
    def facedapt_register_methods(self, registry: Any) -> None:
        registry.register("nan_probe", NanProbe)


NAN = (*SMALL, "~model", "train.source_steps=6")


@pytest.fixture
def nan_plugins() -> Plugins:
    NanProbe.grad_norms = []
    return load_plugins(extra=[toy_plugin, NanPlugin()])


def test_nan_loss_aborts_naming_term_and_step(nan_plugins: Plugins, tmp_path: Path) -> None:
    with pytest.raises(NumericalError) as info:
        run_toy(nan_plugins, tmp_path / "run", *NAN, "method.nan_at=3", "method.term=poison", method="nan_probe")
    message = str(info.value)
    assert "non-finite loss at source step 4: poison=nan" in message and "expression" not in message
    assert "train.nan_policy=skip" in message
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "run" / "source" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # nothing logged for the failed step
    assert not (tmp_path / "run" / "source" / "model.pt").exists()


def test_nan_loss_skipped_under_skip_policy(nan_plugins: Plugins, tmp_path: Path) -> None:
    results = run_toy(nan_plugins, tmp_path / "run", *NAN, "method.nan_at=3", "train.nan_policy=skip",
                      method="nan_probe")
    records = [json.loads(ln) for ln in (tmp_path / "run" / "source" / "metrics.jsonl").read_text().splitlines()]
    # ctx.step counts completed steps; the step it fails in is logged as step ctx.step + 1.
    assert [(r["step"], r["skipped"]) for r in records] == [(1, False), (2, False), (3, False), (4, True),
                                                            (5, False), (6, False)]
    assert len(NanProbe.grad_norms) == 5  # the skipped step made no update
    assert all(torch.isfinite(t).all() for t in model_state(tmp_path / "run" / "source" / "model.pt")["net"].values())
    assert 0.0 <= results["target_accuracy"] <= 1.0


def test_grad_clip_bounds_the_gradient_norm(nan_plugins: Plugins, tmp_path: Path) -> None:
    run_toy(nan_plugins, tmp_path / "free", *NAN, method="nan_probe")
    free = list(NanProbe.grad_norms)
    assert min(free) > 0.01  # so that the clip below really cuts
    NanProbe.grad_norms.clear()
    run_toy(nan_plugins, tmp_path / "clipped", *NAN, "train.grad_clip=0.01", method="nan_probe")
    assert len(NanProbe.grad_norms) == 6 and max(NanProbe.grad_norms) <= 0.01 * (1 + 1e-4)


# --------------------------------------------------------------------------- no network


def test_default_recipe_runs_with_sockets_blocked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError(errno.ENETUNREACH, "network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = load_recipe(PADA, ["data.dataset={name: synthetic, preset: tiny}", "train.source_steps=4", "train.steps=2",
                                "train.batch_size=8", "data.target_subjects={first: 1}", "eval.leakage_probe=false"])
    results = Runner(loaded, run_dir=tmp_path / "run").execute()
    assert len(results["per_subject"]) == 1 and 0.0 <= results["target_accuracy"] <= 1.0
    assert attempts == []
