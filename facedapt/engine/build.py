"""Building what a recipe names: the method and its networks, the datasets (with the arguments
the engine supplies), the protocol's targets, and loading saved weights into the networks.

Every path that needs one of these (the runner, sweeps, model loading and evaluation,
personalization, the benchmarks) calls the functions here, so they build alike.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from loguru import logger

from facedapt.data.batches import CANONICAL, InputConvention, input_convention
from facedapt.data.samples import NUM_POSE_BINS, Samples
from facedapt.data.splits import SplitRequest, Target
from facedapt.data.store import materialize
from facedapt.engine import distributed
from facedapt.engine.context import BuildContext
from facedapt.errors import DataError
from facedapt.method import Method
from facedapt.plugin_manager import Plugins
from facedapt.recipe.schema import Component, Recipe
from facedapt.registry import bind_kwargs

#: A model's weights as saved: model name -> state dict.
ModelStates = dict[str, dict[str, torch.Tensor]]


def build_method(plugins: Plugins, recipe: Recipe, num_subjects: int, image_shape: tuple[int, int, int],
                 num_classes: int, load_weights: bool = True) -> Method:
    """The recipe's method with its networks built for these shapes.

    ``load_weights=False``: components that start from a weights file (those whose factory takes
    ``load_weights``) are built with their layout and input convention but without reading the
    file, for a saved model whose model.pt holds every weight (it may be used where the file is not).
    """
    method = plugins.registry("methods").get(recipe.method.name)(**recipe.method.kwargs)
    roles = dict(getattr(method, "roles", {}))
    model = dict(recipe.model)
    if not load_weights:
        for role, comp in model.items():
            if role in roles and "load_weights" in factory_params(plugins.registry(roles[role]).get(comp.name)):
                model[role] = Component(comp.name, {**comp.kwargs, "load_weights": False})
    ctx = BuildContext(plugins, roles, model, num_classes, NUM_POSE_BINS, num_subjects, image_shape)
    method.models = method.build(ctx)
    return method


def input_conventions(method: Method) -> dict[str, InputConvention]:
    """Each network's input convention (facedapt.data.batches.InputConvention), for those that
    differ from the engine's canonical input: what their weights expect and were trained on."""
    out = {}
    for name, module in method.models.items():
        convention = input_convention(module)
        if convention != CANONICAL:
            out[name] = convention
    return out


def build_info(num_subjects: int, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """What every model.pt records so that build_method can rebuild its networks without data
    (plain ints and lists: weights_only loading)."""
    return {"num_subjects": int(num_subjects), "image_shape": [int(x) for x in image_shape],
            "num_classes": int(num_classes)}


def to_device(method: Method, device: torch.device, channels_last: bool) -> None:
    for m in method.models.values():
        if channels_last:
            m.to(device, memory_format=torch.channels_last)
        else:
            m.to(device)


def build_augmentations(plugins: Plugins, recipe: Recipe) -> list[Any]:
    return [plugins.registry("augmentations").get(a.name)(**a.kwargs) for a in recipe.data.augment]


def factory_params(factory: Any) -> set[str]:
    """The keyword names a factory accepts (empty where it has no signature)."""
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def materialize_dataset(plugins: Plugins, comp: Component, on_bad_image: str, *, image_size: int | None = None,
                        channels: int | None = None, key: str | None = None) -> Samples:
    """A dataset component, built and materialized.

    The engine supplies ``on_bad_image`` and, where given, ``image_size`` and ``channels`` (a
    trained model's input) to a reader that takes them, unless the component sets them itself.
    With ``key`` the name and arguments are checked first, and errors name ``key``.
    """
    factory = plugins.registry("datasets").entry(comp.name, key=key).factory
    accepted = factory_params(factory)
    supplied = {"on_bad_image": on_bad_image, "image_size": image_size, "channels": channels}
    kwargs = {**{k: v for k, v in supplied.items() if v is not None and k in accepted}, **comp.kwargs}
    if key is not None:
        bind_kwargs(factory, kwargs, key=key)
    return materialize(factory(**kwargs))


def num_classes_of(samples: list[Samples]) -> int:
    top = max(int(s.expression.max()) for s in samples)
    if top < 0:
        raise DataError("no image in the data has an expression label")
    return top + 1


def load_targets(plugins: Plugins, recipe: Recipe) -> tuple[list[Target], int]:
    """The recipe's datasets, materialized, and its protocol's targets; plus the number of
    expression classes in the data."""
    data = recipe.data
    with distributed.main_first():  # rank 0 fills the dataset cache, the others read it
        source = materialize_dataset(plugins, data.dataset, data.on_bad_image)
        target = (materialize_dataset(plugins, data.target_dataset, data.on_bad_image)
                  if data.target_dataset is not None else None)
    for s in (source, target):
        if s is not None and s.problems:
            logger.warning("dataset {}: {} problem(s) skipped, e.g. {}: {}", s.dataset, len(s.problems),
                           s.problems[0]["path"], s.problems[0]["problem"])
    if target is not None and target.image_shape != source.image_shape:
        raise DataError(f"source images are {source.image_shape} but target images are {target.image_shape}; "
                        "give both datasets the same image_size and channels")
    protocol = plugins.registry("protocols").get(data.protocol.name)(**data.protocol.kwargs)
    request = SplitRequest(data.target_subjects, data.target_holdout, data.source_val, recipe.seed)
    targets = protocol.split(source, target, request)
    if not targets:
        raise DataError("the protocol produced no target")
    for t in targets:
        if len(t.adapt) == 0:
            raise DataError(f"target {t.id!r} has no images to adapt on")
    return targets, num_classes_of([source] + ([target] if target is not None else []))


def model_state(method: Method) -> ModelStates:
    """A copy of every network's weights (detached: later steps do not change it)."""
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in method.models.items()}


def load_state(method: Method, models: ModelStates) -> None:
    """Load saved weights into every network (each must be there and fit exactly)."""
    for name, m in method.models.items():
        m.load_state_dict(models[name])


def load_matching(method: Method, models: ModelStates) -> tuple[int, list[str]]:
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
