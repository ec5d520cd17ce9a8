"""A small web service the delivery demo releases: /healthz and /version on port 8080."""

__version__ = "0.1.0"
