"""Registries: one per component family, filled by the registration hooks."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from facedapt.errors import PluginError, RecipeError


@attrs.frozen
class Origin:
    """Which plugin (and distribution) registered a name."""

    plugin: str
    distribution: str
    version: str


@attrs.frozen
class Entry:
    name: str
    factory: Callable[..., Any]
    origin: Origin


class Registry:
    """Name -> factory for one family. ``register`` works plainly or as a decorator.

    ``trace``, when given, is called with each registration (the plugin manager passes a pluggy
    tag tracer, which writes only while plugin tracing is on)."""

    def __init__(self, family: str, trace: Callable[..., object] | None = None) -> None:
        self.family = family
        self._entries: dict[str, Entry] = {}
        self.origin = Origin("<library>", "<local>", "")  # set by the manager per plugin
        self._trace = trace

    def __repr__(self) -> str:  # what a traced hook call shows as its argument
        return f"<Registry {self.family} for {self.origin.plugin} ({self.origin.distribution})>"

    def register(self, name: str, factory: Callable[..., Any] | None = None) -> Any:
        if factory is None:
            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
                self.register(name, fn)
                return fn

            return decorate
        if not callable(factory):
            raise PluginError(f"{self.origin.plugin}: {self.family} {name!r} factory is not callable")
        if name in self._entries:
            old = self._entries[name].origin
            raise PluginError(
                f"{self.family} {name!r} registered twice: by {old.distribution} ({old.plugin}) "
                f"and by {self.origin.distribution} ({self.origin.plugin})"
            )
        self._entries[name] = Entry(name, factory, self.origin)
        if self._trace is not None:
            self._trace("register", self.family, name, "by", self.origin.plugin, f"({self.origin.distribution})")
        return factory

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str, *, key: str | None = None, file: str | None = None) -> Entry:
        """The entry for a registered name or a dotted import path (the escape hatch)."""
        if name in self._entries:
            return self._entries[name]
        if "." in name:
            return Entry(name, import_dotted(name, key=key, file=file), Origin(name, "<import>", ""))
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(self.names()) or 'none'}"
        raise RecipeError(f"unknown {self.family[:-1] if self.family.endswith('s') else self.family} {name!r}{hint}", file=file, key=key)

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).factory


def import_dotted(path: str, *, key: str | None, file: str | None) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise RecipeError(f"{path!r} is not a dotted import path (like torch.optim.AdamW)", file=file, key=key)
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"cannot import {path!r}: {exc}", file=file, key=key) from None
    if not callable(obj):
        raise RecipeError(f"{path!r} is not callable", file=file, key=key)
    return obj


def bind_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], *, key: str, file: str | None = None,
                provided: tuple[str, ...] = ()) -> None:
    """Check that ``kwargs`` bind to ``factory``'s signature without calling it.

    ``provided`` names arguments the engine passes itself (e.g. ``in_features``); they are
    treated as bound.
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    params = sig.parameters
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in kwargs:
        if name in provided:
            raise RecipeError(f"{name!r} is supplied by the engine (from the data or the method's settings); "
                              "remove it here", file=file, key=f"{key}.{name}")
        if name not in params and not accepts_var_kw:
            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; accepted: {', '.join(params) or 'none'}"
            raise RecipeError(f"unexpected argument {name!r}{hint}", file=file, key=f"{key}.{name}")
    for name, p in params.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.default is not p.empty:
            continue
        if name not in kwargs and name not in provided:
            raise RecipeError(f"missing required argument {name!r}", file=file, key=key)
