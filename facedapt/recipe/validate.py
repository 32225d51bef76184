"""Whole-recipe validation without building a model or reading data: every component's
name is looked up in its registry and its arguments are bound to the factory's signature."""

from __future__ import annotations

from typing import Any

from facedapt.errors import RecipeError
from facedapt.plugin_manager import Plugins
from facedapt.recipe.load import LoadedRecipe
from facedapt.recipe.schema import Component
from facedapt.registry import bind_kwargs, import_dotted

#: Arguments the engine passes to factories of each family (part of the plugin contract):
#: a recipe need not, and should not, give them.
ENGINE_ARGS: dict[str, tuple[str, ...]] = {
    "backbones": ("in_channels", "image_size"),
    "heads": ("in_features", "out_features", "num_classes"),
    "discriminators": ("in_features", "num_classes"),
    "decoders": ("in_features", "out_channels", "image_size"),
    "optimizers": ("params",),
    "schedulers": ("optimizer",),
    "metrics": ("confusion",),
}


def check_component(plugins: Plugins, family: str, comp: Component, key: str, file: str | None) -> Any:
    """Look ``comp`` up in ``family``'s registry and bind its arguments; returns the factory."""
    registry = plugins.registry(family)
    try:
        entry = registry.entry(comp.name, key=f"{key}.name", file=file)
    except RecipeError as exc:
        raise RecipeError(f"{exc}{plugins.failure_hint()}") from None
    bind_kwargs(entry.factory, comp.kwargs, key=key, file=file, provided=ENGINE_ARGS.get(family, ()))
    return entry.factory


def _construct(factory: Any, comp: Component, file: str | None) -> None:
    """Make a method or protocol from the recipe's arguments, so that their values are checked
    before a run (their constructors check values and touch no data and no networks)."""
    try:
        factory(**comp.kwargs)
    except RecipeError as exc:
        if exc.file is None:
            raise RecipeError(str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc), file=file,
                              key=exc.key) from None
        raise


def check_dotted(comp: Component, family: str, key: str, file: str | None) -> None:
    factory = import_dotted(comp.name, key=f"{key}.name", file=file)
    bind_kwargs(factory, comp.kwargs, key=key, file=file, provided=ENGINE_ARGS[family])


def validate(loaded: LoadedRecipe, plugins: Plugins) -> None:
    """Raise RecipeError (naming file, key and value) for the first problem found."""
    r, file = loaded.recipe, loaded.path
    data = r.data
    check_component(plugins, "datasets", data.dataset, "data.dataset", file)
    if data.target_dataset is not None:
        check_component(plugins, "datasets", data.target_dataset, "data.target_dataset", file)
    _construct(check_component(plugins, "protocols", data.protocol, "data.protocol", file), data.protocol, file)
    for i, aug in enumerate(data.augment):
        check_component(plugins, "augmentations", aug, f"data.augment[{i}]", file)
    _check_targets(data.target_subjects, file)
    if not 0.0 <= data.target_holdout < 1.0:
        raise RecipeError(f"must be in [0, 1), got {data.target_holdout}", file=file, key="data.target_holdout")
    if not 0.0 <= data.source_val < 1.0:
        raise RecipeError(f"must be in [0, 1), got {data.source_val}", file=file, key="data.source_val")

    method = check_component(plugins, "methods", r.method, "method", file)
    _construct(method, r.method, file)
    roles: dict[str, str] = getattr(method, "roles", {})
    for role, comp in r.model.items():
        if role not in roles:
            raise RecipeError(f"{r.method.name} has no model role {role!r}; roles: {', '.join(roles) or 'none'}", file=file, key=f"model.{role}")
        check_component(plugins, roles[role], comp, f"model.{role}", file)

    for i, metric in enumerate(r.eval.metrics):
        check_component(plugins, "metrics", Component(metric), f"eval.metrics[{i}]", file)

    t = r.train
    check_dotted(t.optimizer, "optimizers", "train.optimizer", file)
    if t.adapt_optimizer is not None:
        check_dotted(t.adapt_optimizer, "optimizers", "train.adapt_optimizer", file)
    for group, comp in t.group_optimizers.items():
        check_dotted(comp, "optimizers", f"train.group_optimizers.{group}", file)
    if t.scheduler is not None:
        check_dotted(t.scheduler, "schedulers", "train.scheduler", file)
    if t.source_steps == 0 and t.init_from is None:
        raise RecipeError("0 source steps needs train.init_from (a trained source run, or `built` for a model whose "
                          "weights files make it complete)", file=file, key="train.source_steps")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise RecipeError(f"must be positive, got {t.grad_clip}", file=file, key="train.grad_clip")
    if t.target_batch_size is not None and t.target_batch_size <= 0:
        raise RecipeError(f"must be positive, got {t.target_batch_size}", file=file, key="train.target_batch_size")


def _check_targets(value: Any, file: str | None) -> None:
    key = "data.target_subjects"
    if value == "all":
        return
    if isinstance(value, dict):
        if set(value) != {"first"} or not isinstance(value["first"], int) or isinstance(value["first"], bool) or value["first"] <= 0:
            raise RecipeError(f"expected {{first: N}} with N > 0, got {value!r}", file=file, key=key)
        return
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return
    raise RecipeError(f"expected `all`, `{{first: N}}` or a non-empty list of subject ids, got {value!r}", file=file, key=key)
