"""Config loading (`loader`) and validation (`service.parse_config`), see design.md section 4."""

from otelflow.config.errors import ConfigError, ConfigErrors
from otelflow.config.loader import load_config

__all__ = ["ConfigError", "ConfigErrors", "load_config"]
