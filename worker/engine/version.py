"""The installed package's version, read from its metadata (the engine imports nothing above it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryoclust")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
