"""What this CPU can do at most: peak arithmetic per instruction set, from the CPU's flags and clock.

Peak FLOP per cycle per core (fused multiply-add = 2 FLOP), as Intel documents them for Xeon cores
with two 512-bit FMA units:
- float32: AVX-512 64, AVX2 32;
- bfloat16: AMX-BF16 1,024 (PyTorch's and Intel's AMX recipes), AVX512-BF16 128 (VDPBF16PS, twice
  float32); without either, bf16 arithmetic is emulated in float32 (so the float32 peak);
- int8: AMX-INT8 2,048 ops, AVX512-VNNI 256 ops.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from operators.core.device import cpu_flags
from operators.models.runtime import cpu_isa

Arithmetic = Literal["fp32", "bf16", "int8"]


def flop_per_cycle(flags: frozenset[str] | set[str], arithmetic: Arithmetic) -> int:
    """Peak FLOP (or int8 ops) per cycle per core for ``arithmetic`` on a CPU with ``flags``."""
    fp32 = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    if arithmetic == "fp32":
        return fp32
    if arithmetic == "bf16":
        return 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    return 2048 if "amx_int8" in flags else 256 if "avx512_vnni" in flags else 2 * fp32


def cpu_clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float | None:
    """The nominal clock from the model name ("... @ 2.80GHz"), else the first "cpu MHz" line."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    named = re.search(r"model name\s*:.*@\s*([0-9.]+)\s*GHz", text)
    if named:
        return float(named.group(1))
    mhz = re.search(r"cpu MHz\s*:\s*([0-9.]+)", text)
    return float(mhz.group(1)) / 1000 if mhz else None


@dataclass(frozen=True)
class CpuLimits:
    """This machine's cores, clock and ISA, and its peak throughput per arithmetic."""

    cores: int
    clock_ghz: float | None
    isa: str
    flags: frozenset[str]

    def peak_tflops(self, arithmetic: Arithmetic) -> float | None:
        if self.clock_ghz is None:
            return None
        return self.cores * self.clock_ghz * flop_per_cycle(self.flags, arithmetic) / 1000

    def describe(self) -> str:
        peaks = ", ".join(f"{a} {self.peak_tflops(a) or float('nan'):.2f}" for a in ("fp32", "bf16", "int8"))
        return f"{self.cores} cores at {self.clock_ghz} GHz, {self.isa}; peak TFLOPS (TOPS for int8): {peaks}"


def this_cpu() -> CpuLimits:
    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0))
    return CpuLimits(cores, cpu_clock_ghz(), cpu_isa(flags), flags)
