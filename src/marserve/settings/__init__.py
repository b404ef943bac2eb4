"""Configuration: typed settings built once from config.properties, TS_ env, CLI and model YAML."""

from __future__ import annotations

from marserve.settings.model import (
    MAX_MODEL_YAML_BYTES,
    ModelConfig,
    load_model_yaml,
    model_config,
)
from marserve.settings.properties import parse_properties
from marserve.settings.server import ServerSettings, load_settings
from marserve.settings.values import Address

__all__ = [
    "MAX_MODEL_YAML_BYTES",
    "Address",
    "ModelConfig",
    "ServerSettings",
    "load_model_yaml",
    "load_settings",
    "model_config",
    "parse_properties",
]
