"""riskmon: real-time risk monitoring for trading accounts."""

__version__ = "0.1.0"
