"""Loading plugins and filling the registries.

Load order (as tox does it): built-in plugin modules, then third-party entry points of the
``facedapt`` group (unless ``FACEDAPT_DISABLE_PLUGIN_AUTOLOAD`` is set; ``FACEDAPT_PLUGINS=a,b``
loads only the named ones), minus blocked names. Essential built-ins, those that register what
the core's defaults name, cannot be blocked. A plugin that fails to import is reported and
skipped; only a recipe that needs one of its names fails, with that plugin's error in the message.

Every registration is a pluggy hook call, one per plugin and family, so that
``FACEDAPT_TRACE_PLUGINS=1`` (pluggy's hook call tracing, written to stderr) shows each
registration hook, the plugin it belongs to and every name it registers.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterable, Iterator
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
#: Comma-separated entry-point names: the only third-party plugins loaded (empty: none).
ALLOW_ENV = "FACEDAPT_PLUGINS"
#: Any non-empty value: trace every hook call (registrations included) to stderr.
TRACE_ENV = "FACEDAPT_TRACE_PLUGINS"

#: Built-in plugin modules, registered directly like pytest's default plugins.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "facedapt_plugins.backbones",
    "facedapt_plugins.fer_model",
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
    "facedapt_plugins.report",
)

#: Built-ins that register or do what the core's defaults name (facedapt.recipe.schema): every
#: recipe that leaves those keys out relies on them, so blocking one is refused, as pytest refuses
#: ``-p no:`` for its essential plugins. Value: what the defaults take from it.
ESSENTIAL_PLUGINS: dict[str, str] = {
    "facedapt_plugins.protocols": "the default protocol of data.protocol",
    "facedapt_plugins.metrics": "the default metrics of eval.metrics",
    "facedapt_plugins.report": ("the run-end hook that writes the report eval.report asks for; eval.report=false or "
                                "--no-report switch it off"),
}


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


def _builtin_name(name: str) -> str | None:
    """The built-in module a block name means (its full or its last dotted part), if any."""
    return next((m for m in BUILTIN_PLUGINS if name in (m, m.rpartition(".")[2])), None)


def check_blockable(name: str, *, source: str) -> None:
    """Refuse to block an essential built-in; ``source`` says where the name came from."""
    module = _builtin_name(name)
    if module in ESSENTIAL_PLUGINS:
        raise PluginError(f"{source}: the built-in plugin {module} is essential (it registers "
                          f"{ESSENTIAL_PLUGINS[module]}) and cannot be blocked")


def allowed_plugins() -> set[str] | None:
    """The entry-point names ``FACEDAPT_PLUGINS`` allows, or None when it is unset."""
    value = os.environ.get(ALLOW_ENV)
    return None if value is None else {n.strip() for n in value.split(",") if n.strip()}


def load_plugins(block: Iterable[str] = (), extra: Iterable[ModuleType | object] = ()) -> Plugins:
    """Load built-ins, entry points and ``extra`` plugin objects, then fill the registries.

    ``block`` names entry points (or built-in module names) to skip; names blocked on the
    command line (see ``command_line_block``) are added.
    """
    block = tuple(block)
    for name in block:
        check_blockable(name, source=f"plugins.block: {name!r}")
    blocked = {*block, *_command_line_block}
    pm = _new_manager()
    if os.environ.get(TRACE_ENV):
        # Look sys.stderr up at each write: it may be replaced after loading (tests capture it).
        pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
        pm.enable_tracing()
    trace = pm.trace.root.get("load")  # silent unless tracing is on
    origins: dict[str, Origin] = {}
    failed: list[FailedPlugin] = []
    own = Origin("", "facedapt", facedapt.__version__)

    for module_name in BUILTIN_PLUGINS:
        short = module_name.rpartition(".")[2]
        if module_name in blocked or short in blocked:
            trace("skip", module_name, "(blocked)")
            continue
        module = importlib.import_module(module_name)  # a broken built-in is a bug: let it raise
        pm.register(module, name=module_name)
        trace("built-in", module_name)
        origins[module_name] = attrs.evolve(own, plugin=module_name)

    allowed = allowed_plugins()
    # An allow-list names what to load, so it applies even where autoloading is switched off
    # (as PYTEST_PLUGINS does under PYTEST_DISABLE_PLUGIN_AUTOLOAD).
    if allowed is not None or not os.environ.get(AUTOLOAD_ENV):
        seen: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "<unknown>"
            version = ep.dist.version if ep.dist else ""
            seen.add(ep.name)
            if dist == "facedapt":
                continue
            if ep.name in blocked or (allowed is not None and ep.name not in allowed):
                trace("skip", ep.name, f"({dist})", "(blocked)" if ep.name in blocked else f"(not in {ALLOW_ENV})")
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
            trace("entry point", ep.name, f"({dist} {version})")
        for name in sorted((allowed or set()) - seen - blocked):
            failed.append(FailedPlugin(name, "<not installed>", f"{ALLOW_ENV} names it, but no installed "
                                       f"distribution has a {ENTRY_POINT_GROUP!r} entry point of that name"))
            logger.warning("plugin {} named in {} is not installed", name, ALLOW_ENV)

    for obj in extra:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        pm.register(obj, name=name)
        origins[name] = Origin(name, "<local>", "")

    pm.check_pending()
    registries = {family: Registry(family, trace=pm.trace.root.get("registry")) for family in hookspecs.FAMILIES}
    loaded = pm.get_plugins()
    for family, registry in registries.items():
        name = f"facedapt_register_{family}"
        # One hook call per plugin, in registration order, so that each registration knows its
        # plugin of origin and still goes through pluggy (where tracing and monitoring see it).
        for impl in reversed(getattr(pm.hook, name).get_hookimpls()):
            registry.origin = origins.get(impl.plugin_name, Origin(impl.plugin_name, "<local>", ""))
            pm.subset_hook_caller(name, remove_plugins=[p for p in loaded if p is not impl.plugin])(registry=registry)
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
_command_line_block: tuple[str, ...] = ()


@contextlib.contextmanager
def command_line_block(names: Iterable[str]) -> Iterator[None]:
    """Block ``names`` (from ``-p no:NAME``) in every plugin set loaded inside the block, on top
    of each recipe's own ``plugins.block``: one rule for every subcommand, including those that
    load plugins deep inside the engine (eval, predict)."""
    global _command_line_block
    names = tuple(names)
    for name in names:
        check_blockable(name, source=f"-p no:{name}")
    previous = _command_line_block
    _command_line_block = names
    try:
        yield
    finally:
        _command_line_block = previous


def get_plugins(block: Iterable[str] = ()) -> Plugins:
    """The process-wide plugin set (cached when nothing is blocked)."""
    global _default
    block = tuple(block)
    if block or _command_line_block:
        return load_plugins(block)
    if _default is None:
        _default = load_plugins()
    return _default


def reset_plugins() -> None:
    """Forget the cached plugin set (after installing a plugin at run time, and in tests)."""
    global _default
    _default = None
