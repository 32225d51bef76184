"""Reading recipes: safe YAML, ``extends:``, command-line overrides, bundled recipes."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import yaml

from facedapt.errors import RecipeError
from facedapt.recipe.schema import Recipe, build


@attrs.frozen
class LoadedRecipe:
    """A validated recipe plus the fully resolved plain data it came from."""

    recipe: Recipe
    resolved: dict[str, Any]  # extends merged, overrides applied: what recipe.yaml in a run holds
    path: str | None

    @property
    def digest(self) -> str:
        return recipe_digest(self.resolved)


def recipe_digest(resolved: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bundled_dir() -> Path:
    """Folder of the recipes that ship inside the distribution."""
    try:
        return Path(str(resources.files("facedapt.recipes")))
    except (ModuleNotFoundError, TypeError):
        return Path(__file__).resolve().parents[2] / "recipes"


def bundled_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(bundled_dir().glob("*.yaml"))}


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file by path, or a bundled recipe by name (``pada`` or ``pada.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if stem in bundled and (len(path.parts) == 1 or not path.exists()):
        return bundled[stem]
    if path.exists():
        raise RecipeError("not a file", file=str(path))
    raise RecipeError(f"no such recipe file or bundled recipe; bundled: {', '.join(bundled) or 'none'}", file=str(path))


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: ``1e-4`` and ``3e-05`` are floats
    (YAML 1.1 wants a dot in the mantissa and would hand an optimizer the string "1e-4")."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` (no object construction) with YAML 1.2 exponent floats."""
    loader = _SafeLoader(text)  # a SafeLoader: plain data only, never Python objects
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"invalid YAML: {where}{problem}", file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe is a mapping of sections, got {type(data).__name__}", file=str(path))
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``over`` replace. A component whose ``name``
    changes replaces the whole component, so old arguments don't leak into a new factory."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        old = out.get(key)
        same_component = not (isinstance(old, dict) and isinstance(value, dict) and "name" in value and value.get("name") != old.get("name"))
        if isinstance(old, dict) and isinstance(value, dict) and same_component:
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in _seen:
        raise RecipeError("`extends` forms a cycle", file=str(path), key="extends")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"expected a file name, got {parent!r}", file=str(path), key="extends")
    parent_path = Path(parent) if Path(parent).is_absolute() else path.parent / parent
    if not parent_path.is_file():
        try:
            parent_path = find_recipe(parent)  # a bundled recipe by name
        except RecipeError:
            raise RecipeError(f"extended recipe {parent!r} not found", file=str(path), key="extends") from None
    return merge(resolve_file(parent_path, (*_seen, path)), data)


def _parse_key(key: str, source: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise RecipeError(f"bad override key {key!r}", file=source)
    return parts


def is_override(arg: str) -> bool:
    """``key=value`` or ``~key``: on the command line such an argument is an override, never a
    recipe file, whatever files exist."""
    return "=" in arg or arg.startswith("~")


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "command line") -> dict[str, Any]:
    """``a.b=v`` sets (v parsed as YAML: numbers, lists, null), ``~a.b`` deletes."""
    out = copy.deepcopy(data)
    for item in overrides:
        if item.startswith("~"):
            parts = _parse_key(item[1:], source)
            node = out
            for p in parts[:-1]:
                node = node.get(p) if isinstance(node, dict) else None
            if not isinstance(node, dict) or parts[-1] not in node:
                raise RecipeError("cannot delete: key not in recipe", file=source, key=item[1:])
            del node[parts[-1]]
            continue
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value or ~key", file=source)
        key, _, raw = item.partition("=")
        parts = _parse_key(key.strip(), source)
        try:
            value = safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise RecipeError(f"cannot parse value {raw!r}", file=source, key=key) from None
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                if p in node and node[p] is not None and not isinstance(node[p], str):
                    raise RecipeError(f"{p!r} is not a section", file=source, key=key)
                # A string component ("resnet18") becomes a mapping when an argument is set.
                node[p] = {"name": node[p]} if isinstance(node.get(p), str) else {}
            node = node[p]
        leaf = parts[-1]
        if len(parts) > 1 and leaf == "name" and node.get("name") not in (None, value):
            node.clear()  # a component whose name changes drops its old arguments (as in merge)
        node[leaf] = merge({leaf: node[leaf]}, {leaf: value})[leaf] if leaf in node else value
    return out


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read, merge and validate the schema of a recipe (plugin names are checked by validate)."""
    file = find_recipe(path)
    data = apply_overrides(resolve_file(file), list(overrides))
    data.setdefault("name", file.stem)
    recipe = build(Recipe, data, file=str(file))
    return LoadedRecipe(recipe, data, str(file))


def write_resolved(loaded: LoadedRecipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(loaded.resolved, sort_keys=False), encoding="utf-8")
