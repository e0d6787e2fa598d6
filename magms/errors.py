"""Errors a user can act on.

``MAGMSError`` carries an :class:`ErrorKind`; the thin subclasses exist so callers can catch one kind.
Messages name the file, volume, key or slot and say what is wrong with it. Programming errors stay
``ValueError``/``TypeError``; the CLI prints a ``MAGMSError`` as one line and exits 2.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorKind", "MAGMSError", "BundleError", "ImageError", "ConfigError"]


class ErrorKind(enum.Enum):
    BUNDLE = "bundle"
    IMAGE = "image"
    CONFIG = "config"


class MAGMSError(Exception):
    """Base class of every error caused by the user's input, not by a bug."""

    kind: ErrorKind = ErrorKind.CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BundleError(MAGMSError):
    """A model bundle is missing, damaged, from an unknown format version or inconsistent."""

    kind = ErrorKind.BUNDLE


class ImageError(MAGMSError):
    """An input image cannot be used (missing, wrong dimension, no overlap, NaN...)."""

    kind = ErrorKind.IMAGE


class ConfigError(MAGMSError):
    """A configuration, option or name is unknown or out of range."""

    kind = ErrorKind.CONFIG
