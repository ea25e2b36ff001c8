"""Shared fixtures: the demo CT (generated once per session) and a runner for the apps' command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.synthetic.demo_inputs import DemoCT, write_demo_ct

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_ct(tmp_path_factory: pytest.TempPathFactory) -> DemoCT:
    return write_demo_ct(tmp_path_factory.mktemp("demo"))


def run_app(app: str, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """Run ``python apps/<app> ARGS`` as a user (or a MAP entrypoint) would, from the repository root."""
    full_env = {**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "apps" / app), *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
