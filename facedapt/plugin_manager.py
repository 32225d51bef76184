"""Loading plugins and filling the registries.

Load order (as tox does it): built-in plugin modules, then third-party entry points of the
``facedapt`` group (unless ``FACEDAPT_DISABLE_PLUGIN_AUTOLOAD`` is set), minus blocked names.
A plugin that fails to import is reported and skipped; only a recipe that needs one of its
names fails, with that plugin's error in the message.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import attrs
import pluggy
from loguru import logger

import facedapt
from facedapt import hookspecs
from facedapt.errors import PluginError
from facedapt.registry import Origin, Registry

ENTRY_POINT_GROUP = "facedapt"
AUTOLOAD_ENV = "FACEDAPT_DISABLE_PLUGIN_AUTOLOAD"

#: Built-in plugin modules, registered directly like pytest's default plugins.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "facedapt_plugins.backbones",
    "facedapt_plugins.heads",
    "facedapt_plugins.discriminators",
    "facedapt_plugins.decoders",
    "facedapt_plugins.losses",
    "facedapt_plugins.methods",
    "facedapt_plugins.datasets.synthetic",
    "facedapt_plugins.datasets.readers",
    "facedapt_plugins.protocols",
    "facedapt_plugins.augmentations",
    "facedapt_plugins.metrics",
    "facedapt_plugins.callbacks",
)


@attrs.frozen
class FailedPlugin:
    name: str
    distribution: str
    error: str


@attrs.define
class Plugins:
    """The loaded plugin set: a pluggy manager plus one registry per family."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry]
    origins: dict[str, Origin]  # plugin name -> origin
    failed: list[FailedPlugin]

    def registry(self, family: str) -> Registry:
        return self.registries[family]

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def distributions(self) -> dict[str, str]:
        """Distribution -> version of every loaded plugin (what a run records)."""
        return {o.distribution: o.version for o in self.origins.values()}

    def failure_hint(self) -> str:
        if not self.failed:
            return ""
        return "; plugins that failed to load: " + ", ".join(f"{f.name} ({f.error})" for f in self.failed)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(block: Iterable[str] = (), extra: Iterable[ModuleType | object] = ()) -> Plugins:
    """Load built-ins, entry points and ``extra`` plugin objects, then fill the registries.

    ``block`` names entry points (or built-in module names) to skip.
    """
    blocked = set(block)
    pm = _new_manager()
    origins: dict[str, Origin] = {}
    failed: list[FailedPlugin] = []
    own = Origin("", "facedapt", facedapt.__version__)

    for module_name in BUILTIN_PLUGINS:
        short = module_name.rpartition(".")[2]
        if module_name in blocked or short in blocked:
            continue
        module = importlib.import_module(module_name)  # a broken built-in is a bug: let it raise
        pm.register(module, name=module_name)
        origins[module_name] = attrs.evolve(own, plugin=module_name)

    if not os.environ.get(AUTOLOAD_ENV):
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "<unknown>"
            version = ep.dist.version if ep.dist else ""
            if ep.name in blocked or dist == "facedapt":
                continue
            if pm.get_plugin(ep.name) is not None:
                raise PluginError(f"plugin name {ep.name!r} is used by two entry points ({dist} and {origins[ep.name].distribution})")
            try:
                module = ep.load()
                pm.register(module, name=ep.name)  # checks hook signatures against the specs
                _check_hook_names(pm, ep.name)
            except Exception as exc:  # any import-time failure or hook mismatch of third-party code
                if pm.get_plugin(ep.name) is not None:
                    pm.unregister(name=ep.name)
                failed.append(FailedPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
                logger.warning("plugin {} from {} failed to load and is skipped: {}: {}", ep.name, dist, type(exc).__name__, exc)
                continue
            origins[ep.name] = Origin(ep.name, dist, version)

    for obj in extra:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        pm.register(obj, name=name)
        origins[name] = Origin(name, "<local>", "")

    pm.check_pending()
    registries = {family: Registry(family) for family in hookspecs.FAMILIES}
    for family, registry in registries.items():
        caller = getattr(pm.hook, f"facedapt_register_{family}")
        # Call implementations one by one so each registration knows its plugin of origin.
        for impl in reversed(caller.get_hookimpls()):
            registry.origin = origins.get(impl.plugin_name, Origin(impl.plugin_name, "<local>", ""))
            impl.function(registry)
        registry.origin = Origin("<library>", "<local>", "")
    return Plugins(pm, registries, origins, failed)


def _check_hook_names(pm: pluggy.PluginManager, name: str) -> None:
    """Reject hook implementations that match no hook of the contract (e.g. a misspelt name),
    as ``check_pending`` would, but for one plugin so that only that plugin is skipped."""
    plugin = pm.get_plugin(name)
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                raise PluginError(f"unknown hook {caller.name!r}")


_default: Plugins | None = None


def get_plugins(block: Iterable[str] = ()) -> Plugins:
    """The process-wide plugin set (cached when nothing is blocked)."""
    global _default
    block = tuple(block)
    if block:
        return load_plugins(block)
    if _default is None:
        _default = load_plugins()
    return _default


def reset_plugins() -> None:
    """Forget the cached plugin set (after installing a plugin at run time, and in tests)."""
    global _default
    _default = None
