"""One training phase: source training, or adaptation to one target.

The loop owns samplers, gathering, on-device augmentation (isolated from the training RNG
stream), optimizers and schedulers, logging, periodic checkpoints and model selection; the
method owns the step's forward graph and update rule.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from loguru import logger

from facedapt.data.batches import EndlessSampler, PartnerTable, balanced_weights, gather
from facedapt.data.splits import Domain
from facedapt.engine import checkpoint, distributed
from facedapt.engine.build import load_state, model_state
from facedapt.engine.context import StepContext
from facedapt.engine.evaluate import predict_domain
from facedapt.engine.precision import autocast
from facedapt.engine.progress import Progress
from facedapt.errors import CheckpointError, Interrupted, StorageError
from facedapt.method import Batch, Method, StepBatch
from facedapt.plugin_manager import Plugins
from facedapt.recipe.schema import Component, Recipe
from facedapt.registry import import_dotted


@attrs.define
class PhaseSpec:
    phase: str  # "source" | "adapt"
    source: Domain
    target: Domain | None
    steps: int
    directory: Path
    seed: int
    select_on: Domain | None = None  # scored every eval_every steps for model selection
    select_domain: str = "source"


def seed_of(*parts: Any) -> int:
    """A stable 31-bit seed from parts (str hash is salted per process; this is not)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


class PhaseRunner:
    def __init__(self, recipe: Recipe, plugins: Plugins, method: Method, device: torch.device, precision: str,
                 run: Any, augmentations: list[Any], progress: bool | None = None) -> None:
        self.recipe = recipe
        self.plugins = plugins
        self.method = method
        self.device = device
        self.precision = precision
        self.run = run
        self.augmentations = augmentations
        self.progress = Progress(enabled=progress)  # None: on a terminal only
        self.stop_signal: str | None = None  # set by a signal handler; the loop saves and stops

    def amp(self) -> Any:
        """The run's autocast context (a fresh one per use)."""
        return autocast(self.precision, self.device)

    # -- optimizers -----------------------------------------------------------------
    def _optimizers(self, phase: str) -> tuple[dict[str, torch.optim.Optimizer], dict[str, list], list]:
        t = self.recipe.train
        base = t.adapt_optimizer if (phase == "adapt" and t.adapt_optimizer is not None) else t.optimizer
        optimizers, params, schedulers = {}, {}, []
        for group, names in self.method.optimizer_groups().items():
            ps = self.method.trainable_parameters(names, phase)
            if not ps:
                continue
            comp: Component = t.group_optimizers.get(group, base)
            opt = import_dotted(comp.name, key="train.optimizer", file=None)(ps, **comp.kwargs)
            optimizers[group], params[group] = opt, ps
            if t.scheduler is not None:
                schedulers.append(import_dotted(t.scheduler.name, key="train.scheduler", file=None)(opt, **t.scheduler.kwargs))
        return optimizers, params, schedulers

    def _augment(self, batch: Batch, seed: int) -> Batch:
        if not self.augmentations:
            return batch
        devices = [self.device] if self.device.type == "cuda" else []
        # Kornia draws from the global generator: fork it so training randomness is unchanged.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for aug in self.augmentations:
                batch = aug(batch)
        return batch

    # -- the loop -------------------------------------------------------------------
    def run_phase(self, spec: PhaseSpec) -> dict[str, Any]:
        r, t = self.recipe, self.recipe.train
        method, device = self.method, self.device
        optimizers, params, schedulers = self._optimizers(spec.phase)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        ctx = StepContext(optimizers, params, self.amp, scaler, t.grad_clip, t.nan_policy, spec.steps, spec.phase)

        src = spec.source
        weights = balanced_weights(src.samples, src.indices) if r.data.sampler == "balanced" else None
        # Batch sizes are global: every rank draws the same global batch and takes its slice.
        rank, world = distributed.rank(), distributed.world_size()
        main = rank == 0
        src_sampler = EndlessSampler(src.indices, t.batch_size, seed_of(r.seed, spec.phase, "source", spec.seed), weights,
                                     rank, world)
        tgt_sampler = None
        if spec.target is not None:
            tgt_sampler = EndlessSampler(spec.target.indices, t.target_batch_size or t.batch_size,
                                         seed_of(r.seed, spec.phase, "target", spec.seed), None, rank, world)
        partners = PartnerTable(src.samples) if method.needs_partners else None
        target_partners = None
        if method.needs_target_partners and spec.target is not None:
            target_partners = PartnerTable(spec.target.samples, spec.target.indices)
        partner_gen = torch.Generator()

        step, best, history = 0, None, []
        latest = checkpoint.periodic(spec.directory)
        if latest:
            try:
                state = checkpoint.load(latest[-1], map_location=device)
            except CheckpointError as exc:
                if len(latest) < 2:
                    raise
                raise CheckpointError(f"{exc}; the one before it, {latest[-2].name}, is kept: delete "
                                      f"{latest[-1].name} to resume from there") from None
            self._restore(state, optimizers, schedulers, scaler, src_sampler, tgt_sampler)
            step, best, history = int(state["step"]), state.get("best"), list(state.get("history", []))
            partner_gen.set_state(state["partner_rng"])
            if main:
                _truncate_metrics(spec.directory / "metrics.jsonl", step)  # steps after it are redone
            logger.info("resumed {} at step {} from {}", spec.phase, step, latest[-1])
        else:
            # Rank 0 keeps the single-process stream; the others get their own (dropout masks
            # must not repeat across ranks). Model weights are rank 0's on every rank.
            torch.manual_seed(seed_of(r.seed, spec.phase, "init", spec.seed, *([rank] if rank else [])))
            partner_gen.manual_seed(seed_of(r.seed, "partners", spec.seed))
            distributed.broadcast_state(method.models.values())

        metrics_file = (spec.directory / "metrics.jsonl").open("a", encoding="utf-8") if main else None
        labels_on_target = method.uses_target_labels
        started = time.perf_counter()
        method.train(True)
        label = spec.phase if self.run.target is None else f"{spec.phase} {self.run.target}"
        self.progress.start(label, spec.steps, step)
        try:
            while step < spec.steps:
                ctx.begin_step(step)
                gidx = src_sampler.next_global()
                idx = src_sampler.shard(gidx)
                sb = gather(src.samples, idx, device, channels_last=t.channels_last)
                if partners is not None:  # drawn for the global batch: the same partners as one process
                    pidx = src_sampler.shard(partners.draw(gidx, partner_gen))
                    sb.partner = gather(src.samples, pidx, device, channels_last=t.channels_last)
                sb = self._augment(sb, seed_of(r.seed, spec.phase, spec.seed, step, "aug", *([rank] if rank else [])))
                tb = None
                if tgt_sampler is not None and spec.target is not None:
                    tgidx = tgt_sampler.next_global()
                    shown = dict(labels=labels_on_target, pose=labels_on_target or r.data.use_target_pose,
                                 landmarks=labels_on_target or r.data.use_target_landmarks, channels_last=t.channels_last)
                    tb = gather(spec.target.samples, tgt_sampler.shard(tgidx), device, **shown)
                    if target_partners is not None:  # the same labels hidden as for the target batch
                        tpidx = tgt_sampler.shard(target_partners.draw(tgidx, partner_gen))
                        tb.partner = gather(spec.target.samples, tpidx, device, **shown)
                    if r.data.augment_target:
                        tb = self._augment(tb, seed_of(r.seed, spec.phase, spec.seed, step, "aug-t",
                                                       *([rank] if rank else [])))
                losses = method.train_step(StepBatch(sb, tb), ctx)
                ctx.end_step()
                for sched in schedulers:
                    sched.step()
                step += 1
                self.run.step = step
                self.progress.update(step)
                if step % max(1, t.log_every) == 0 or step == spec.steps:
                    # Losses stay on the device between log steps: no per-step host sync.
                    if world > 1 and losses:  # the logged loss is the global batch's: mean over ranks
                        mean = distributed.average(torch.stack([v.detach().float().reshape(()) for v in losses.values()]))
                        losses = dict(zip(losses, mean.unbind()))
                    rec = {"phase": spec.phase, "target": self.run.target, "step": step,
                           "skipped": ctx.skipped, **{k: round(float(v), 6) for k, v in losses.items()}}
                    history.append(rec)
                    if main:  # only rank 0 writes and runs the lifecycle hooks
                        assert metrics_file is not None
                        try:
                            metrics_file.write(json.dumps(rec) + "\n")
                            metrics_file.flush()
                        except OSError as exc:  # disk full: one line naming the file
                            raise StorageError(f"{metrics_file.name}: cannot write ({exc.strerror or exc})") from exc
                        self.run.metrics.append(rec)
                        self.progress.note(" ".join(f"{k}={v:.3f}" for k, v in rec.items() if isinstance(v, float)))
                        self.plugins.hook.facedapt_on_step_end(run=self.run, step=step, metrics=rec)
                if spec.select_on is not None and t.eval_every and step % t.eval_every == 0 and step < spec.steps:
                    best = self._select(spec, best, step)
                    method.train(True)
                if t.checkpoint_every and step % t.checkpoint_every == 0 and step < spec.steps:
                    self._save(spec, step, optimizers, schedulers, scaler, src_sampler, tgt_sampler, best, history, partner_gen)
                # A signal may reach the ranks a step apart: agree, so that all stop at this step.
                stop = distributed.any_true(self.stop_signal is not None, device) if world > 1 else self.stop_signal is not None
                if stop and step < spec.steps:
                    self._save(spec, step, optimizers, schedulers, scaler, src_sampler, tgt_sampler, best, history, partner_gen)
                    raise Interrupted(f"stopped by {self.stop_signal or 'a signal'} at {spec.phase} step {step}; checkpoint saved. "
                                      f"Resume with: facedapt run {self.run.run_dir / 'recipe.yaml'} "
                                      f"--run-dir {self.run.run_dir} --resume")
        finally:
            if metrics_file is not None:
                try:
                    metrics_file.close()
                except OSError:  # its last flush failed: reported above, and must not hide that report
                    pass
            self.progress.finish()
        # Batch-norm statistics are updated per rank from its slice: evaluate and save rank 0's.
        distributed.broadcast_state(method.models.values(), buffers_only=True)
        if spec.select_on is not None:
            best = self._select(spec, best, step)
            if best is not None and best["step"] != step:
                load_state(method, best["models"])
                logger.info("{} selection kept step {} (score {:.4f})", r.eval.selection, best["step"], best["score"])
        seconds = time.perf_counter() - started
        return {"steps": step, "seconds": seconds, "selected_step": best["step"] if best else step}

    def _select(self, spec: PhaseSpec, best: dict | None, step: int) -> dict | None:
        assert spec.select_on is not None
        distributed.broadcast_state(self.method.models.values(), buffers_only=True)
        dom = spec.select_on
        out = predict_domain(self.method, dom, self.device, self.recipe.eval.batch_size,
                             self.amp, domain_name=spec.select_domain)
        true = dom.samples.expression[dom.indices]
        score = float((out["pred"] == true).float().mean())
        if best is None or score > best["score"]:
            return {"step": step, "score": score, "models": model_state(self.method)}
        return best

    def _save(self, spec: PhaseSpec, step: int, optimizers: dict, schedulers: list, scaler: Any,
              src_sampler: EndlessSampler, tgt_sampler: EndlessSampler | None, best: Any, history: list,
              partner_gen: torch.Generator) -> None:
        # Every rank calls this (the RNG states are gathered); only rank 0 writes.
        rng = checkpoint.rng_state()
        rng_ranks = distributed.gather_objects(rng) if distributed.is_distributed() else []
        if not distributed.is_main():
            return
        state = {
            "phase": spec.phase,
            "target": self.run.target or "",
            "step": step,
            "models": model_state(self.method),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": [s.state_dict() for s in schedulers],
            "scaler": scaler.state_dict() if scaler is not None else {},
            "samplers": {"source": src_sampler.state_dict(), "target": tgt_sampler.state_dict() if tgt_sampler else {}},
            "rng": rng,
            "rng_ranks": rng_ranks,
            "partner_rng": partner_gen.get_state(),
            "best": best,
            "history": history,
            **self.run.stamp(),
        }
        checkpoint.save(state, spec.directory / f"ckpt-{step:07d}.pt")
        checkpoint.prune(spec.directory, self.recipe.train.keep_checkpoints)

    def _restore(self, state: dict, optimizers: dict, schedulers: list, scaler: Any, src_sampler: EndlessSampler,
                 tgt_sampler: EndlessSampler | None) -> None:
        load_state(self.method, state["models"])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for s, sd in zip(schedulers, state["schedulers"]):
            s.load_state_dict(sd)
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        src_sampler.load_state_dict(state["samplers"]["source"])
        if tgt_sampler is not None:
            tgt_sampler.load_state_dict(state["samplers"]["target"])
        ranks = state.get("rng_ranks") or []
        rank = distributed.rank()
        checkpoint.set_rng_state(ranks[rank] if len(ranks) == distributed.world_size() else state["rng"])


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(f"{ln}\n" for ln in kept), encoding="utf-8")
