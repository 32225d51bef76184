"""A whole run: the protocol loop over targets (source training once per source set, then
adaptation and evaluation per target), lifecycle hooks, signals, and results.json.

What it builds comes from :mod:`facedapt.engine.build`, where its files go from
:mod:`facedapt.engine.rundir`, one training phase is :mod:`facedapt.engine.trainer`, and the
results.json schema is :mod:`facedapt.engine.results`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import torch
from loguru import logger
from torch import nn

from facedapt.data.batches import image_batches
from facedapt.data.splits import Domain, Target
from facedapt.engine import checkpoint, distributed, rundir
from facedapt.engine.build import (build_augmentations, build_info, build_method, load_matching, load_state,
                                   load_targets, model_state, to_device)
from facedapt.engine.evaluate import (
    cross_classifier_ce,
    fresh_probes,
    leakage,
    leakage_chance,
    predict_domain,
    predictions_with_features,
    score,
)
from facedapt.engine.features import save_features
from facedapt.engine.precision import autocast, pick_device, resolve_precision
from facedapt.engine.results import aggregate, summary_lines
from facedapt.engine.trainer import PhaseRunner, PhaseSpec, seed_of
from facedapt.errors import DataError
from facedapt.method import Method
from facedapt.plugin_manager import Plugins, get_plugins
from facedapt.recipe.load import LoadedRecipe, recipe_digest
from facedapt.recipe.schema import BUILT
from facedapt.recipe.validate import validate


@attrs.define(eq=False)
class Run:
    """What lifecycle hooks receive: the recipe, the run directory, where training is, the
    models, and the metrics logged so far."""

    recipe: Any
    resolved: dict[str, Any]
    run_dir: Path
    plugins: Plugins
    step: int = 0
    phase: str = ""
    target: str | None = None
    models: dict[str, nn.Module] = attrs.field(factory=dict)
    metrics: list[dict[str, Any]] = attrs.field(factory=list)
    #: Whether the report is written when the run ends (eval.report, or the command line's
    #: --report/--no-report); the built-in report plugin reads it.
    report: bool = True

    def stamp(self) -> dict[str, Any]:
        """What every checkpoint records about where it came from."""
        return {"recipe_digest": recipe_digest(self.resolved), "versions": rundir.versions(self.plugins)}


class Runner:
    def __init__(self, loaded: LoadedRecipe, run_dir: Path | None = None, resume: bool = False,
                 allow_changed: bool = False, plugins: Plugins | None = None, *, report: bool | None = None,
                 progress: bool | None = None) -> None:
        """``report``: write the report at the end (None: as the recipe's eval.report says);
        ``progress``: draw the progress line (None: on a terminal only)."""
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.report = self.recipe.eval.report if report is None else report
        self.progress = progress
        self.plugins = plugins or get_plugins(self.recipe.plugins.block)
        validate(loaded, self.plugins)
        # Under torchrun/SLURM: join the process group; this rank's device (cuda:<local rank>).
        self.device = distributed.init(pick_device(self.recipe.device))
        if resume:
            # Rank 0's choice everywhere (a default directory is named by the time).
            self.run_dir = distributed.broadcast_object(run_dir or rundir.newest_run_dir(self.recipe.name))
            rundir.check_resume(self.run_dir, loaded, allow_changed)
        else:
            self.run_dir = distributed.broadcast_object(run_dir or rundir.default_run_dir(self.recipe.name))
            rundir.check_new(self.run_dir)
        distributed.barrier()  # every rank checked before rank 0 writes the run directory
        self.precision = resolve_precision(self.recipe.train.precision, self.device)

    def amp(self) -> Any:
        return autocast(self.precision, self.device)

    # -- setup ------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        env = {"versions": rundir.versions(self.plugins), "device": str(self.device), "precision": self.precision,
               "plugins": {name: attrs.asdict(o) for name, o in self.plugins.origins.items()},
               "started": datetime.now().isoformat(timespec="seconds")}
        rundir.create(self.run_dir, self.loaded, env)

    # -- the run ----------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        started = time.perf_counter()
        main = distributed.is_main()  # only rank 0 writes files
        if main:
            self._prepare_dir()
        distributed.barrier()
        sink = logger.add(rundir.LogFile(self.run_dir / "log.txt"), level="INFO", enqueue=False, catch=False) if main else None
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        if self.recipe.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        previous = _install_stop_handlers(self)
        try:
            return self._execute(started)
        finally:
            _restore_handlers(previous)
            torch.use_deterministic_algorithms(was_deterministic)
            if sink is not None:
                logger.remove(sink)

    def _execute(self, started: float) -> dict[str, Any]:
        r = self.recipe
        torch.manual_seed(r.seed)
        t0 = time.perf_counter()
        targets, num_classes = load_targets(self.plugins, r)
        timing = {"data": time.perf_counter() - t0}
        first = targets[0].source
        method = build_method(self.plugins, r, len(first.samples.subject_ids), first.samples.image_shape, num_classes)
        self.build = build_info(len(first.samples.subject_ids), first.samples.image_shape, num_classes)
        to_device(method, self.device, r.train.channels_last)
        run = Run(r, self.loaded.resolved, self.run_dir, self.plugins, models=method.models, report=self.report)
        runner = PhaseRunner(r, self.plugins, method, self.device, self.precision, run,
                             build_augmentations(self.plugins, r), self.progress)
        self._phase_runner = runner
        main = distributed.is_main()
        if main:  # lifecycle hooks run on rank 0 only
            self.plugins.hook.facedapt_on_run_start(run=run)
        logger.info("run {} in {} on {} ({}), {} target(s)", r.name, self.run_dir, self.device, self.precision, len(targets))

        shared_source = len({t.source.digest() for t in targets}) == 1
        source_states: dict[str, dict] = {}
        per_subject, timing["source"], timing["adapt"] = {}, 0.0, 0.0
        for k, target in enumerate(targets):
            tdir = rundir.subject_dir(self.run_dir, target.id)
            done = tdir / "results.json"
            distributed.barrier()  # all ranks see the same done markers and source model
            if done.is_file():
                per_subject[target.id] = json.loads(done.read_text(encoding="utf-8"))
                logger.info("target {} already done; skipping", target.id)
                continue
            sdir = self.run_dir / "source" if shared_source else tdir / "source"
            key = target.source.digest()
            # Fresh probes during training, on the held-out source people of this target's source set.
            method.probe = (partial(fresh_probes, method, target.source_val, self.device, r.eval.batch_size, self.amp,
                                    r.eval.probe_steps, seed_of(r.seed, "probe"))
                            if r.eval.leakage_probe and target.source_val is not None else None)
            if key not in source_states:
                t0 = time.perf_counter()
                source_states[key] = self._source_model(runner, run, method, target, sdir)
                timing["source"] += time.perf_counter() - t0
            load_state(method, source_states[key])
            t0 = time.perf_counter()
            per_subject[target.id] = self._adapt_and_score(runner, run, method, target, tdir, k, num_classes)
            timing["adapt"] += time.perf_counter() - t0

        results = aggregate(per_subject, r, self.precision, num_classes)
        timing["total"] = time.perf_counter() - started
        results["timing"] = {**results.get("timing", {}), **{k: round(v, 3) for k, v in timing.items()}}
        results["world_size"] = distributed.world_size()
        if main:
            rundir.write_json(self.run_dir / "results.json", results)
            logger.info("{}; results in {}", summary_lines(results)[0], self.run_dir / "results.json")
            self.plugins.hook.facedapt_on_run_end(run=run, results=results)  # the report plugin among them
        distributed.barrier()  # results.json exists before any rank returns
        return results

    def _source_model(self, runner: PhaseRunner, run: Run, method: Method, target: Target, sdir: Path) -> dict:
        r = self.recipe
        final = sdir / "model.pt"
        if final.is_file():
            state = checkpoint.load(final, map_location=self.device)
            return state["models"]
        if r.train.init_from == BUILT:
            logger.info("source model: the models as built (from their weights files)")
        elif r.train.init_from:
            state = rundir.load_models_file(Path(r.train.init_from), self.device)
            trained_for = (state.get("build") or {}).get("num_classes")
            if r.train.source_steps == 0 and trained_for is not None and int(trained_for) != self.build["num_classes"]:
                raise DataError(f"{r.train.init_from}: its model was trained for {trained_for} expression classes but the "
                                f"data has {self.build['num_classes']}; with train.source_steps=0 it cannot be used")
            loaded, fresh = load_matching(method, state["models"])
            logger.info("source model from {}: {} tensors loaded, {} newly initialized{}", r.train.init_from, loaded,
                        len(fresh), f" ({', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''})" if fresh else "")
        sdir.mkdir(parents=True, exist_ok=True)
        run.phase, run.target = "source", None
        if r.train.source_steps > 0:
            spec = PhaseSpec("source", target.source, None, r.train.source_steps, sdir, seed_of("source", target.source.digest()))
            info = runner.run_phase(spec)
            logger.info("source training: {} steps in {:.1f}s", info["steps"], info["seconds"])
        models = model_state(method)
        if distributed.is_main():
            checkpoint.save({"models": models, "kind": "source", "method": r.method.name, "build": self.build,
                             **run.stamp()}, final)
            for old in checkpoint.periodic(sdir):
                old.unlink(missing_ok=True)
        return models

    def _adapt_and_score(self, runner: PhaseRunner, run: Run, method: Method, target: Target, tdir: Path, k: int,
                         num_classes: int) -> dict[str, Any]:
        r = self.recipe
        tdir.mkdir(parents=True, exist_ok=True)
        run.phase, run.target = "adapt", target.id
        t0 = time.perf_counter()
        adapt = target.adapt

        def target_batches() -> Iterator[torch.Tensor]:
            return image_batches(adapt.samples, adapt.indices, self.device, r.eval.batch_size)

        # Before: the source model as it is (source statistics), on the images that score the
        # adapted model, so every run says how much adaptation changed.
        before = score(target.evaluate, predict_domain(method, target.evaluate, self.device, r.eval.batch_size, self.amp,
                                                       domain_name="source")["pred"], self.plugins, ["accuracy"], num_classes)
        torch.manual_seed(seed_of(r.seed, "adapt", target.id))
        method.start_adaptation(target_batches)
        selected = None
        if method.adapts and r.train.steps > 0:
            select_on, select_domain = None, "source"
            if r.eval.selection == "source_val" and target.source_val is not None:
                select_on = target.source_val
            elif r.eval.selection == "oracle":
                select_on, select_domain = target.evaluate, "target"
            spec = PhaseSpec("adapt", target.source, adapt, r.train.steps, tdir, seed_of("adapt", target.id),
                             select_on, select_domain)
            info = runner.run_phase(spec)
            selected = info["selected_step"]
        seconds_adapt = time.perf_counter() - t0
        out = predictions_with_features(method, target.evaluate, self.device, r.eval.batch_size, self.amp)
        res = score(target.evaluate, out["pred"], self.plugins, r.eval.metrics, num_classes)
        main = distributed.is_main()
        if main:
            save_features(tdir / "features.pt", out, target.evaluate, seed_of(r.seed, "features", target.id))
        res["source_accuracy"], res["source_per_yaw"] = before["accuracy"], before["per_yaw"]
        res["gain"] = res["accuracy"] - before["accuracy"]
        res["selected_step"] = selected
        res["seconds"] = round(seconds_adapt, 3)
        # One pass over the labelled source images serves their accuracy and both probes.
        if target.source_val is not None or r.eval.leakage_probe:
            probe_dom = target.source_val if target.source_val is not None else _subset(target.source, 2000, r.seed)
            sv = predictions_with_features(method, probe_dom, self.device, r.eval.batch_size, self.amp, "source")
            if target.source_val is not None:
                true = probe_dom.samples.expression[probe_dom.indices]
                res["source_val_accuracy"] = float((sv["pred"] == true).float().mean())
            if r.eval.leakage_probe:
                res["leakage"] = leakage(sv, probe_dom, r.eval.probe_steps, seed_of(r.seed, "probe"))
                res["leakage_chance"] = leakage_chance(probe_dom)
                res["cross_classifier_ce"] = cross_classifier_ce(method, sv, probe_dom, self.device)
        res["training_probe"] = method.take_probe_log()
        if main:
            checkpoint.save({"models": model_state(method), "kind": "adapted", "target": target.id, "method": r.method.name,
                             "build": self.build, **run.stamp()}, tdir / "model.pt")
            rundir.write_json(tdir / "results.json", res)  # the done marker: written last
            for old in checkpoint.periodic(tdir):
                old.unlink(missing_ok=True)
            self.plugins.hook.facedapt_on_eval_end(run=run, results=res)
        if res["n"] == 0:
            logger.info("target {}: adapted on {} unlabelled images (no labels to score)", target.id, len(adapt))
        else:
            logger.info("target {}: accuracy {:.4f} (n={}), before adaptation {:.4f}, gain {:+.1f} points", target.id,
                        res["accuracy"], res["n"], before["accuracy"], 100 * res["gain"])
        return res


def _install_stop_handlers(runner: Runner) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the step loop to save a checkpoint and stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, _frame: Any) -> None:
        phase = getattr(runner, "_phase_runner", None)
        if phase is None:  # before training: nothing to save
            raise KeyboardInterrupt
        phase.stop_signal = signal.Signals(signum).name

    return {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


def _subset(domain: Domain, n: int, seed: int) -> Domain:
    if len(domain) <= n:
        return domain
    g = torch.Generator().manual_seed(seed)
    return Domain(domain.samples, domain.indices[torch.randperm(len(domain), generator=g)[:n]].sort().values)


def run(loaded: LoadedRecipe, *, run_dir: str | Path | None = None, resume: bool = False,
        allow_changed: bool = False, report: bool | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Run a loaded recipe; returns what results.json holds. Under torchrun or SLURM every
    process calls this; they train one model together and rank 0 writes the run directory.

    ``report`` overrides the recipe's eval.report; ``progress`` False keeps the progress line
    off a terminal (None: drawn on a terminal only)."""
    try:
        return Runner(loaded, Path(run_dir) if run_dir else None, resume, allow_changed, report=report,
                      progress=progress).execute()
    finally:
        distributed.shutdown()
