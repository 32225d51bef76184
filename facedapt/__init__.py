"""facedapt: pose-aware adversarial domain adaptation for personalized facial expression recognition.

Library use::

    import facedapt
    loaded = facedapt.load_recipe("recipes/pada.yaml", overrides=["train.steps=50"])
    results = facedapt.run(loaded)
    model = facedapt.load_model("runs/pada/<timestamp>/subjects/S005")
    model.predict(["photo.jpg"])
    personal = facedapt.adapt("runs/pada/<timestamp>", "photos/", subject="me")
    facedapt.load_model(personal.model_file).predict(["photo.jpg"])
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from facedapt.hookspecs import hookimpl, hookspec

try:
    __version__ = version("facedapt")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

if TYPE_CHECKING:
    from facedapt.engine.model_io import Model
    from facedapt.recipe.load import LoadedRecipe


def load_recipe(path: str, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read a recipe file (or bundled recipe name), apply ``key=value`` / ``~key`` overrides."""
    from facedapt.recipe.load import load_recipe as _load

    return _load(path, overrides)


def run(recipe: Any, *, run_dir: str | None = None, resume: bool = False, report: bool | None = None,
        progress: bool | None = None) -> dict[str, Any]:
    """Run a recipe (a LoadedRecipe, or a path/name) and return its results.json content.
    ``report``: write report.md/html (default: the recipe's eval.report); ``progress``: the
    progress line (default: on a terminal only)."""
    from facedapt.engine.run import run as _run

    loaded = recipe if hasattr(recipe, "resolved") else load_recipe(recipe)
    return _run(loaded, run_dir=run_dir, resume=resume, report=report, progress=progress)


def adapt(run_dir: str, images: str, *, subject: str = "person", out: str | None = None,
          overrides: list[str] | tuple[str, ...] = (), detect: bool = True, report: bool | None = None,
          progress: bool | None = None) -> Any:
    """Personalize a finished run's source model to a folder of one person's unlabelled photos
    (faces found with OpenCV unless ``detect=False``); returns where the personalized model is
    (``.model_file``, for ``load_model``) with the run's results."""
    from facedapt.engine.adapt import adapt as _adapt

    return _adapt(run_dir, images, out=out, subject=subject, overrides=overrides, detect=detect, report=report,
                  progress=progress)


def load_model(path: str, device: str = "cpu") -> Model:
    """A trained model from a run directory (its source model), a subject or personalized
    directory (its adapted model) or a model.pt file; ``.predict(images)`` classifies."""
    from facedapt.engine.model_io import load_model as _load_model

    return _load_model(path, device)


__all__ = ["__version__", "adapt", "hookimpl", "hookspec", "load_model", "load_recipe", "run"]
