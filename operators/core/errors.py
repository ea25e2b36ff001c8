"""Errors that name a problem with the user's input, model or configuration.

Apps catch :class:`AppInputError` at the top level and turn it into a one-line message and a
non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AppInputError(Exception):
    """Base class: the input, the model or the configuration cannot be used, for a stated reason."""


class NoUsableSeriesError(AppInputError):
    """No DICOM series in the input qualifies for the app."""


class InvalidSeriesError(AppInputError):
    """The chosen series cannot be turned into a volume (gaps, uneven spacing, mixed geometry)."""


class ModelLoadError(AppInputError):
    """The model file is not a model, or its contract does not match the app's."""


class SlideReadError(AppInputError):
    """A whole-slide image cannot be opened or read: not a slide, truncated, unsupported, or without a resolution."""


class OutputFolderError(AppInputError):
    """The output folder cannot take the run's outputs: not creatable, not writable, or without room."""


class OutputWriteError(OutputFolderError):
    """An output file could not be written (no room, a file-size limit, a short write, a folder that refuses it).

    ``file_name`` names the file and ``errno`` the system's reason, None when the library gave none.
    """

    def __init__(self, message: str, file_name: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name
        self.errno = errno


class ModelIntegrityError(ModelLoadError):
    """The model's weights do not match the SHA-256 its model card carries."""


class ImplausibleResultError(AppInputError):
    """A result fails a plausibility check (e.g. non-finite network outputs) and is not written."""


class UnsuitableSeriesError(AppInputError):
    """The series cannot hold what the app looks for (e.g. a head CT given to the spleen app)."""
