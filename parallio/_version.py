"""The version, in one place: the package, ``--version`` and the build
(pyproject.toml reads it from here) all take it from this file."""

__version__ = "0.1.0"
