"""What both benchmarks' reports share: the machine they ran on, and table cells for missing values."""

from __future__ import annotations

import os
import platform
from typing import Any

from benchmarks.hardware import this_cpu
from operators.core.device import has_native_bf16


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU count, native bf16 support, ISA, clock and peak, Python version and host name, plus ``extra``."""
    cpu = this_cpu()
    return {
        "cpus": os.cpu_count(),
        "cpu_bf16": has_native_bf16(cpu.flags),
        "cpu_limits": cpu.describe(),
        "python": platform.python_version(),
        "node": platform.node(),
    } | extra
