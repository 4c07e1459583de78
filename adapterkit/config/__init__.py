"""Recipes as typed config: the schema (`schema.py`) and loading YAML files into it (`load.py`)."""

from .load import apply_override, is_hub_id, load_recipe, plugin_keys, recipe_from_dict, resolve_paths, save_recipe
from .schema import (
    AdapterConfig,
    BackboneConfig,
    DataConfig,
    EarlyStoppingConfig,
    ExportConfig,
    MultitaskConfig,
    Recipe,
    Registries,
    TaskConfig,
    TaskSpec,
    TrainingConfig,
)

__all__ = [
    "AdapterConfig",
    "BackboneConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExportConfig",
    "MultitaskConfig",
    "Recipe",
    "Registries",
    "TaskConfig",
    "TaskSpec",
    "TrainingConfig",
    "apply_override",
    "is_hub_id",
    "load_recipe",
    "plugin_keys",
    "recipe_from_dict",
    "resolve_paths",
    "save_recipe",
]
