"""The simai version: a module of its own, importing nothing, so every layer may read it."""

__version__ = "0.1.0"
