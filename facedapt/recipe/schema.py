"""The recipe schema: frozen attrs classes, converted from plain YAML data with errors that
name the file, the key path and the bad value.

Field metadata ``help`` feeds the generated recipe reference in docs/.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, Union

import attrs

from facedapt.errors import RecipeError


def _f(default: Any = attrs.NOTHING, help: str = "", factory: Any = None) -> Any:
    if factory is not None:
        return attrs.field(factory=factory, metadata={"help": help})
    return attrs.field(default=default, metadata={"help": help})


@attrs.frozen
class Component:
    """A registered name (or dotted import path) plus the keyword arguments for its factory."""

    name: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


@attrs.frozen
class DataConfig:
    dataset: Component = _f(help="the source dataset (a registered dataset plugin and its arguments)")
    target_dataset: Component | None = _f(None, "a second dataset as target (cross-dataset protocol)")
    protocol: Component = _f(Component("personalized"), "how samples split into source, source-val and targets")
    target_subjects: Any = _f("all", "`all`, `{first: N}`, or a list of subject ids (strings)")
    target_holdout: float = _f(0.0, "fraction of each target's images held out for evaluation (0: transductive)")
    source_val: float = _f(0.1, "fraction of source subjects held out for the `source_val` selection rule")
    use_target_pose: bool = _f(False, "let methods read target pose labels (off: they never see them)")
    use_target_landmarks: bool = _f(False, "let methods (and target augmentations) read target landmarks, ground truth where a dataset has them (off: they never see them)")
    sampler: Literal["random", "balanced"] = _f("random", "source sampling: uniform, or balanced over subject and pose")
    augment: list[Component] = _f(factory=list, help="on-device augmentations applied to source batches, in order")
    augment_target: bool = _f(False, "apply the same augmentations to target batches")
    on_bad_image: Literal["fail", "skip"] = _f("fail", "unreadable images: stop, or skip and count them")


#: ``train.init_from`` value: no source training and no file to load, the models as built (for a
#: model whose weights files make it complete, e.g. a pretrained real-photo classifier).
BUILT = "built"


@attrs.frozen
class TrainConfig:
    steps: int = _f(help="adaptation steps per target (for methods that adapt)")
    batch_size: int = _f(help="source images per step (targets get as many unless target_batch_size)")
    source_steps: int = _f(0, "steps of training on the source before adapting (0 with init_from)")
    target_batch_size: int | None = _f(None, "target images per step")
    eval_every: int = _f(0, "evaluate every N adaptation steps (0: only at the end)")
    checkpoint_every: int = _f(0, "write a checkpoint every N steps (0: only at phase ends)")
    log_every: int = _f(50, "log losses every N steps")
    optimizer: Component = _f(Component("torch.optim.Adam", {"lr": 1e-3}), "optimizer for source training")
    adapt_optimizer: Component | None = _f(None, "optimizer for adaptation (default: the source optimizer)")
    group_optimizers: dict[str, Component] = _f(factory=dict, help="per optimizer group overrides, e.g. discriminator")
    scheduler: Component | None = _f(None, "a torch.optim.lr_scheduler class by dotted path, stepped every step")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f("auto", "autocast precision; auto: bf16 where supported")
    channels_last: bool = _f(True, "channels_last memory format for image tensors and models")
    init_from: str | None = _f(None, "a run directory or source checkpoint to start from instead of source training; "
                                     "`built`: the models as built (pretrained from their weights files)")
    grad_clip: float | None = _f(None, "clip the gradient norm of each optimizer group")
    nan_policy: Literal["abort", "skip"] = _f("abort", "on a NaN/Inf loss: stop naming the term, or skip the step")
    keep_checkpoints: int = _f(2, "how many periodic checkpoints to keep")
    deterministic: bool = _f(False, "torch deterministic algorithms (exact resume on CPU)")


@attrs.frozen
class EvalConfig:
    selection: Literal["last", "source_val", "oracle"] = _f("last", "which adaptation step's model is reported; oracle reads target labels and is labelled so")
    batch_size: int = _f(256, "evaluation batch size")
    metrics: list[str] = _f(factory=lambda: ["accuracy", "uar", "macro_f1"], help="registered metrics reported per target and averaged (results key target_<name>)")
    leakage_probe: bool = _f(True, "fit linear probes: pose from expression features, expression from pose features")
    probe_steps: int = _f(200, "optimization steps of each linear probe")
    report: bool = _f(True, "write report.md, report.html and plots when the run ends (`--no-report` on the command line; `facedapt report RUN_DIR` builds one later)")


@attrs.frozen
class PluginsConfig:
    block: list[str] = _f(factory=list, help="entry-point names of plugins not to load")


@attrs.frozen
class Recipe:
    data: DataConfig = _f(help="datasets, protocol, sampling and augmentation")
    method: Component = _f(help="the training method plugin and its switches")
    train: TrainConfig = _f(help="steps, batches, optimizers, precision, checkpoints")
    model: dict[str, Component] = _f(factory=dict, help="role -> component (backbone, encoders, heads, discriminators, decoder)")
    eval: EvalConfig = _f(factory=EvalConfig, help="evaluation and model selection")
    seed: int = _f(0, "random seed")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto picks cuda when available")
    plugins: PluginsConfig = _f(factory=PluginsConfig, help="plugin loading")
    name: str = _f("recipe", "recipe name (the file stem by default); names the run directory")


POSITIVE = {"train.steps", "train.batch_size", "eval.batch_size", "eval.probe_steps", "train.keep_checkpoints"}
NON_NEGATIVE = {"train.source_steps", "train.eval_every", "train.checkpoint_every", "train.log_every"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _component(value: Any, file: str | None, key: str) -> Component:
    if isinstance(value, str):
        return Component(value)
    if not isinstance(value, dict):
        raise RecipeError(f"expected a component mapping with 'name:', got {value!r}", file=file, key=key)
    if "name" not in value or not isinstance(value["name"], str):
        raise RecipeError("a component needs 'name:' (a registered name or a dotted path)", file=file, key=key)
    kwargs = {k: v for k, v in value.items() if k != "name"}
    return Component(value["name"], kwargs)


def convert(tp: Any, value: Any, file: str | None, key: str) -> Any:
    """Convert plain YAML data to ``tp``, raising RecipeError naming ``key`` and ``value``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(inner[0], value, file, key)
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{value!r} is not one of {', '.join(map(str, args))}", file=file, key=key)
        return value
    if tp is Component:
        return _component(value, file, key)
    if origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise RecipeError(f"expected a list, got {value!r}", file=file, key=key)
        return [convert(args[0], v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RecipeError(f"expected a mapping, got {value!r}", file=file, key=key)
        return {str(k): convert(args[1], v, file, f"{key}.{k}") for k, v in value.items()}
    if attrs.has(tp):
        return build(tp, value, file, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"expected true or false, got {value!r}", file=file, key=key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"expected an integer, got {value!r}", file=file, key=key)
        return _check_range(value, file, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"expected a number, got {value!r}", file=file, key=key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"expected a string, got {value!r}", file=file, key=key)
        return value
    raise TypeError(f"unsupported schema type {_type_name(tp)} at {key}")


def _check_range(value: int, file: str | None, key: str) -> int:
    if key in POSITIVE and value <= 0:
        raise RecipeError(f"must be positive, got {value}", file=file, key=key)
    if key in NON_NEGATIVE and value < 0:
        raise RecipeError(f"must not be negative, got {value}", file=file, key=key)
    return value


def build(cls: type, data: Any, file: str | None = None, key: str = "") -> Any:
    """Build attrs class ``cls`` from a mapping; unknown keys name the closest known one."""
    prefix = f"{key}." if key else ""
    if not isinstance(data, dict):
        raise RecipeError(f"expected a mapping, got {data!r}", file=file, key=key or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise RecipeError(f"unknown key{hint}", file=file, key=f"{prefix}{name}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(hints[name], data[name], file, f"{prefix}{name}")
        elif field.default is attrs.NOTHING:
            raise RecipeError("missing required key", file=file, key=f"{prefix}{name}")
    return cls(**kwargs)


def fields_reference(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) rows for every recipe key: the generated reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        key = f"{prefix}{field.name}"
        tp = hints[field.name]
        if attrs.has(tp) and tp is not Component:
            rows.append((key, "section", "", field.metadata.get("help", "")))
            rows.extend(fields_reference(tp, f"{key}."))
            continue
        if field.default is attrs.NOTHING:
            default = "required"
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = repr(field.default.factory())
        else:
            default = repr(field.default.to_dict() if isinstance(field.default, Component) else field.default)
        rows.append((key, _type_name(tp), default, field.metadata.get("help", "")))
    return rows
