"""Config loading and validation (see design.md section 4)."""

from otelflow.config.errors import ConfigError, ConfigErrors
from otelflow.config.loader import load_config
from otelflow.config.service import ServiceConfig, parse_config

__all__ = ["ConfigError", "ConfigErrors", "ServiceConfig", "load_config", "parse_config"]
