"""ringflow: a self-hosted voice API server that speaks Exotel's v1 Calls API."""

__version__ = "0.1.0"
