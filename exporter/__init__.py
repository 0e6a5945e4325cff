"""mailflow-exporter: Prometheus exporter for Microsoft Exchange mail flow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mailflow-exporter")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
