"""Recipes: YAML files composing a run from registered plugins."""

from facedapt.recipe.load import (
    LoadedRecipe,
    apply_overrides,
    bundled_recipes,
    find_recipe,
    load_recipe,
)
from facedapt.recipe.schema import Component, Recipe

__all__ = ["Component", "LoadedRecipe", "Recipe", "apply_overrides", "bundled_recipes", "find_recipe", "load_recipe"]
