"""tilelang's version, in one place (the package root and the disk cache read it)."""

__version__ = "0.1.0"
