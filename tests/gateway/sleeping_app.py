"""A stand-in app that hangs, for the hung-app test: run as the gateway runs an app folder, it never finishes.

It writes a partial output (HOLOSCAN_OUTPUT_PATH/partial.dcm, and a file in HOLOSCAN_WORKDIR), starts a child process
that ignores SIGTERM (as a worker pool or a stuck subprocess may), appends ``<role> <pid>`` lines to $SLEEPING_APP_PIDS
(``app`` and ``child``), and sleeps. SIGTERM ends the app itself; only SIGKILL ends the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('child ignoring SIGTERM', flush=True)\ntime.sleep(600)\n"


def main() -> int:
    (Path(os.environ["HOLOSCAN_OUTPUT_PATH"]) / "partial.dcm").write_bytes(b"DICM" + bytes(100))
    (Path(os.environ["HOLOSCAN_WORKDIR"]) / "scratch.bin").write_bytes(bytes(100))
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    with open(os.environ["SLEEPING_APP_PIDS"], "a") as pids:
        pids.write(f"app {os.getpid()}\nchild {child.pid}\n")
    print("sleeping_app: started, sleeping", flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
