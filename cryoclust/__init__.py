"""cryoclust: 2D classification of cryo-EM particle images."""

from worker.engine.version import __version__

__all__ = ["__version__"]
