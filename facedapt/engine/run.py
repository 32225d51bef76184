"""A whole run: data, protocol, source training once per source set, adaptation and
evaluation per target, results.json.

Directory layout::

    <run_dir>/recipe.yaml        the resolved recipe: running it again reproduces the run
    <run_dir>/environment.json   python, torch and plugin distribution versions
    <run_dir>/log.txt, metrics.jsonl per phase, results.json
    <run_dir>/report.md, report.html, report/*.png   built from the files above (facedapt.report)
    <run_dir>/source/            source model (model.pt), periodic ckpt-*.pt
    <run_dir>/subjects/<id>/     per target: model.pt, results.json (its done marker), ckpt-*.pt,
                                 features.pt (2-D projection of expression features, for the report)
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from loguru import logger
from torch import nn

import facedapt
from facedapt.data.samples import NUM_POSE_BINS, Samples
from facedapt.data.splits import Domain, SplitRequest, Target
from facedapt.data.store import materialize
from facedapt.engine import checkpoint, distributed
from facedapt.engine.context import BuildContext
from facedapt.engine.evaluate import leakage, predict_domain, score
from facedapt.engine.precision import autocast, pick_device, resolve_precision
from facedapt.engine.results import aggregate, summary_lines
from facedapt.engine.trainer import PhaseRunner, PhaseSpec, seed_of
from facedapt.errors import CheckpointError, DataError, StorageError, UsageError
from facedapt.method import Method
from facedapt.plugin_manager import Plugins, get_plugins
from facedapt.recipe.load import LoadedRecipe, recipe_digest, write_resolved
from facedapt.recipe.schema import Component
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

    def stamp(self) -> dict[str, Any]:
        """What every checkpoint records about where it came from."""
        return {"recipe_digest": recipe_digest(self.resolved), "versions": versions(self.plugins)}


def versions(plugins: Plugins) -> dict[str, str]:
    return {"python": platform.python_version(), "torch": str(torch.__version__), "facedapt": facedapt.__version__,
            **{f"plugin:{k}": v for k, v in plugins.distributions().items()}}


def default_run_dir(name: str) -> Path:
    return Path("runs") / name / datetime.now().strftime("%Y%m%d-%H%M%S")


def newest_run_dir(name: str) -> Path:
    base = Path("runs") / name
    found = sorted(p for p in base.glob("*") if (p / "recipe.yaml").is_file()) if base.is_dir() else []
    if not found:
        raise UsageError(f"--resume: no earlier run of recipe {name!r} under {base} (give --run-dir)")
    return found[-1]


def _check_resume(run_dir: Path, loaded: LoadedRecipe, allow_changed: bool) -> None:
    old_file = run_dir / "recipe.yaml"
    if not old_file.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no recipe.yaml) to resume")
    old = yaml.safe_load(old_file.read_text(encoding="utf-8")) or {}
    changes = _diff(old, loaded.resolved)
    if changes and not allow_changed:
        more = f"; and {len(changes) - 6} more" if len(changes) > 6 else ""
        raise UsageError(f"{old_file}: the recipe changed since this run started ({'; '.join(changes[:6])}{more}); "
                         "resume with --allow-changed-recipe to continue anyway")


def _diff(a: Any, b: Any, key: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<unset>"), b.get(k, "<unset>"), f"{key}.{k}" if key else str(k))
        return out
    return [] if a == b else [f"{key}: {a!r} -> {b!r}"]


def build_method(plugins: Plugins, recipe: Any, num_subjects: int, image_shape: tuple[int, int, int],
                 num_classes: int) -> Method:
    method = plugins.registry("methods").get(recipe.method.name)(**recipe.method.kwargs)
    ctx = BuildContext(plugins, dict(getattr(method, "roles", {})), dict(recipe.model), num_classes, NUM_POSE_BINS,
                       num_subjects, image_shape)
    method.models = method.build(ctx)
    return method


def build_info(num_subjects: int, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """What every model.pt records so that build_method can rebuild its networks without data
    (plain ints and lists: weights_only loading)."""
    return {"num_subjects": int(num_subjects), "image_shape": [int(x) for x in image_shape],
            "num_classes": int(num_classes)}


def materialize_dataset(plugins: Plugins, comp: Component, on_bad_image: str) -> Samples:
    """A recipe's dataset component, built and materialized (``on_bad_image`` where the reader takes it)."""
    factory = plugins.registry("datasets").get(comp.name)
    kwargs = dict(comp.kwargs)
    if "on_bad_image" in _params(factory) and "on_bad_image" not in kwargs:
        kwargs["on_bad_image"] = on_bad_image
    return materialize(factory(**kwargs))


def _num_classes(samples: list[Samples]) -> int:
    top = max(int(s.expression.max()) for s in samples)
    if top < 0:
        raise DataError("no image in the data has an expression label")
    return top + 1


class Runner:
    def __init__(self, loaded: LoadedRecipe, run_dir: Path | None = None, resume: bool = False,
                 allow_changed: bool = False, plugins: Plugins | None = None) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.plugins = plugins or get_plugins(self.recipe.plugins.block)
        validate(loaded, self.plugins)
        # Under torchrun/SLURM: join the process group; this rank's device (cuda:<local rank>).
        self.device = distributed.init(pick_device(self.recipe.device))
        if resume:
            # Rank 0's choice everywhere (a default directory is named by the time).
            self.run_dir = distributed.broadcast_object(run_dir or newest_run_dir(self.recipe.name))
            _check_resume(self.run_dir, loaded, allow_changed)
        else:
            self.run_dir = distributed.broadcast_object(run_dir or default_run_dir(self.recipe.name))
            if (self.run_dir / "recipe.yaml").exists():
                raise UsageError(f"{self.run_dir}: already holds a run (use --resume to continue it, or another --run-dir)")
        distributed.barrier()  # every rank checked before rank 0 writes the run directory
        self.precision = resolve_precision(self.recipe.train.precision, self.device)

    def amp(self) -> Any:
        return autocast(self.precision, self.device)

    # -- setup ------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"{self.run_dir}: cannot write the run directory ({exc.strerror or exc})") from None
        if not (self.run_dir / "recipe.yaml").exists():
            write_resolved(self.loaded, self.run_dir / "recipe.yaml")
        env = {"versions": versions(self.plugins), "device": str(self.device), "precision": self.precision,
               "plugins": {name: attrs.asdict(o) for name, o in self.plugins.origins.items()},
               "started": datetime.now().isoformat(timespec="seconds")}
        _write_json(self.run_dir / "environment.json", env)

    def _load_data(self) -> tuple[list[Target], int]:
        data = self.recipe.data
        with distributed.main_first():  # rank 0 fills the dataset cache, the others read it
            source = materialize_dataset(self.plugins, data.dataset, data.on_bad_image)
            target = (materialize_dataset(self.plugins, data.target_dataset, data.on_bad_image)
                      if data.target_dataset is not None else None)
        for s in (source, target):
            if s is not None and s.problems:
                logger.warning("dataset {}: {} problem(s) skipped, e.g. {}: {}", s.dataset, len(s.problems),
                               s.problems[0]["path"], s.problems[0]["problem"])
        if target is not None and target.image_shape != source.image_shape:
            raise DataError(f"source images are {source.image_shape} but target images are {target.image_shape}; "
                            "give both datasets the same image_size and channels")
        protocol = self.plugins.registry("protocols").get(data.protocol.name)(**data.protocol.kwargs)
        request = SplitRequest(data.target_subjects, data.target_holdout, data.source_val, self.recipe.seed)
        targets = protocol.split(source, target, request)
        if not targets:
            raise DataError("the protocol produced no target")
        for t in targets:
            if len(t.adapt) == 0:
                raise DataError(f"target {t.id!r} has no images to adapt on")
        return targets, _num_classes([source] + ([target] if target is not None else []))

    # -- the run ----------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        started = time.perf_counter()
        main = distributed.is_main()  # only rank 0 writes files
        if main:
            self._prepare_dir()
        distributed.barrier()
        sink = logger.add(LogFile(self.run_dir / "log.txt"), level="INFO", enqueue=False, catch=False) if main else None
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
        targets, num_classes = self._load_data()
        timing = {"data": time.perf_counter() - t0}
        first = targets[0].source
        method = build_method(self.plugins, r, len(first.samples.subject_ids), first.samples.image_shape, num_classes)
        self.build = build_info(len(first.samples.subject_ids), first.samples.image_shape, num_classes)
        if r.train.channels_last:
            for m in method.models.values():
                m.to(self.device, memory_format=torch.channels_last)
        else:
            for m in method.models.values():
                m.to(self.device)
        run = Run(r, self.loaded.resolved, self.run_dir, self.plugins, models=method.models)
        augs = [self.plugins.registry("augmentations").get(a.name)(**a.kwargs) for a in r.data.augment]
        runner = PhaseRunner(r, self.plugins, method, self.device, self.precision, run, augs)
        self._phase_runner = runner
        main = distributed.is_main()
        if main:  # lifecycle hooks run on rank 0 only
            self.plugins.hook.facedapt_on_run_start(run=run)
        logger.info("run {} in {} on {} ({}), {} target(s)", r.name, self.run_dir, self.device, self.precision, len(targets))

        shared_source = len({t.source.digest() for t in targets}) == 1
        source_states: dict[str, dict] = {}
        per_subject, timing["source"], timing["adapt"] = {}, 0.0, 0.0
        for k, target in enumerate(targets):
            tdir = self.run_dir / "subjects" / _safe(target.id)
            done = tdir / "results.json"
            distributed.barrier()  # all ranks see the same done markers and source model
            if done.is_file():
                per_subject[target.id] = json.loads(done.read_text(encoding="utf-8"))
                logger.info("target {} already done; skipping", target.id)
                continue
            sdir = self.run_dir / "source" if shared_source else tdir / "source"
            key = target.source.digest()
            if key not in source_states:
                t0 = time.perf_counter()
                source_states[key] = self._source_model(runner, run, method, target, sdir)
                timing["source"] += time.perf_counter() - t0
            _load_state(method, source_states[key])
            t0 = time.perf_counter()
            per_subject[target.id] = self._adapt_and_score(runner, run, method, target, tdir, k, num_classes)
            timing["adapt"] += time.perf_counter() - t0

        results = aggregate(per_subject, r, self.precision, num_classes)
        timing["total"] = time.perf_counter() - started
        results["timing"] = {**results.get("timing", {}), **{k: round(v, 3) for k, v in timing.items()}}
        results["world_size"] = distributed.world_size()
        if main:
            _write_json(self.run_dir / "results.json", results)
            self.plugins.hook.facedapt_on_run_end(run=run, results=results)
            logger.info("{}; results in {}", summary_lines(results)[0], self.run_dir / "results.json")
            _write_report(self.run_dir)
        distributed.barrier()  # results.json exists before any rank returns
        return results

    def _source_model(self, runner: PhaseRunner, run: Run, method: Method, target: Target, sdir: Path) -> dict:
        r = self.recipe
        final = sdir / "model.pt"
        if final.is_file():
            state = checkpoint.load(final, map_location=self.device)
            return state["models"]
        if r.train.init_from:
            state = load_models_file(Path(r.train.init_from), self.device)
            trained_for = (state.get("build") or {}).get("num_classes")
            if r.train.source_steps == 0 and trained_for is not None and int(trained_for) != self.build["num_classes"]:
                raise DataError(f"{r.train.init_from}: its model was trained for {trained_for} expression classes but the "
                                f"data has {self.build['num_classes']}; with train.source_steps=0 it cannot be used")
            loaded, fresh = _load_matching(method, state["models"])
            logger.info("source model from {}: {} tensors loaded, {} newly initialized{}", r.train.init_from, loaded,
                        len(fresh), f" ({', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''})" if fresh else "")
        sdir.mkdir(parents=True, exist_ok=True)
        run.phase, run.target = "source", None
        if r.train.source_steps > 0:
            spec = PhaseSpec("source", target.source, None, r.train.source_steps, sdir, seed_of("source", target.source.digest()))
            info = runner.run_phase(spec)
            logger.info("source training: {} steps in {:.1f}s", info["steps"], info["seconds"])
        models = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in method.models.items()}
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

        def target_batches():
            for start in range(0, len(adapt.indices), r.eval.batch_size):
                idx = adapt.indices[start:start + r.eval.batch_size]
                yield adapt.samples.images[idx].to(self.device).float().div_(127.5).sub_(1.0)

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
        out = _predict_with_features(method, target.evaluate, self.device, r.eval.batch_size, self.amp)
        res = score(target.evaluate, out["pred"], self.plugins, r.eval.metrics, num_classes)
        main = distributed.is_main()
        if main:
            _save_features(tdir / "features.pt", out, target.evaluate, seed_of(r.seed, "features", target.id))
        res["source_accuracy"], res["source_per_yaw"] = before["accuracy"], before["per_yaw"]
        res["gain"] = res["accuracy"] - before["accuracy"]
        res["selected_step"] = selected
        res["seconds"] = round(seconds_adapt, 3)
        if target.source_val is not None:
            sv = predict_domain(method, target.source_val, self.device, r.eval.batch_size, self.amp, domain_name="source")
            true = target.source_val.samples.expression[target.source_val.indices]
            res["source_val_accuracy"] = float((sv["pred"] == true).float().mean())
        if r.eval.leakage_probe:
            probe_dom = target.source_val if target.source_val is not None else _subset(target.source, 2000, r.seed)
            res["leakage"] = leakage(method, probe_dom, self.device, r.eval.batch_size, self.amp, r.eval.probe_steps,
                                     seed_of(r.seed, "probe"))
        if main:
            models = {n: {k2: v.detach().clone() for k2, v in m.state_dict().items()} for n, m in method.models.items()}
            checkpoint.save({"models": models, "kind": "adapted", "target": target.id, "method": r.method.name,
                             "build": self.build, **run.stamp()}, tdir / "model.pt")
            _write_json(tdir / "results.json", res)  # the done marker: written last
            for old in checkpoint.periodic(tdir):
                old.unlink(missing_ok=True)
            self.plugins.hook.facedapt_on_eval_end(run=run, results=res)
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


def _params(factory: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _write_report(run_dir: Path) -> None:
    """report.md/html and plots; the results are already safe, so a failure here only warns.
    FACEDAPT_NO_REPORT=1 skips it (many short runs, e.g. sweeps; `facedapt report` builds it later)."""
    if os.environ.get("FACEDAPT_NO_REPORT"):
        return
    try:
        from facedapt.report import build_report

        logger.info("report in {}", build_report(run_dir))
    except Exception as exc:  # noqa: BLE001 - never fail a finished run over its report
        logger.warning("report not written ({}: {}); rebuild it with: facedapt report {}", type(exc).__name__, exc,
                       run_dir)


#: Points per target in features.pt (the report's 2-D projection): enough to see clusters.
FEATURE_POINTS = 2000


def _predict_with_features(method: Method, domain: Domain, device: torch.device, batch_size: int,
                           amp: Any) -> dict[str, torch.Tensor]:
    """Evaluation predictions plus features where the method exposes them (a plugin method
    need not implement ``features``)."""
    try:
        return predict_domain(method, domain, device, batch_size, amp, features=True)
    except NotImplementedError:
        return predict_domain(method, domain, device, batch_size, amp)


def _save_features(path: Path, out: dict[str, torch.Tensor], domain: Domain, seed: int) -> None:
    """features.pt for the report: a 2-D PCA of at most FEATURE_POINTS expression features with
    their expression labels and yaws (small: the report must not need the data or the model)."""
    feat = out.get("feat_expression")
    if feat is None or len(feat) < 3:
        return
    keep = torch.arange(len(feat))
    if len(keep) > FEATURE_POINTS:
        keep = torch.randperm(len(feat), generator=torch.Generator().manual_seed(seed))[:FEATURE_POINTS].sort().values
    x = feat[keep].float()
    x = x - x.mean(0)
    # pca_lowrank draws random numbers: keep the global stream (training reproducibility) untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=min(2, *x.shape), center=False)
    xy = x @ v[:, :2]
    if xy.shape[1] < 2:
        xy = torch.cat([xy, torch.zeros(len(xy), 2 - xy.shape[1])], 1)
    idx = domain.indices[keep]
    try:
        torch.save({"expression_2d": xy.contiguous(), "expression": domain.samples.expression[idx].clone(),
                    "yaw": domain.samples.yaw[idx].float().clone()}, path)
    except OSError as exc:  # only the report's projection is lost: not worth failing the run
        logger.warning("{}: cannot write ({})", path, exc.strerror or exc)


def _subset(domain: Domain, n: int, seed: int) -> Domain:
    if len(domain) <= n:
        return domain
    g = torch.Generator().manual_seed(seed)
    return Domain(domain.samples, domain.indices[torch.randperm(len(domain), generator=g)[:n]].sort().values)


def _safe(sid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sid)


def _load_state(method: Method, models: dict) -> None:
    for name, m in method.models.items():
        m.load_state_dict(models[name])


def _load_matching(method: Method, models: dict[str, dict[str, torch.Tensor]]) -> tuple[int, list[str]]:
    """Load every tensor whose model, name and shape match (warm start across methods that
    share networks); returns how many loaded and the names left as initialized."""
    loaded, fresh = 0, []
    for name, module in method.models.items():
        saved = models.get(name, {})
        own = module.state_dict()
        take = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
        fresh += [f"{name}.{k}" for k in own if k not in take]
        module.load_state_dict({**own, **take})
        loaded += len(take)
    return loaded, fresh


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # disk full: one line, the previous file left as it was
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from exc


class LogFile:
    """The run's log.txt as a loguru sink that fails like the other run files: a full disk is a
    StorageError naming the file (loguru's own file sink would print a traceback and go on)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, message: str) -> None:
        try:
            self._fh.write(message)
            self._fh.flush()
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc

    def stop(self) -> None:  # loguru calls it when the sink is removed
        try:
            self._fh.close()
        except OSError:  # its last flush failed: already reported by write()
            pass


def find_model_file(path: Path) -> Path:
    """``path`` itself if a file; else its model.pt (a subject or personalized directory), else
    source/model.pt (a run directory: its source model)."""
    if path.is_dir():
        candidates = [path / "model.pt", path / "source" / "model.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path}: no model.pt here or in source/")
        return found
    return path


def load_models_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A model file from a run directory (its source model) or a model/checkpoint path."""
    return checkpoint.load(find_model_file(path), map_location=device)


def run(loaded: LoadedRecipe, *, run_dir: str | Path | None = None, resume: bool = False,
        allow_changed: bool = False) -> dict[str, Any]:
    """Run a loaded recipe; returns what results.json holds. Under torchrun or SLURM every
    process calls this; they train one model together and rank 0 writes the run directory."""
    try:
        return Runner(loaded, Path(run_dir) if run_dir else None, resume, allow_changed).execute()
    finally:
        distributed.shutdown()
