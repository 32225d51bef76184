"""Data-parallel training: 2 CPU processes under torchrun (gloo, one thread each) against one
process at the same global batch; resume under DDP; mixed precision and gradient reversal.

Normalization: every network of the recipe below runs without batch norm (backbone, encoders,
discriminators, decoder: ``norm: none``) and without dropout, and pada's partners are drawn
for the whole batch (``partner_fraction: 1``). With those, a step's loss over the global batch
is exactly the mean of the two ranks' losses over their halves, so averaged gradients equal
the single-process gradients up to float summation order. Batch norm would normalize each
rank's half with its own statistics, which is a different (if equally valid) computation.

Tolerance: max |difference| of every final weight < 1e-5 (fp32, 6 source + 6 adaptation steps
of Adam); measured on a 2-core CPU: 1.1e-6. Resume under DDP reproduces the uninterrupted DDP
run exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PADA, ROOT, TOY, make_distribution, model_state

from facedapt.data.batches import EndlessSampler
from facedapt.engine import distributed
from facedapt.errors import UsageError

TOLERANCE = 1e-5

#: The toy recipe with pada's whole graph (GRL, discriminators, cross terms, reconstruction)
#: and no normalization that depends on the per-rank batch.
DDP = (*TOY, "method={name: pada, partner_fraction: 1.0}", "data.target_subjects=[T00]",
       "model.backbone={name: convnet, width: 8, norm: none}", "model.pose_backbone={name: convnet, width: 8, norm: none}",
       "model.expression_encoder={name: mlp, norm: none}", "model.pose_encoder={name: mlp, norm: none}",
       "model.expression_discriminator={name: mlp, norm: none, dropout: 0.0}",
       "model.pose_discriminator={name: mlp, norm: none, dropout: 0.0}",
       "model.decoder={name: conv, norm: none}",
       "train.source_steps=6", "train.steps=6", "train.batch_size=8", "train.log_every=1",
       "eval.leakage_probe=false")

#: The toy dataset, plus a step hook that ends the process at FDDDP_CRASH ("phase:step").
TOY_DIST = """
import os

from facedapt import hookimpl
from toy_plugin import ToyFaces, facedapt_register_datasets


@hookimpl
def facedapt_on_step_end(run, step, metrics):
    if os.environ.get("FDDDP_CRASH") == f"{run.phase}:{step}":
        os._exit(3)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_distribution(tmp_path_factory.mktemp("site"), "fd_toy", "0.1", "fd_toy", TOY_DIST, {"toy": "fd_toy"})


def _env(site: Path, cache: Path, crash: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT") and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", FACEDAPT_CACHE=str(cache), FDDDP_CRASH=crash)
    return env


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _launch(site: Path, cache: Path, run_dir: Path, *extra: str, procs: int = 2, crash: str = "",
            check: bool = True) -> subprocess.CompletedProcess:
    args = ["-m", "facedapt", "-q", "run", str(PADA), *DDP, *extra, "--run-dir", str(run_dir), "--no-report"]
    if procs > 1:
        cmd = [*_torchrun(), f"--nproc_per_node={procs}", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               *args]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, env=_env(site, cache, crash), capture_output=True, text=True, timeout=400, check=False)
    assert not check or proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name, tensors in a.items():
        assert tensors.keys() == b[name].keys(), name
        for key, t in tensors.items():
            if t.is_floating_point():
                worst = max(worst, float((t - b[name][key]).abs().max()) if t.numel() else 0.0)
            else:
                assert torch.equal(t, b[name][key]), f"{name}.{key}"
    return worst


@pytest.fixture(scope="module")
def runs(site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ddp")
    cache = base / "cache"
    _launch(site, cache, base / "single", procs=1)
    _launch(site, cache, base / "ddp", procs=2)
    return base / "single", base / "ddp"


def test_two_processes_match_one_at_the_same_global_batch(runs: tuple[Path, Path]) -> None:
    single, ddp = runs
    for rel in ("source/model.pt", "subjects/T00/model.pt"):
        diff = max_difference(model_state(single / rel), model_state(ddp / rel))
        print(f"{rel}: max |single - ddp| = {diff:.3g}")
        assert diff < TOLERANCE, f"{rel}: {diff}"
    # The gradient-reversal counter (a buffer) advanced once per step on every rank.
    grl = model_state(ddp / "subjects/T00/model.pt")["grl"]["num_steps"]
    assert int(grl) == 6
    # Logged losses are the global batch's: the same as one process's, to float precision.
    a, b = ([json.loads(ln) for ln in (d / "source" / "metrics.jsonl").read_text().splitlines()] for d in runs)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-4)


def test_only_rank_zero_writes(runs: tuple[Path, Path]) -> None:
    _, ddp = runs
    results = json.loads((ddp / "results.json").read_text())
    assert results["world_size"] == 2 and set(results["per_subject"]) == {"T00"}
    # One writer: each step logged once, one log file.
    lines = (ddp / "source" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert (ddp / "log.txt").read_text().count("source training:") == 1


def test_resume_under_ddp_continues_the_run(runs: tuple[Path, Path], site: Path, tmp_path: Path) -> None:
    """A DDP run that crashes in adaptation step 5 (rank 0 dies, torchrun ends rank 1) resumes
    under DDP from its step-3 checkpoint to the weights of the uninterrupted DDP run."""
    _, ddp = runs
    run_dir = tmp_path / "run"
    extra = ("train.checkpoint_every=3",)
    crashed = _launch(site, tmp_path / "cache", run_dir, *extra, crash="adapt:5", check=False)
    assert crashed.returncode != 0
    tdir = run_dir / "subjects" / "T00"
    assert [p.name for p in tdir.glob("ckpt-*.pt")] == ["ckpt-0000003.pt"] and not (tdir / "results.json").exists()
    ckpt = torch.load(tdir / "ckpt-0000003.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["rng_ranks"]) == 2  # each rank's random state, restored per rank
    _launch(site, tmp_path / "cache", run_dir, *extra, "--resume")
    steps = [json.loads(ln)["step"] for ln in (tdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # steps after the checkpoint were redone, none twice
    for rel in ("source/model.pt", "subjects/T00/model.pt"):
        diff = max_difference(model_state(run_dir / rel), model_state(ddp / rel))
        print(f"resumed {rel}: max |uninterrupted - resumed| = {diff:.3g}")
        assert diff < TOLERANCE


# --------------------------------------------------------------------------- sampling


def test_ranks_take_contiguous_slices_of_the_same_global_batch() -> None:
    idx = torch.arange(10, 30)
    one = EndlessSampler(idx, 8, seed=3)
    ranks = [EndlessSampler(idx, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(7):  # across epoch boundaries
        glob = one.next()
        parts = [s.next() for s in ranks]
        assert torch.equal(torch.cat(parts), glob)
    assert ranks[1].state_dict() == one.state_dict()


def test_global_batch_must_divide_by_the_processes() -> None:
    with pytest.raises(UsageError, match="not divisible by the 3 processes"):
        EndlessSampler(torch.arange(10), 8, seed=0, rank=0, world_size=3)


def test_environment_from_torchrun_and_slurm() -> None:
    env = distributed.read_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                                "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == (
        3, 4, 1, "n1", 1234, "torchrun")
    env = distributed.read_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                                "SLURM_JOB_NODELIST": "gpu[03-05,09]", "SLURM_JOB_ID": "777"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (5, 8, 1, "gpu03", "slurm")
    assert distributed.read_env({}).world_size == 1
    assert distributed.read_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1
    assert distributed.first_host("node7,node8") == "node7"


def test_single_process_helpers_are_no_ops() -> None:
    assert not distributed.is_distributed() and distributed.is_main()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.init(torch.device("cpu")) == torch.device("cpu")


# --------------------------------------------------------------------------- precision


def _grl_grads(dtype: torch.dtype | None, coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient w.r.t. the input of a linear layer -> GRL -> linear layer -> sum, with and
    without the reversal."""
    from facedapt_plugins.layers import GradientReversalLayer

    torch.manual_seed(0)
    x = torch.randn(16, 32)
    first, second = torch.nn.Linear(32, 32), torch.nn.Linear(32, 4)
    grl = GradientReversalLayer(max_lambda=coeff, schedule="fixed")
    out = []
    for reverse in (True, False):
        xi = x.clone().requires_grad_(True)
        ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
        with ctx:
            h = first(xi)
            y = second(grl(h) if reverse else h)
        y.float().square().sum().backward()
        out.append(xi.grad.float())
    return out[0], out[1]


@pytest.mark.parametrize("coeff", [1.0, 0.3])
def test_gradient_reversal_keeps_sign_and_scale_under_bf16_autocast(coeff: float) -> None:
    reversed_bf16, plain_bf16 = _grl_grads(torch.bfloat16, coeff)
    reversed_fp32, _ = _grl_grads(None, coeff)
    # Sign and scale: exactly -coeff times the unreversed gradient in the same precision ...
    assert torch.allclose(reversed_bf16, -coeff * plain_bf16, rtol=1e-2, atol=1e-2)
    # ... and the fp32 reversed gradient to bf16 accuracy (8 bits of mantissa).
    scale = reversed_fp32.abs().max()
    assert float((reversed_bf16 - reversed_fp32).abs().max()) < 0.05 * float(scale)
    assert float(torch.nn.functional.cosine_similarity(reversed_bf16.flatten(), reversed_fp32.flatten(), 0)) > 0.999


def test_gradient_reversal_with_fp16_grad_scaler() -> None:
    """fp16 with a gradient scaler: the scaler multiplies the loss, the reversal must still give
    exactly -coeff times the plain gradient once unscaled."""
    if not hasattr(torch.amp, "GradScaler"):
        pytest.skip("this torch has no device-generic torch.amp.GradScaler")
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.Linear(2, 2)(torch.ones(1, 2))
    except (RuntimeError, ValueError, AssertionError) as exc:
        pytest.skip(f"fp16 autocast with a gradient scaler is not supported on this CPU build: {exc}")
    from facedapt_plugins.layers import GradientReversalLayer

    coeff = 0.5
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 1)
    grl = GradientReversalLayer(max_lambda=coeff, schedule="fixed")
    x = torch.randn(4, 8)
    grads = []
    for reverse in (True, False):
        lin.zero_grad()
        opt = torch.optim.SGD(lin.parameters(), lr=0.0)
        with torch.autocast("cpu", dtype=torch.float16):
            h = grl(lin(x)) if reverse else lin(x)
            loss = h.float().sum()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads.append(lin.weight.grad.clone())
        scaler.step(opt)
        scaler.update()
    assert torch.allclose(grads[0], -coeff * grads[1], rtol=1e-3, atol=1e-3)


def test_bf16_run_on_the_cpu(site: Path, tmp_path: Path) -> None:
    """The CPU bf16 path of the engine end to end (autocast around every method step)."""
    _launch(site, tmp_path / "cache", tmp_path / "bf16", "train.precision=bf16", "train.source_steps=2",
            "train.steps=2", procs=1)
    results = json.loads((tmp_path / "bf16" / "results.json").read_text())
    assert results["precision"] == "bf16" and 0.0 <= results["target_accuracy"] <= 1.0
