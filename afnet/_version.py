"""The package version, in one place: ``afnet.__version__`` and the packaging metadata read it."""

__version__ = "0.1.0"
