"""The project's error hierarchy.

Every error a user can cause (a bad file, a bad key, bad weights) is one of these. The CLI turns them
into one line that names the file, the record or key, and what to do, and exits with code 2.
"""

from __future__ import annotations


class CTSearcherError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class DataError(CTSearcherError):
    """A dataset, feature or prediction file is missing, malformed or inconsistent."""


class ConfigError(CTSearcherError):
    """A configuration key, value or override is unknown or invalid."""


class CheckpointError(CTSearcherError):
    """A checkpoint is missing, incomplete or incompatible with the configuration."""


class WeightsError(CTSearcherError):
    """A weights file (MONAI, upstream CT-Searcher) is unreadable, unsafe or mismatched."""


class OutputError(CTSearcherError):
    """An output cannot be written: it would replace an input, a folder is in the way, the
    location is not writable, or the disk is full. Nothing already written is lost."""
