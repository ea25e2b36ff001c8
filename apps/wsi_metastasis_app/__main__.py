"""Entry point: ``python apps/wsi_metastasis_app -i SLIDE_OR_FOLDER -o OUTPUT_FOLDER [-m MODEL] [options]``.

The SDK's options (-i/-o/-m/-w/-l, or the HOLOSCAN_* variables a MAP container sets) pass through;
the options below are the app's own. Without -m or HOLOSCAN_MODEL_PATH the project's default model
is used. Results go to OUTPUT_FOLDER/<slide name>/.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

_APP_DIR = Path(__file__).resolve().parent
for _root in (_APP_DIR, _APP_DIR.parent.parent):  # packaged MAP app folder, or this repository
    if (_root / "operators").is_dir():
        sys.path.insert(0, str(_root))
        break

from apps.common.entrypoint import (  # noqa: E402
    ensure_stack_size,
    ensure_writable_cupy_cache,
    exit_if_output_unusable,
    handle_interrupts,
    run_app,
    with_default_model,
)

# Room the output folder must have before any work: a slide's outputs are a few MiB on the demo slide and
# about 60 MiB for a 100,000 x 100,000 slide (the map's .npy and .tif at 7.8 um per cell, and the SEG).
MIN_FREE_OUTPUT_BYTES = 128 * 2**20

ensure_stack_size()  # before Holoscan is imported: it may start this process again
ensure_writable_cupy_cache()
if __name__ == "__main__":  # run as the app (not imported): check the output folder before seconds of imports
    handle_interrupts(sys.argv[1:], "wsi_metastasis_app")  # before any thread starts: Holoscan's handlers would leave a partial run
    exit_if_output_unusable(sys.argv[1:], MIN_FREE_OUTPUT_BYTES, "wsi_metastasis_app")

from apps.common.options import add_result_options  # noqa: E402
from apps.wsi_metastasis_app.app import DEFAULT_MODEL_PATH, SlideBatchError, WsiAppOptions, run_slides  # noqa: E402
from operators.core.device import add_compute_options  # noqa: E402
from operators.models.runtime import BACKENDS as RUNTIME_BACKENDS  # noqa: E402
from operators.wsi.inference import InferenceMode  # noqa: E402
from operators.wsi.slide.backend_choice import BACKENDS  # noqa: E402


class _NetworkOrOldSlideBackend(argparse.Action):
    """``--backend`` names the network runtime; before it did, it named the slide reader, and a reader's name
    (cucim, openslide, tifffile) is still taken as ``--slide-backend``, with a warning, because users script it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values in RUNTIME_BACKENDS:
            namespace.backend = values
        elif values in BACKENDS:
            logging.getLogger(__name__).warning("--backend %s names a slide reader: use --slide-backend %s", values, values)
            namespace.slide_backend = values
        else:
            parser.error(f"argument --backend: invalid choice {values!r} (choose from {', '.join(RUNTIME_BACKENDS)})")


def parse_app_options(argv: list[str]) -> tuple[WsiAppOptions, list[str]]:
    """The app's own options, and the remaining arguments for the SDK's parser."""
    parser = argparse.ArgumentParser(prog="wsi_metastasis_app", add_help=False)
    parser.add_argument(
        "--mode",
        choices=get_args(InferenceMode),
        help="dense (fully convolutional tiles) or patch (bundle parity); default: the model config's",
    )
    parser.add_argument("--tta", action="store_true", help="average over the 8 orientations")
    parser.add_argument("--mpp", dest="mpp_override", type=float, help="micrometres per pixel at level 0, overriding the slide's metadata")
    parser.add_argument("--slide-backend", choices=BACKENDS, default="auto", help="slide reader")
    parser.add_argument(
        "--backend",
        action=_NetworkOrOldSlideBackend,
        default="auto",
        metavar="{" + ",".join(RUNTIME_BACKENDS) + "}",
        help="network runtime; auto: the model config's choice for this CPU (OpenVINO where measured faster), torch on CUDA",
    )
    parser.add_argument("--batch-size", type=int, help="windows per forward pass")
    parser.add_argument("--workers", type=int, default=WsiAppOptions.workers, help="region-decoding threads (0: none)")
    add_compute_options(parser, deprecated_no_amp=True)
    parser.add_argument("--nms-threshold", type=float, help="lowest probability reported as a lesion")
    parser.add_argument("--nms-radius-um", type=float, help="suppression radius around each detection, micrometres")
    add_result_options(parser)
    known, rest = parser.parse_known_args(argv)
    if known.mpp_override is not None and known.mpp_override <= 0:
        parser.error("--mpp must be positive")
    return WsiAppOptions(**vars(known)), rest


EXIT_UNEXPECTED = 1


def main() -> int:
    """Exit 0, 2 (input problems, one line; for a folder: some slides failed, the others have their
    outputs), or 1 when a slide met an unexpected failure (its traceback logged; the others processed)."""
    options, sdk_args = parse_app_options(sys.argv[1:])
    sdk_argv = ["python", "wsi_metastasis_app", *with_default_model(sdk_args, DEFAULT_MODEL_PATH)]
    try:
        return run_app(lambda argv: run_slides(argv, options), sdk_argv, "wsi_metastasis_app")
    except SlideBatchError as failure:
        print(f"wsi_metastasis_app: error: {failure}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
