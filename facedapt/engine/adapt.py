"""Personalize a trained run to one new person's unlabelled photos.

The run's recipe is reused with the photos as a second dataset under the ``cross_dataset``
protocol (one target: the person), its source model as ``train.init_from`` and no source
training, so the ordinary engine loop does the adaptation. The output folder is a complete
run directory (resumable, with results.json; accuracy is NaN with n=0 since photos carry no
labels) plus ``model.pt``, the personalized model, at its top for ``load_model``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import attrs

from facedapt.engine import checkpoint
from facedapt.engine.model_io import read_build
from facedapt.engine.build import materialize_dataset
from facedapt.engine.run import Runner
from facedapt.engine.rundir import safe_name, subject_dir
from facedapt.errors import CheckpointError, UsageError
from facedapt.plugin_manager import Plugins, get_plugins
from facedapt.recipe.load import load_recipe


@attrs.frozen
class Adapted:
    model_file: Path  # the personalized model (load with facedapt.load_model)
    run_dir: Path
    subject: str
    photos: int
    results: dict


def adapt(run_dir: str | os.PathLike, images: str | os.PathLike, *, out: str | os.PathLike | None = None,
          subject: str = "person", overrides: list[str] | tuple[str, ...] = (),
          plugins: Plugins | None = None, report: bool | None = None, progress: bool | None = None,
          detect: bool = True) -> Adapted:
    """Adapt ``run_dir``'s source model to the photos under ``images``; ``overrides`` change the
    run's recipe (e.g. ``train.steps=300``) before the adaptation settings are applied.
    ``detect``: crop each photo's largest face (OpenCV), else take its center square.
    ``report`` and ``progress`` as for :func:`facedapt.engine.run.run`."""
    run_dir, images = Path(run_dir).expanduser(), Path(images).expanduser()
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise UsageError(f"--from {run_dir}: not a run directory (no recipe.yaml)")
    source_model = run_dir / "source" / "model.pt"
    if not source_model.is_file():
        raise CheckpointError(f"--from {run_dir}: no trained source model (source/model.pt); finish the run first")
    if not images.is_dir():
        raise UsageError(f"--images {images}: no such folder")
    c, h, _ = read_build(checkpoint.load(source_model), source_model)["image_shape"]
    out_dir = Path(out).expanduser() if out else run_dir / "personalized" / safe_name(subject)

    base = load_recipe(recipe_file, list(overrides))
    method = (plugins or get_plugins(base.recipe.plugins.block)).registry("methods").get(base.recipe.method.name)(
        **base.recipe.method.kwargs)
    if method.uses_target_labels:
        raise UsageError(f"method {base.recipe.method.name!r} trains on target labels; photos have none")
    photos = {"name": "photos", "root": str(images.resolve()), "subject": subject, "image_size": h, "channels": c,
              "on_bad_image": base.recipe.data.on_bad_image, "detect": detect}
    forced = [
        f"data.target_dataset={json.dumps(photos)}",
        'data.protocol={"name": "cross_dataset", "per_subject": true}',  # one target, named by the subject id
        "data.target_subjects=all",
        "data.target_holdout=0.0",  # unlabelled: adapt on every photo, nothing to hold out
        f"train.init_from={json.dumps(str(source_model.resolve()))}",
        "train.source_steps=0",
    ]
    if base.recipe.eval.selection == "oracle":  # selection on target labels is impossible without labels
        forced.append("eval.selection=last")
    loaded = load_recipe(recipe_file, [*overrides, *forced])
    plugins = plugins or get_plugins(loaded.recipe.plugins.block)

    # Read the photos before the run directory is made: an empty folder fails here in one line,
    # and the engine then finds them in the dataset cache.
    samples = materialize_dataset(plugins, loaded.recipe.data.target_dataset, loaded.recipe.data.on_bad_image)
    results = Runner(loaded, run_dir=out_dir, plugins=plugins, report=report, progress=progress).execute()
    model_file = out_dir / "model.pt"
    # A copy, not a move: subjects/<id>/ stays complete, so the folder remains a resumable run.
    shutil.copyfile(subject_dir(out_dir, subject) / "model.pt", model_file)
    return Adapted(model_file, out_dir, subject, len(samples), results)
