"""Configuration: the model (plain dataclasses) and the YAML loader that builds it."""

from monitor.config.loader import load_config
from monitor.config.model import (
    AccountConfig,
    Config,
    DiscoveryConfig,
    HttpConfig,
    HttpTlsConfig,
    MqttConfig,
    ParamValue,
    PolymarketAuthConfig,
    TlsConfig,
    VenueConfig,
    VenueTransport,
)
from monitor.config.secret import Secret, SecretUnavailable

__all__ = [
    "AccountConfig",
    "Config",
    "DiscoveryConfig",
    "HttpConfig",
    "HttpTlsConfig",
    "MqttConfig",
    "ParamValue",
    "PolymarketAuthConfig",
    "Secret",
    "SecretUnavailable",
    "TlsConfig",
    "VenueConfig",
    "VenueTransport",
    "load_config",
]
