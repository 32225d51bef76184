"""What the speed benchmarks share: the engine's training step built as the engine builds it.

:func:`build_bench` goes through the same calls as ``facedapt.engine.run.Runner``: the recipe
with overrides, the plugins, the datasets and the protocol's split (``load_targets``),
``build_method``, the models moved to the device (channels_last where the recipe asks), a
``PhaseRunner`` and the phase's optimizers and ``StepContext``. :meth:`Bench.step` is the body
of ``PhaseRunner.run_phase``'s loop (begin the step, gather, partners, augmentation, target
batch, ``train_step``, end the step, schedulers), so timing it times the engine's step without
its logging.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import facedapt
from facedapt.data.batches import EndlessSampler, PartnerTable, gather, image_batches
from facedapt.data.splits import Target
from facedapt.engine.build import build_augmentations, build_method, load_targets, to_device
from facedapt.engine.context import StepContext
from facedapt.engine.precision import pick_device, resolve_precision
from facedapt.engine.run import Run
from facedapt.engine.trainer import PhaseRunner, seed_of
from facedapt.method import StepBatch
from facedapt.plugin_manager import Plugins, get_plugins

ROOT = Path(__file__).resolve().parents[1]

_DATA: dict[str, Any] = {}  # datasets and split -> (targets, num_classes): built once per process


def threads_from_env() -> int:
    """Intra-op threads: OMP_NUM_THREADS if set, else 1 (a shared 2-core machine spin-waits with 2)."""
    n = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(n)
    return n


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def maxrss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM where /proc has it: Linux carries ``getrusage``'s maxrss across exec, so a child
    forked from a big parent would report the parent's peak; VmHWM belongs to the child's own
    address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def recipe_overrides(precision: str, channels_last: bool, batch: int = 64, image_size: int = 64,
                     targets: int = 1, extra: list[str] | tuple[str, ...] = (), device: str = "cpu") -> list[str]:
    return [f"train.precision={precision}", f"train.channels_last={str(channels_last).lower()}",
            f"train.batch_size={batch}", f"data.target_subjects={{first: {targets}}}",
            f"data.dataset.image_size={image_size}", f"device={device}", *extra]


class Bench:
    """One method recipe at one precision and layout, ready to take training steps."""

    def __init__(self, recipe: str, overrides: list[str], plugins: Plugins | None = None,
                 phase: str | None = None) -> None:
        self.loaded = facedapt.load_recipe(str(ROOT / "recipes" / f"{recipe}.yaml"), overrides)
        r = self.recipe = self.loaded.recipe
        self.plugins = plugins or get_plugins(r.plugins.block)
        self.device = pick_device(r.device)
        self.precision = resolve_precision(r.train.precision, self.device)
        targets, num_classes = load_data(self.plugins, r)
        target: Target = targets[0]
        first = target.source
        torch.manual_seed(r.seed)
        self.method = build_method(self.plugins, r, len(first.samples.subject_ids), first.samples.image_shape,
                                   num_classes)
        to_device(self.method, self.device, r.train.channels_last)
        # The adaptation step (source + target batch) for methods that adapt; else the source step.
        self.phase = phase or ("adapt" if self.method.adapts else "source")
        run = Run(r, self.loaded.resolved, Path("."), self.plugins, models=self.method.models)
        run.phase, run.target = self.phase, (target.id if self.phase == "adapt" else None)
        self.runner = PhaseRunner(r, self.plugins, self.method, self.device, self.precision, run,
                                  build_augmentations(self.plugins, r))
        self.source = target.source
        self.target = target.adapt if self.phase == "adapt" else None
        t = r.train
        steps = t.steps if self.phase == "adapt" else t.source_steps
        self.optimizers, params, self.schedulers = self.runner._optimizers(self.phase)
        self.ctx = StepContext(self.optimizers, params, self.runner.amp, None, t.grad_clip, t.nan_policy,
                               max(steps, 1), self.phase)
        self.src_sampler = EndlessSampler(self.source.indices, t.batch_size, seed_of(r.seed, self.phase, "source"))
        self.tgt_sampler = (EndlessSampler(self.target.indices, t.target_batch_size or t.batch_size,
                                           seed_of(r.seed, self.phase, "target")) if self.target is not None else None)
        self.partners = PartnerTable(self.source.samples) if self.method.needs_partners else None
        self.partner_gen = torch.Generator().manual_seed(0)
        self.step_index = 0
        if self.phase == "adapt":
            self.method.start_adaptation(self._target_batches)
        self.method.train(True)

    @property
    def images_per_step(self) -> int:
        t = self.recipe.train
        return t.batch_size + ((t.target_batch_size or t.batch_size) if self.target is not None else 0)

    def _target_batches(self) -> Any:
        assert self.target is not None
        return image_batches(self.target.samples, self.target.indices, self.device, self.recipe.eval.batch_size)

    def batch(self) -> StepBatch:
        """The step's batches, gathered exactly as PhaseRunner.run_phase gathers them."""
        r, cl = self.recipe, self.recipe.train.channels_last
        gidx = self.src_sampler.next_global()
        sb = gather(self.source.samples, gidx, self.device, channels_last=cl)
        if self.partners is not None:
            sb.partner = gather(self.source.samples, self.partners.draw(gidx, self.partner_gen), self.device,
                                channels_last=cl)
        sb = self.runner._augment(sb, seed_of(r.seed, self.phase, self.step_index, "aug"))
        tb = None
        if self.tgt_sampler is not None and self.target is not None:
            uses = self.method.uses_target_labels
            tb = gather(self.target.samples, self.tgt_sampler.next(), self.device, labels=uses,
                        pose=uses or r.data.use_target_pose, landmarks=uses or r.data.use_target_landmarks,
                        channels_last=cl)
            if r.data.augment_target:
                tb = self.runner._augment(tb, seed_of(r.seed, self.phase, self.step_index, "aug-t"))
        return StepBatch(sb, tb)

    def step(self) -> dict[str, torch.Tensor]:
        """One iteration of the engine's loop; returns the step's losses."""
        self.ctx.begin_step(self.step_index)
        losses = self.method.train_step(self.batch(), self.ctx)
        self.ctx.end_step()
        for sched in self.schedulers:
            sched.step()
        self.step_index += 1
        return losses


def load_data(plugins: Plugins, r: Any) -> tuple[list[Target], int]:
    """Targets and class count as the runner makes them (facedapt.engine.build.load_targets),
    memoized per dataset and split."""
    d = r.data
    key = repr((d.dataset, d.target_dataset, d.protocol, d.target_subjects, d.target_holdout, d.source_val,
                d.on_bad_image, r.seed))
    if key not in _DATA:
        _DATA[key] = load_targets(plugins, r)
    return _DATA[key]


def timed_steps(bench: Bench, n: int) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of ``n`` steps. With one thread the CPU time is the step's
    work; the wall time adds what other jobs on the machine took from it."""
    # CUDA kernels run asynchronously: wait for the step's work before reading the clock.
    sync = torch.cuda.synchronize if bench.device.type == "cuda" else (lambda: None)
    out = []
    sync()
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        bench.step()
        sync()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def interleaved(benches: dict[str, Bench], rounds: int, steps: int, warmup: int = 2,
                progress: bool = True) -> dict[str, dict[str, float]]:
    """Per-step seconds of every bench, measured round-robin so that every configuration sees the
    same machine load; returns the median, quartiles and the load average per bench."""
    for b in benches.values():
        timed_steps(b, warmup)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in benches}
    loads: list[float] = []
    for i in range(rounds):
        for k, b in benches.items():
            times[k] += timed_steps(b, steps)
        loads.append(os.getloadavg()[0])
        if progress:
            print(f"  round {i + 1}/{rounds} done (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
    out = {}
    for k, pairs in times.items():
        ts = [w for w, _ in pairs]
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        med = statistics.median(ts)
        out[k] = {"step_s": round(med, 4), "q1_s": round(q[0], 4), "q3_s": round(q[2], 4), "n": len(ts),
                  "cpu_step_s": round(statistics.median(c for _, c in pairs), 4),
                  "img_per_s": round(benches[k].images_per_step / med, 1),
                  "images_per_step": benches[k].images_per_step}
    for v in out.values():
        v["load_avg_1min"] = round(statistics.median(loads), 2)
    return out


#: docs/benchmarks.md sections refreshed from the results files: marker -> (file, text when absent).
DOC_SECTIONS = {
    "speed": ("speed.md", "No speed results yet: run `python benchmarks/speed.py`."),
    "speed_gpu": ("speed-cuda.md", ("No GPU results yet: on a CUDA machine run "
                                    "`python benchmarks/speed.py --device cuda`.")),
    "warm_start": ("warm_start.md", "No warm-start results yet: run `python benchmarks/warm_start.py`."),
    "compare": ("compare.md", ("The comparison table appears here once `python benchmarks/compare.py` has written "
                              "benchmarks/results/compare.md (refresh with `python benchmarks/speed.py --docs-only`).")),
    "compare_pose_shift": ("compare-pose_shift.md", ("No pose-shift table yet: run "
                                                     "`python benchmarks/compare.py --protocol pose_shift`.")),
    "choose_defaults": ("choose_defaults.md", "No results yet: run `python benchmarks/choose_defaults.py`."),
    "choose_strategies": ("choose_strategies.md", "No results yet: run `python benchmarks/choose_strategies.py --round 1`."),
    "choose_strategies_round2": ("choose_strategies-round2.md",
                                 "No results yet: run `python benchmarks/choose_strategies.py --round 2`."),
    "choose_strategies_round3": ("choose_strategies-round3.md",
                                 "No results yet: run `python benchmarks/choose_strategies.py --round 3`."),
    "choose_strategies_round4": ("choose_strategies-round4-3seeds.md",
                                 "Not run yet: `python benchmarks/choose_strategies.py --round 4 --dev-seeds 3 --jobs 2`."),
    "main_job": ("main_job.md", "No results yet: run `python benchmarks/main_job.py`."),
    "strategies": ("strategies.md", "No results yet: run `python benchmarks/strategies.py`."),
}


def update_docs(page: Path = ROOT / "docs" / "benchmarks.md", results: Path = ROOT / "benchmarks" / "results") -> None:
    """Paste the latest results tables into the page, between ``<!-- name:start -->`` and
    ``<!-- name:end -->`` markers (the text around them is written by hand)."""
    text = page.read_text(encoding="utf-8")
    for name, (file, absent) in DOC_SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            continue
        src = results / file
        body = src.read_text(encoding="utf-8").strip() if src.is_file() else absent
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    page.write_text(text, encoding="utf-8")
