"""Entry point: ``python apps/spleen_seg_app -i DICOM_FOLDER -o OUTPUT_FOLDER [-m MODEL] [options]``.

The SDK's options (-i/-o/-m/-w/-l, or HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH, HOLOSCAN_MODEL_PATH,
HOLOSCAN_WORKDIR as a MAP container sets them) pass through; the options below are the app's own.
Without -m or HOLOSCAN_MODEL_PATH the project's default model is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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

# Room the output folder must have before any work: the SEG of a 1,000-slice 512 x 512 series is 33 MB
# (one bit per voxel), its STL and overlay a few MB more.
MIN_FREE_OUTPUT_BYTES = 64 * 2**20

ensure_stack_size()  # before Holoscan is imported: it may start this process again
ensure_writable_cupy_cache()
if __name__ == "__main__":  # run as the app (not imported): check the output folder before seconds of imports
    handle_interrupts(sys.argv[1:], "spleen_seg_app")  # before any thread starts: Holoscan's handlers would leave a partial run
    exit_if_output_unusable(sys.argv[1:], MIN_FREE_OUTPUT_BYTES, "spleen_seg_app")

from apps.common.options import add_result_options  # noqa: E402
from apps.spleen_seg_app.app import DEFAULT_MODEL_PATH, SpleenAppOptions, SpleenSegApp  # noqa: E402
from operators.core.device import add_compute_options  # noqa: E402
from operators.ct.preflight import ABDOMINAL_POLICIES  # noqa: E402
from operators.ct.series_selector import GANTRY_TILT_POLICIES  # noqa: E402
from operators.models.runtime import add_backend_option  # noqa: E402


def parse_app_options(argv: list[str]) -> tuple[SpleenAppOptions, list[str]]:
    """The app's own options, and the remaining arguments for the SDK's parser."""
    parser = argparse.ArgumentParser(prog="spleen_seg_app", add_help=False)
    parser.add_argument("--no-largest-component", dest="largest_component", action="store_false", help="keep every connected component")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap, 0..1 (default: the model config's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the model config's)")
    parser.add_argument("--no-body-crop", dest="crop_to_body", action="store_false", help="run the sliding window over the whole volume")
    add_compute_options(parser, deprecated_no_amp=True)
    add_backend_option(parser)
    parser.add_argument("--min-slices", type=int, default=SpleenAppOptions.min_slices, help="fewest slices a series may have")
    parser.add_argument(
        "--on-gantry-tilt",
        choices=GANTRY_TILT_POLICIES,
        default=SpleenAppOptions.on_gantry_tilt,
        help="a series whose slice positions step off the slice normal: correct (keep the sheared geometry, default) or refuse (exit 2)",
    )
    parser.add_argument(
        "--on-non-abdominal",
        choices=ABDOMINAL_POLICIES,
        default=SpleenAppOptions.on_non_abdominal,
        help="a series that cannot be abdominal (head, neck, limb; small field of view; short coverage): refuse (exit 2, default) "
        "or warn (run, and flag the result)",
    )
    parser.add_argument(
        "--volume-range-ml",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="plausible spleen volume; a spleen found outside it is flagged (default: the model config's, 20 2500)",
    )
    add_result_options(parser)
    known, rest = parser.parse_known_args(argv)
    if known.overlap is not None and not 0 <= known.overlap < 1:
        parser.error("--overlap must be in [0, 1)")
    if known.volume_range_ml is not None:
        low, high = known.volume_range_ml
        if not 0 <= low < high:
            parser.error("--volume-range-ml needs 0 <= MIN < MAX")
        known.volume_range_ml = (low, high)
    return SpleenAppOptions(**vars(known)), rest


def main() -> int:
    options, sdk_args = parse_app_options(sys.argv[1:])
    sdk_argv = ["python", "spleen_seg_app", *with_default_model(sdk_args, DEFAULT_MODEL_PATH)]
    return run_app(lambda argv: SpleenSegApp(argv, options=options).run(), sdk_argv, "spleen_seg_app")


if __name__ == "__main__":
    sys.exit(main())
