"""cryoclust: 2D classification of cryo-EM particle images."""

__version__ = "0.1.0"
