"""NovaNet configuration: pydantic models, file + environment loading."""

from novanet_core.config.loader import load_config
from novanet_core.config.models import NovaNetConfig

__all__ = ["NovaNetConfig", "load_config"]
