"""Command-line start-up shared by the apps: stack size, default model, one-line errors, exit codes.

Exit codes: 0 success; 2 a problem with the input, model or options (one line on stderr naming it);
1 an unexpected failure (with its traceback, as it is a bug); 130 (SIGINT) or 143 (SIGTERM) an
interrupt, after removing the unfinished outputs (one line on stderr, operators.core.interrupts).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from operators.core.errors import AppInputError
from operators.core.interrupts import install_interrupt_handler
from operators.core.output_set import check_output_folder

logger = logging.getLogger(__name__)

HOLOSCAN_STACK_BYTES = 32 * 1024 * 1024
EXIT_INPUT_ERROR = 2
_RELAUNCHED = "CLINICAL_AI_APPS_STACK_RAISED"


def ensure_stack_size() -> None:
    """Re-execute this process with the 32 MiB stack Holoscan asks for, when the hard limit allows.

    The C library sizes thread stacks from the limit in force at process start, so raising it in a
    running process is not enough: the process is started again with the same arguments.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= HOLOSCAN_STACK_BYTES or os.environ.get(_RELAUNCHED):
        return
    if hard != resource.RLIM_INFINITY and hard < HOLOSCAN_STACK_BYTES:
        return
    resource.setrlimit(resource.RLIMIT_STACK, (HOLOSCAN_STACK_BYTES, hard))
    os.environ[_RELAUNCHED] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv])


def ensure_writable_cupy_cache() -> None:
    """Give CuPy a writable kernel cache when the home folder is not writable, before anything imports it.

    ``import cupy`` (``monai.deploy.operators`` imports it) creates ``~/.cupy/kernel_cache`` and fails
    when it cannot; a MAP started by ``monai-deploy run`` under a uid the image does not know has HOME=/.
    """
    if os.environ.get("CUPY_CACHE_DIR"):
        return
    try:
        os.makedirs(os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache"), exist_ok=True)
    except OSError:
        os.environ["CUPY_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"cupy-kernel-cache-{os.getuid()}")


def with_default_model(sdk_argv: list[str], default_model: Path) -> list[str]:
    """Add ``-m default_model`` when neither -m/--model nor HOLOSCAN_MODEL_PATH names a model."""
    if any(arg in ("-m", "--model") or arg.startswith("--model=") for arg in sdk_argv) or os.environ.get("HOLOSCAN_MODEL_PATH"):
        return sdk_argv
    return [*sdk_argv, "-m", str(default_model)]


def report_input_error(error: AppInputError, app_name: str) -> int:
    """Log and print ``error`` as one line (``APP: error: ...``); returns the exit code for it."""
    message = f"{app_name}: error: {' '.join(str(error).split())}"  # one line, whatever the library said
    logger.error(message)
    print(message, file=sys.stderr)
    return EXIT_INPUT_ERROR


def output_folder_argument(args: Sequence[str]) -> Path:
    """The output folder the SDK will use: ``-o/--output``, else HOLOSCAN_OUTPUT_PATH, else ``output``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-o", "--output")
    known, _ = parser.parse_known_args(list(args))
    return Path(known.output or os.environ.get("HOLOSCAN_OUTPUT_PATH") or "output")


def handle_interrupts(args: Sequence[str], app_name: str) -> None:
    """Take SIGINT and SIGTERM from Holoscan (operators.core.interrupts); call it before anything starts a thread."""
    install_interrupt_handler(app_name, output_folder_argument(args).absolute())


def exit_if_output_unusable(args: Sequence[str], needed_bytes: int, app_name: str) -> None:
    """Pre-flight, before the heavy imports and any work: exit 2 with one line when the output folder
    cannot be created or written, or lacks ``needed_bytes`` of room."""
    try:
        check_output_folder(output_folder_argument(args), needed_bytes)
    except AppInputError as error:
        sys.exit(report_input_error(error, app_name))


def run_app(run: Callable[[list[str]], None], sdk_argv: Sequence[str], app_name: str) -> int:
    """Run ``run(sdk_argv)``, mapping input problems to one line on stderr and exit code 2."""
    try:
        run(list(sdk_argv))
    except AppInputError as error:
        return report_input_error(error, app_name)
    return 0
