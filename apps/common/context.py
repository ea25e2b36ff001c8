"""The SDK's app context, with its model probing's failures named as the model's.

``init_app_context`` detects the model type by opening the model file (``zipfile`` for TorchScript);
on a damaged file that raises whatever zipfile raises (UnicodeDecodeError for a flipped name byte,
BadZipFile, ...), as a traceback, before the app's own loader could name the problem.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from monai.deploy.core import AppContext, init_app_context

from operators.core.errors import ModelLoadError

_SDK_MODEL_PROBING = "/monai/deploy/core/models/"


def app_context(argv: Sequence[str]) -> AppContext:
    """``init_app_context(argv)``; an exception raised while the SDK probes the model is a :class:`ModelLoadError`."""
    try:
        return init_app_context(list(argv))
    except Exception as error:
        if not any(_SDK_MODEL_PROBING in frame.filename.replace("\\", "/") for frame in traceback.extract_tb(error.__traceback__)):
            raise
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ModelLoadError(f"the model file is damaged: the SDK cannot open it ({type(error).__name__}: {first_line})") from None
