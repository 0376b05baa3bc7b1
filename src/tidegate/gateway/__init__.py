"""The asyncio gateway: TCP clients, UDP ingress, admin HTTP, around the sans-I/O core."""

from tidegate.gateway.config import Config, ConfigError, load_config
from tidegate.gateway.push_api import PushResult
from tidegate.gateway.server import Gateway, open_gateway
from tidegate.gateway.stats import GatewayStatistics

__all__ = [
    "Config",
    "ConfigError",
    "Gateway",
    "GatewayStatistics",
    "PushResult",
    "load_config",
    "open_gateway",
]
