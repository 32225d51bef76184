"""A trained model outside the engine: load a model.pt from a run and predict on images.

::

    import facedapt
    model = facedapt.load_model("runs/pada/20250101-120000")            # the source model
    model = facedapt.load_model("runs/pada/20250101-120000/subjects/S005")  # an adapted one
    model.predict(["me.jpg"])  # [{"expression": "happy", "probabilities": {...}, "yaw": 15.0}]
    model.predict_faces(["party.jpg"])  # faces found in a photo, each cropped and predicted

A model knows what it was trained on (``trained_on``: the datasets of its recipe it learned
from, and what its pretrained weights learned from); one whose expressions come from synthetic
faces only warns, once, when it is asked about photos.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch.nn import functional as F

from facedapt.data.batches import InputConvention, normalize
from facedapt.data.imageio import BadImage, decode
from facedapt.data.samples import EXPRESSIONS, bin_to_yaw
from facedapt.engine import checkpoint
from facedapt.engine.precision import autocast, resolve_precision
from facedapt.errors import CheckpointError, DataError, UsageError
from facedapt.method import Method
from facedapt.plugin_manager import Plugins, get_plugins
from facedapt.recipe.load import LoadedRecipe, load_recipe
from facedapt.recipe.schema import Recipe

#: Images per forward pass in ``predict`` (bounds memory for long lists).
PREDICT_BATCH = 256
#: Dataset plugins whose faces are rendered, not photographed.
SYNTHETIC_DATASETS = frozenset({"synthetic"})

ImageInput = torch.Tensor | Sequence[str | os.PathLike]


@attrs.define(eq=False)
class Model:
    """A rebuilt method with its weights, ready to predict.

    ``domain`` is the normalization domain predictions use: "source" for a source model (its
    target statistics were never fitted), "target" for an adapted one, as the engine evaluates.
    """

    method: Method
    loaded: LoadedRecipe
    path: Path
    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    domain: str
    device: torch.device
    precision: str
    info: dict[str, Any] = attrs.field(factory=dict)  # kind, target, method, recipe digest, versions
    #: network name -> the input convention of its weights, where not the canonical one
    conventions: dict[str, InputConvention] = attrs.field(factory=dict)
    _warned: bool = attrs.field(default=False, init=False)

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def trained_on(self) -> list[str]:
        """What the model learned from: its pretrained weights' data, then the datasets of its
        recipe that it trained on (the source when it took source steps, the target dataset when
        adapted to one)."""
        r = self.recipe
        out = [c.trained_on for c in self.conventions.values() if c.trained_on]
        if r.train.source_steps > 0:
            out.append(r.data.dataset.name)
        if self.domain == "target" and r.data.target_dataset is not None:
            out.append(r.data.target_dataset.name)
        return list(dict.fromkeys(out))

    @property
    def synthetic_only(self) -> bool:
        """True when every expression it knows was learned from synthetic faces."""
        if any(c.expressions for c in self.conventions.values()):
            return False
        r = self.recipe
        names = {r.data.dataset.name} | ({r.data.target_dataset.name} if r.data.target_dataset else set())
        return names <= SYNTHETIC_DATASETS

    def warn_photos(self) -> None:
        """Once per model: photos are out of the domain of a model trained on synthetic faces."""
        if self.synthetic_only and not self._warned:
            from loguru import logger

            self._warned = True
            logger.warning("this model learned expressions from synthetic faces only (trained on: {}); photos are out "
                           "of its domain, so do not trust its predictions on them", ", ".join(self.trained_on)
                           or "nothing")

    def amp(self) -> Any:
        return autocast(self.precision, self.device)

    def prepare(self, images: ImageInput) -> torch.Tensor:
        """uint8 [B, C, H, W] in the model's channels and size, from a tensor or file paths."""
        c, h, _ = self.image_shape
        if isinstance(images, torch.Tensor):
            return fit_tensor(images, h, c)
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        self.warn_photos()  # files are photos; tensors may be renders
        return read_images([Path(p) for p in images], h, c)

    @torch.no_grad()
    def predict(self, images: ImageInput) -> list[dict[str, Any]]:
        """One dict per image: ``expression`` (a class name), ``probabilities`` (name -> p) and
        ``yaw`` (degrees of the predicted pose bin; None when the method has no pose branch)."""
        batch = self.prepare(images)
        self.method.train(False)
        out: list[dict[str, Any]] = []
        for start in range(0, len(batch), PREDICT_BATCH):
            x = normalize(batch[start:start + PREDICT_BATCH].to(self.device))
            with self.amp():
                probs = self.method.predict(x, domain=self.domain).float().softmax(1).cpu()
                pose = self.method.predict_pose(x, domain=self.domain)
            yaws = bin_to_yaw(pose.float().argmax(1).cpu()).tolist() if pose is not None else [None] * len(x)
            for p, yaw in zip(probs, yaws):
                out.append({"expression": self.classes[int(p.argmax())],
                            "probabilities": {name: float(v) for name, v in zip(self.classes, p)},
                            "yaw": yaw})
        return out

    def predict_faces(self, paths: Sequence[str | os.PathLike], detect: bool = True,
                      top: int = 3) -> list[dict[str, Any]]:
        """Find the faces in ordinary photos and predict each (facedapt.engine.faces).

        One dict per photo: ``image``, ``trained_on`` (what the model learned from) and ``faces``,
        a list (empty: no face found) of dicts with ``box`` ([x, y, width, height] in photo pixels,
        the square the model saw), ``detected`` (False: the whole photo's center square stood in,
        with ``detect=False``) and ``predict``'s ``expression``, ``probabilities`` and ``yaw``, plus
        ``probability`` (of the expression) and ``top`` ([name, p] pairs, most likely first).
        Every photo is read before any prediction, so an unreadable one raises DataError first.
        Without OpenCV, ``detect=True`` raises UsageError rather than take whole photos for faces.
        """
        from facedapt.engine.faces import INSTALL_HINT, find_faces, opencv_available

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise UsageError("predict: no image paths given")
        if detect and not opencv_available():
            # A whole photo is not a face crop: predicting on it answers for a landscape too.
            raise UsageError(f"finding faces in photos needs OpenCV ({INSTALL_HINT}); or pass --no-detect "
                             "(detect=False) to take the center square of each photo as its face")
        crops = [find_faces(p, use_detector=detect) for p in paths]
        self.warn_photos()
        c, h, _ = self.image_shape
        flat = [face for faces in crops for face in faces]
        preds = self.predict(torch.cat([fit_tensor(f.pixels, h, c) for f in flat])) if flat else []
        it = iter(preds)
        out = []
        for path, faces in zip(paths, crops):
            rows = []
            for face in faces:
                pred = next(it)
                ranked = sorted(pred["probabilities"].items(), key=lambda kv: -kv[1])
                rows.append({"box": list(face.box), "detected": face.detected, **pred,
                             "probability": pred["probabilities"][pred["expression"]],
                             "top": [[name, p] for name, p in ranked[:top]]})
            out.append({"image": str(path), "trained_on": self.trained_on, "faces": rows})
        return out


def fit_tensor(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [B, C, H, W] or [C, H, W], 1 or 3 channels, any size -> uint8 [B, channels, size,
    size]: center square crop and antialiased bilinear resize, as the dataset readers do."""
    if images.dtype != torch.uint8:
        raise UsageError(f"predict: expected uint8 images (0..255), got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UsageError(f"predict: expected images of shape [B, C, H, W] or [C, H, W] with 1 or 3 channels, "
                         f"got {list(images.shape)}")
    x = images.float()
    if x.shape[1] != channels:
        # ITU-R 601 luma, the weights Pillow's "L" conversion uses; gray -> RGB repeats the plane.
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True) if channels == 1 \
            else x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top:top + side, left:left + side]
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def read_images(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """Decode image files with the dataset readers' decoder (Pillow, center crop, resize)."""
    if not paths:
        raise UsageError("predict: no image paths given")
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            out.numpy()[i] = decode(path, size, channels)[0]  # a numpy copy: decoded arrays are read-only
        except BadImage as exc:
            raise DataError(f"{path}: {exc}") from None
    return out


def find_recipe(model_file: Path) -> Path:
    """The recipe.yaml of the run holding ``model_file``: the nearest one walking up."""
    for folder in model_file.resolve().parents:
        if (folder / "recipe.yaml").is_file():
            return folder / "recipe.yaml"
    raise CheckpointError(f"{model_file}: no recipe.yaml in its folder or any folder above (not inside a run directory)")


def read_build(state: dict[str, Any], path: Path) -> dict[str, Any]:
    build = state.get("build")
    if not isinstance(build, dict) or {"num_subjects", "image_shape", "num_classes"} - set(build):
        raise CheckpointError(f"{path}: records no build metadata (written by an older facedapt, or a periodic "
                              "checkpoint); use a model.pt from a current run")
    return build


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", plugins: Plugins | None = None) -> Model:
    """Rebuild a trained model without reading any data.

    ``path``: a run directory (its source model), a subject or personalized directory (its
    adapted model.pt) or a model.pt file; the recipe is the nearest recipe.yaml above it.
    """
    from facedapt.engine.build import build_method, input_conventions, load_state
    from facedapt.engine.rundir import find_model_file

    given = Path(path).expanduser()
    if not given.exists():
        raise CheckpointError(f"{given}: no such file or directory")
    file = find_model_file(given)
    device = torch.device(device)
    state = checkpoint.load(file, map_location=device)
    build = read_build(state, file)
    loaded = load_recipe(find_recipe(file))
    plugins = plugins or get_plugins(loaded.recipe.plugins.block)
    image_shape = tuple(int(x) for x in build["image_shape"])
    # Pretrained weights files are not read again: model.pt holds every weight and buffer, the
    # input conventions' included, and may be used where those files are not.
    method = build_method(plugins, loaded.recipe, int(build["num_subjects"]), image_shape, int(build["num_classes"]),
                          load_weights=False)
    for m in method.models.values():
        m.to(device)
    try:
        load_state(method, state["models"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{file}: weights do not fit the networks its recipe builds "
                              f"({str(exc).splitlines()[0][:200]})") from None
    method.train(False)
    kind = state.get("kind", state.get("phase"))
    info = {k: state[k] for k in ("kind", "target", "method", "recipe_digest") if k in state}
    try:
        precision = resolve_precision(loaded.recipe.train.precision, device)
    except UsageError:  # fp16 (a CUDA training choice) asked for on the CPU
        precision = "fp32"
    return Model(method, loaded, file, image_shape, tuple(EXPRESSIONS[:int(build["num_classes"])]),
                 "source" if kind == "source" else "target", device, precision, info, input_conventions(method))


def evaluate_dataset(model: Model, dataset: str, options: dict[str, Any] | None = None,
                     plugins: Plugins | None = None) -> dict[str, Any]:
    """Score ``model`` on every labelled image of a registered dataset, read at the model's
    image size and channels where the reader takes them (resized here where it does not).

    Returns results.json keys (``target_*`` are means over the dataset's subjects) plus the
    pooled ``accuracy``, ``uar``, ``macro_f1`` and ``n`` over all images.
    """
    from facedapt.data.splits import Domain, labelled
    from facedapt.engine.evaluate import predict_domain, score
    from facedapt.engine.results import aggregate
    from facedapt.engine.build import materialize_dataset
    from facedapt.recipe.schema import Component

    plugins = plugins or get_plugins(model.recipe.plugins.block)
    plugins.registry("datasets").entry(dataset, key="--dataset")  # an unknown name: the error names the option
    c, h, _ = model.image_shape
    samples = materialize_dataset(plugins, Component(dataset, dict(options or {})), model.recipe.data.on_bad_image,
                                  image_size=h, channels=c, key=f"dataset {dataset}")
    if samples.image_shape != model.image_shape:
        samples = attrs.evolve(samples, images=fit_tensor(samples.images, h, c))
    num_classes = len(model.classes)
    keep = labelled(samples, torch.arange(len(samples)))
    unknown = keep[samples.expression[keep] >= num_classes]
    if len(unknown):
        # e.g. contempt images for a 7-class model: no prediction can be right, so leave them out.
        from loguru import logger

        names = sorted({EXPRESSIONS[int(e)] for e in samples.expression[unknown]})
        logger.warning("{}: left out {} image(s) of class(es) the model does not know: {}", dataset, len(unknown),
                       ", ".join(names))
        keep = keep[samples.expression[keep] < num_classes]
    if len(keep) == 0:
        raise DataError(f"dataset {dataset!r}: no image with an expression label the model knows")
    domain = Domain(samples, keep)
    pred = predict_domain(model.method, domain, model.device, model.recipe.eval.batch_size, model.amp,
                          domain_name=model.domain)["pred"]
    metrics = model.recipe.eval.metrics
    per_subject = {}
    for i, sid in enumerate(samples.subject_ids):
        mask = samples.subject[keep] == i
        if mask.any():
            per_subject[sid] = score(Domain(samples, keep[mask]), pred[mask], plugins, metrics, num_classes)
    results = aggregate(per_subject, model.recipe, model.precision, num_classes)
    pooled = score(domain, pred, plugins, metrics, num_classes)
    results.update({k: pooled[k] for k in (*metrics, "n")})
    results["per_yaw_pooled"] = pooled["per_yaw"]
    results["confusion"] = pooled["confusion"]
    results.update({"checkpoint": str(model.path), "dataset": dataset, "domain": model.domain})
    results.pop("timing", None)
    return results
