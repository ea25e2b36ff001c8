"""What both benchmarks' reports share: the machine they ran on, and table cells for missing values."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU count, native bf16 support, Python version and host name, plus ``extra``."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "python": platform.python_version(),
        "node": platform.node(),
    } | extra
