"""The `facedapt` command line.

One grammar for every subcommand: a recipe command takes its recipe(s), then overrides
(``key=value`` sets a key, ``~key`` deletes one; ``--set key=value`` is the same); an argument
with ``=`` or a leading ``~`` is always an override, never a recipe file. The common options
(``-p no:NAME``, ``-q``, ``-v``, ``--debug``) go before or after the subcommand's name, and
``-p`` is parsed in one place and applied to every plugin set the command loads.

Errors the user can act on print as one line (exit 2 for usage and data, 1 at run time);
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

import facedapt
from facedapt.errors import FacedaptError, UsageError
from facedapt.plugin_manager import command_line_block
from facedapt.recipe.load import is_override

Handler = Callable[[argparse.Namespace], int]

#: What each subcommand takes before its overrides: one recipe, several, or none (adapt changes
#: the recipe of the run it starts from; eval's key=value arguments are dataset options).
RECIPE_ARGS: dict[str, str] = {"run": "one", "sweep": "one", "validate": "many", "adapt": "none", "eval": "none"}
OVERRIDE_HELP = "key=value sets a key (the value is YAML), ~key deletes one"


def parse_plugin_options(items: list[str]) -> tuple[str, ...]:
    """The names of ``-p no:NAME``: the one place ``-p`` is parsed, for every subcommand."""
    names: list[str] = []
    for item in items:
        if not item.startswith("no:") or len(item) <= 3:
            raise UsageError(f"-p {item!r}: expected -p no:NAME to block a plugin")
        names.append(item[3:])
    return tuple(dict.fromkeys(names))


def _with_block(args: argparse.Namespace, recipe: str | Path, overrides: list[str]) -> list[str]:
    """``overrides`` plus the names of ``-p no:NAME`` added to the recipe's own block list (not
    replacing it), so that the run directory, and each job of a sweep, records what was blocked."""
    if not args.blocked:
        return overrides
    from facedapt.recipe.load import load_recipe

    own = load_recipe(recipe, overrides).recipe.plugins.block
    return [*overrides, f"plugins.block={json.dumps([*own, *(b for b in args.blocked if b not in own)])}"]


def _load(args: argparse.Namespace, recipe: str) -> Any:
    from facedapt.recipe.load import load_recipe

    return load_recipe(recipe, _with_block(args, recipe, args.overrides))


def cmd_run(args: argparse.Namespace) -> int:
    from facedapt.engine.distributed import env_rank
    from facedapt.engine.results import summary_lines
    from facedapt.engine.run import run

    rank = env_rank()
    if rank > 0:  # under torchrun/SLURM: rank 0 reports; the others only warn, tagged with their rank
        logger.remove()
        logger.add(sys.stderr, level="WARNING", format=f"rank {rank}: {{level}} {{message}}")
    loaded = _load(args, args.recipe)
    results = run(loaded, run_dir=args.run_dir, resume=args.resume, allow_changed=args.allow_changed_recipe,
                  report=args.report, progress=False if rank > 0 else _progress(args))
    if rank > 0:
        return 0
    print("\n".join(summary_lines(results)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from facedapt.plugin_manager import get_plugins
    from facedapt.recipe.validate import validate

    for recipe in args.recipes:
        loaded = _load(args, recipe)
        validate(loaded, get_plugins(loaded.recipe.plugins.block))
        print(f"{loaded.path}: ok")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from facedapt.hookspecs import FAMILIES
    from facedapt.plugin_manager import get_plugins

    plugins = get_plugins()  # with -p no:NAME applied, as everywhere
    table = {
        family: [{"name": e.name, "plugin": e.origin.plugin, "distribution": e.origin.distribution,
                  "version": e.origin.version} for e in plugins.registry(family)]
        for family in FAMILIES
    }
    failed = [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in plugins.failed]
    if args.json:
        print(json.dumps({"families": table, "failed": failed}, indent=2))
        return 0
    for family, rows in table.items():
        print(f"{family}:")
        for row in rows:
            print(f"  {row['name']:<24} {row['distribution']} {row['version']}")
    for f in failed:
        print(f"failed to load: {f['name']} ({f['distribution']}): {f['error']}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from facedapt.recipe.load import bundled_recipes, read_yaml

    recipes = bundled_recipes()
    if args.action == "copy":
        if not args.name or args.name not in recipes:
            raise UsageError(f"recipes copy: unknown recipe {args.name!r}; bundled: {', '.join(recipes)}")
        dest = Path(args.dest or f"{args.name}.yaml")
        if dest.is_dir():
            dest = dest / f"{args.name}.yaml"
        if dest.exists():
            raise UsageError(f"{dest}: already exists; not overwriting")
        text = recipes[args.name].read_text(encoding="utf-8")
        parent = read_yaml(recipes[args.name]).get("extends")
        if parent:  # the copy lives elsewhere: point `extends` at the bundled recipe by name
            text = text.replace(f"extends: {parent}", f"extends: {Path(str(parent)).stem}")
        dest.write_text(text, encoding="utf-8")
        print(f"copied {args.name} to {dest}")
        return 0
    for name, path in recipes.items():
        first = next((ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")), "")
        print(f"{name:<28} {first}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from facedapt.data.export import write_manifest
    from facedapt.data.store import materialize
    from facedapt.plugin_manager import get_plugins

    factory = get_plugins().registry("datasets").get("synthetic")
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.preset:
        kwargs["preset"] = args.preset
    samples = materialize(factory(**kwargs))
    out = write_manifest(samples, Path(args.out))
    print(f"wrote {len(samples)} faces to {out}")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from facedapt.data.inspect import format_summary, summarize
    from facedapt.plugin_manager import get_plugins

    registry = get_plugins().registry("datasets")
    entry = registry.entry(args.dataset, key="--dataset")
    kwargs: dict[str, Any] = {"root": args.root, "on_bad_image": "skip"}
    source = entry.factory(**kwargs)
    summary = summarize(source.load())
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from facedapt.engine.adapt import adapt

    recipe_file = args.run_from / "recipe.yaml"  # missing: adapt() says so in its own words
    overrides = _with_block(args, recipe_file, args.overrides) if recipe_file.is_file() else args.overrides
    done = adapt(args.run_from, args.images, out=args.out, subject=args.subject, overrides=overrides,
                 report=args.report, progress=_progress(args), detect=not args.no_detect)
    print(f"personalized model for {done.subject} ({done.photos} photos): {done.model_file}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from facedapt.engine.model_io import evaluate_dataset, load_model
    from facedapt.recipe.load import apply_overrides

    for item in args.overrides:
        if item.startswith("~"):
            raise UsageError(f"eval: {item!r}: dataset options are only set (key=value), there is nothing to delete")
    # Parsed as recipe overrides are, so values (and dotted keys) mean the same everywhere.
    options = apply_overrides({}, args.overrides, source="eval dataset options")
    if args.root is not None:
        options["root"] = args.root
    model = load_model(args.checkpoint)
    res = evaluate_dataset(model, args.dataset, options)
    if args.json:
        print(json.dumps(res, indent=2, default=float))
        return 0
    print(f"{args.dataset}: accuracy {res['accuracy']:.4f}  UAR {res['uar']:.4f}  macro-F1 {res['macro_f1']:.4f}  "
          f"n={res['n']}  ({len(res['per_subject'])} subject(s), mean accuracy {res['target_accuracy']:.4f})")
    for yaw, acc in res["per_yaw_pooled"].items():
        print(f"  yaw {int(yaw):+d}: {acc:.4f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from facedapt.report import build_report

    out = build_report(args.run_dir)
    print(f"report: {out} and {out.with_suffix('.md')}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from facedapt.engine.model_io import load_model

    model = load_model(args.checkpoint)
    photos = model.predict_faces(args.images, detect=not args.no_detect)
    found = sum(len(p["faces"]) for p in photos)
    for p in photos:  # on stderr: standard output stays machine-readable with --json / --csv
        if not p["faces"]:
            print(f"no face found in {p['image']}", file=sys.stderr)
    if args.json:
        print(json.dumps(photos, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", "face", "x", "y", "width", "height", "expression", "probability", "yaw",
                         *(f"p_{c}" for c in model.classes), "trained_on"])
        for p in photos:
            for i, f in enumerate(p["faces"]):
                writer.writerow([p["image"], i, *f["box"], f["expression"], f"{f['probability']:.4f}",
                                 "" if f["yaw"] is None else f"{f['yaw']:g}",
                                 *(f"{f['probabilities'][c]:.4f}" for c in model.classes),
                                 "; ".join(p["trained_on"])])
    elif found:
        print(f"{'image':<28} {'face box (x,y,w,h)':<20} {'expression':<11} {'p':>5}  {'yaw':>5}  top 3")
        for p in photos:
            for f in p["faces"]:
                box = ",".join(str(v) for v in f["box"]) + ("" if f["detected"] else " (all)")
                yaw = "-" if f["yaw"] is None else f"{f['yaw']:+.0f}°" if f["yaw"] else "0°"
                top = "  ".join(f"{name} {prob:.2f}" for name, prob in f["top"])
                print(f"{_clip(p['image'], 28):<28} {box:<20} {f['expression']:<11} {f['probability']:5.2f}  "
                      f"{yaw:>5}  {top}")
        print(f"model trained on: {', '.join(model.trained_on) or 'nothing (untrained)'}")
    # Exit 2 only when nothing at all was found: a batch with some faceless photos still succeeded.
    return 0 if found else 2


def cmd_sweep(args: argparse.Namespace) -> int:
    from facedapt.sweep import run_sweep

    overrides = _with_block(args, args.recipe, args.overrides)
    slurm = {"partition": args.slurm_partition, "time_min": args.slurm_time, "gpus_per_node": args.slurm_gpus,
             "cpus_per_task": args.slurm_cpus, "mem_gb": args.slurm_mem}
    args.sweep_dir = args.sweep_dir or Path("sweeps") / Path(args.recipe).stem
    out = run_sweep(args.recipe, args.sweep_dir, overrides=overrides, grid=args.grid, seeds=args.seeds,
                    subjects=args.subjects, launcher=args.launcher, parallel=args.parallel, threads=args.threads,
                    slurm=slurm, dry_run=args.dry_run, report=bool(args.report))
    if args.dry_run:
        print(f"{out['jobs']} job(s) in {args.sweep_dir} ({out['done']} done)")
        for d in out["planned"]:
            print(f"  {d}")
        return 0
    if args.launcher == "slurm":
        print(f"{out['jobs']} job(s); submitted {len(out['submitted'])}: {' '.join(map(str, out['submitted']))}")
        return 0
    print(f"{out['jobs']} job(s): {out['skipped']} already done, {out['ran'] - out['failed']} finished now, "
          f"{out['failed']} failed (rerun the same command to retry them)")
    print(f"compare with: facedapt compare {args.sweep_dir}")
    return 1 if out["failed"] else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from facedapt.compare import compare, render

    keys = [k for k in args.by.split(",") if k] if args.by else None
    keys, rows = compare(args.paths, keys, args.against or ())
    text = render(keys, rows, args.format)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _progress(args: argparse.Namespace) -> bool | None:
    """-q keeps the progress line off; otherwise it is drawn on a terminal only."""
    return False if args.quiet else None


def _report_option(p: argparse.ArgumentParser, default: bool | None, help: str) -> None:
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=default, help=help)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _common_options(top: bool, plugin_dest: str = "plugin_opts") -> argparse.ArgumentParser:
    """The options every subcommand takes, before or after its name. Below the top level they
    default to SUPPRESS, so that one given before the name is not reset by the subparser; ``-p``
    collects into its own list per level (merged in main) for the same reason."""
    common = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--debug", action="store_true", help="show tracebacks", **unset)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors", **unset)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging", **unset)
    common.add_argument("-p", dest=plugin_dest, action="append", metavar="no:NAME",
                        default=[] if top else argparse.SUPPRESS,
                        help="block a plugin by entry-point name (repeatable; essential built-ins cannot be blocked)")
    return common


def _overrides(p: argparse.ArgumentParser, help: str = OVERRIDE_HELP) -> None:
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=help)
    p.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override, the same as a positional one (applied after those)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facedapt", parents=[_common_options(top=True)],
                                     description="Pose-aware adversarial domain adaptation for personalized facial "
                                     "expression recognition.")
    parser.add_argument("--version", action="version", version=f"facedapt {facedapt.__version__}")
    common = _common_options(top=False, plugin_dest="sub_plugin_opts")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add("run", help="train and evaluate a recipe", description="Train and evaluate a recipe. "
            f"Overrides: {OVERRIDE_HELP}.")
    p.add_argument("recipe", help="recipe file, or the name of a bundled recipe")
    _overrides(p)
    p.add_argument("--run-dir", type=Path, help="run directory (default runs/<recipe>/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue a run (the newest of this recipe without --run-dir)")
    p.add_argument("--allow-changed-recipe", action="store_true", help="resume although the recipe changed")
    _report_option(p, None, "write report.md/html and plots at the end (default: the recipe's eval.report)")
    p.set_defaults(func=cmd_run)

    p = add("validate", help="check recipes completely without building models or reading data",
            description=f"Check recipes completely without building models or reading data. Overrides apply to "
            f"every recipe: {OVERRIDE_HELP}.")
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe files or bundled names")
    _overrides(p)
    p.set_defaults(func=cmd_validate)

    p = add("plugins", help="list registered components by family")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = add("recipes", help="list bundled recipes, or copy one to edit")
    p.add_argument("action", nargs="?", choices=["list", "copy"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("dest", nargs="?")
    p.set_defaults(func=cmd_recipes)

    p = add("adapt", help="personalize a trained run to one person's unlabelled photos",
                       description="Adapt the source model of a finished run to a folder of unlabelled face photos "
                       "of one person; writes a run directory whose model.pt is the personalized model. "
                       "Overrides (key=value, ~key) change the run's recipe, e.g. train.steps=300.")
    p.add_argument("--from", dest="run_from", required=True, type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of the person's photos (searched recursively)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default RUN_DIR/personalized/<subject>)")
    p.add_argument("--subject", default="person", help="the person's id (default: person)")
    p.add_argument("--no-detect", action="store_true",
                   help="no face detection: each photo (its center square) is one face, for photos already cropped")
    _report_option(p, None, "write report.md/html and plots at the end (default: the recipe's eval.report)")
    _overrides(p)
    p.set_defaults(func=cmd_adapt)

    p = add("eval", help="evaluate a trained model on a dataset",
                       description="Evaluate a model (a run directory: its source model; a subject or personalized "
                       "directory, or a model.pt) on a registered dataset read at the model's image size. Extra "
                       "key=value arguments are dataset options (YAML values), e.g. split=test.")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PATH", help="run directory, subject directory or model.pt")
    p.add_argument("--dataset", required=True, help="registered dataset name (manifest, kdef, image_folder, ...)")
    p.add_argument("--root", help="dataset root folder (or manifest file)")
    p.add_argument("--json", action="store_true", help="print a results.json-style object")
    _overrides(p, help="key=value: a dataset option (the value is YAML)")
    p.set_defaults(func=cmd_eval)

    p = add("report", help="rebuild a run's report (report.md, report.html, report/*.png)",
                       description="Rebuild the report of a finished run from the files in its directory.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.set_defaults(func=cmd_report)

    p = add("predict", help="find faces in photos and predict their expressions",
                       description="Find faces in ordinary photos (OpenCV's Haar cascade, the optional extra "
                       "facedapt[detect]; without it, pass --no-detect), crop each with a margin and predict its "
                       "expression and yaw. The output names what the model was trained on; a model trained on "
                       "synthetic faces only warns that photos are out of its domain. Exit 0 when a face was found "
                       "in at least one photo, 2 when in none, when a photo cannot be read or when OpenCV is missing.")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="PATH", help="run directory, subject directory or model.pt")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photo files")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object per photo, in a list")
    fmt.add_argument("--csv", action="store_true", help="print one CSV row per face")
    p.add_argument("--no-detect", action="store_true", help="no face detection: each photo (its center square) is one face")
    p.set_defaults(func=cmd_predict)

    p = add("sweep", help="one run per grid point, seed and target subject (local or SLURM)",
                       description="Run a recipe once per combination of --grid values, seeds and target subjects. "
                       "Each job lives in SWEEP_DIR/<hash of its resolved recipe>/ with a DONE marker once finished; "
                       "running the same command again skips finished jobs and resumes broken ones.")
    p.add_argument("recipe", help="recipe file, or the name of a bundled recipe")
    _overrides(p, help=f"{OVERRIDE_HELP}; applied to every job")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="swept key and its values (repeat for a product); commas inside {} or [] do not split")
    p.add_argument("--seeds", default="1", help="a count (3: seeds 0,1,2) or a list (0,5,7); default 1")
    p.add_argument("--subjects", default="all",
                   help="all (one job per target of the recipe's data.target_subjects), a list (T00,T01), "
                   "or none (one job for all targets)")
    p.add_argument("--sweep-dir", type=Path, metavar="DIR", help="where the jobs live (default sweeps/<recipe>)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="local: jobs at a time")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="threads per job (OMP_NUM_THREADS)")
    p.add_argument("--slurm-partition", help="slurm: partition")
    p.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="slurm: time limit per job")
    p.add_argument("--slurm-gpus", type=int, default=0, metavar="N", help="slurm: GPUs per job")
    p.add_argument("--slurm-cpus", type=int, default=4, metavar="N", help="slurm: CPUs per job")
    p.add_argument("--slurm-mem", type=int, default=16, metavar="GB", help="slurm: memory per job")
    p.add_argument("--dry-run", action="store_true", help="write the job directories and list them; run nothing")
    _report_option(p, False, "each job writes its report too (default: no, many short runs; facedapt report "
                   "builds one later)")
    p.set_defaults(func=cmd_sweep)

    p = add("compare", help="tables of mean and std over seeds and subjects from results.json files",
                       description="Aggregate the results.json files found under the given run or sweep directories "
                       "into a table: rows grouped by recipe, method, swept keys and selection rule (or --by), mean "
                       "and std over seeds of the mean over subjects, and the spread over subjects.")
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    p.add_argument("--by", metavar="KEYS", help="comma-separated grouping keys (results.json fields or swept keys), "
                   "e.g. method or method,selection")
    p.add_argument("--against", nargs="+", metavar="GROUP", help="baseline groups (a recipe or method name, or any "
                   "grouping value): adds each row's paired difference against each, over (seed, subject) pairs, "
                   "with a 95%% interval and the pairs improved")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the table here instead of printing it")
    p.set_defaults(func=cmd_compare)

    # `data` and its actions each take the common options; their -p lists are kept apart.
    p = sub.add_parser("data", parents=[_common_options(top=False, plugin_dest="data_plugin_opts")],
                       help="generate synthetic faces or inspect a dataset")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("synth", parents=[common], help="write a synthetic face set as PNG files plus manifest.csv")
    q.add_argument("--preset", help="preset name (default: the default preset)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=cmd_data_synth)
    q = dsub.add_parser("inspect", parents=[common],
                        help="counts per expression, subject and pose, and every problem found")
    q.add_argument("--dataset", required=True, help="registered dataset name (kdef, multipie, manifest, ...)")
    q.add_argument("--root", required=True, help="dataset root folder (or manifest file)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_data_inspect)

    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    logger.remove()
    level = "WARNING" if args.quiet else "DEBUG" if args.verbose else "INFO"
    logger.add(sys.stderr, level=level, format="<green>{time:HH:mm:ss}</green> {level: <7} {message}")


def _check_extra(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """What argparse left over may only be overrides of a command that takes them, placed after
    options (``run pada --run-dir d train.steps=3``)."""
    unknown = [e for e in extra if args.command not in RECIPE_ARGS or e.startswith("-") or not is_override(e)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")


def _arrange(args: argparse.Namespace, extra: list[str]) -> None:
    """Sort a command's positional arguments into recipe(s) and overrides by their form alone:
    ``key=value`` and ``~key`` are overrides wherever they stand, the rest are recipes."""
    kind = RECIPE_ARGS.get(args.command)
    if kind is None:
        return
    named = [args.recipe] if kind == "one" else args.recipes if kind == "many" else []
    given = [*named, *args.overrides, *extra]
    recipes = [a for a in given if not is_override(a)]
    args.overrides = [*(a for a in given if is_override(a)), *args.set_overrides]
    allowed = {"none": 0, "one": 1, "many": len(recipes)}[kind]
    if len(recipes) > allowed:
        takes = {"none": "no recipe", "one": "one recipe"}[kind]
        raise UsageError(f"{args.command}: {recipes[allowed]!r}: an override must look like key=value or ~key "
                         f"({args.command} takes {takes})")
    if kind != "none" and not recipes:
        raise UsageError(f"{args.command}: no recipe given (arguments with '=' or a leading '~' are overrides)")
    if kind == "one":
        args.recipe = recipes[0]
    elif kind == "many":
        args.recipes = recipes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    for level in ("data_plugin_opts", "sub_plugin_opts"):  # -p after the name of a (nested) subcommand
        args.plugin_opts = [*args.plugin_opts, *getattr(args, level, [])]
    _check_extra(parser, args, extra)
    _configure_logging(args)
    try:
        _arrange(args, extra)
        args.blocked = parse_plugin_options(args.plugin_opts)
        with command_line_block(args.blocked):
            return int(args.func(args) or 0)
    except FacedaptError as exc:
        if args.debug:
            raise
        print(f"facedapt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("facedapt: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal fault: one line, the traceback behind --debug
        if args.debug:
            raise
        print(f"facedapt: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
