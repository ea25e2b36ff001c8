"""The inference runtimes both apps run their network in: torch or OpenVINO, in a resolved precision.

``--backend auto|torch|openvino`` with ``--precision auto|fp32|bf16|fp16`` (operators.core.device):

- ``torch``: the module in eval mode; on the CPU its inputs (and weights) in channels_last /
  channels_last_3d, the layout oneDNN's fast convolutions want; bf16 and fp16 as the device's
  autocast (bf16 weights were faster on AMX but failed the clinical parity: see TorchNetwork).
- ``openvino``: the loaded torch module (state dict or TorchScript) converted once to an OpenVINO IR,
  kept on disk under a key of the model's SHA-256, the OpenVINO version and the precision, and
  compiled for the CPU with ``INFERENCE_PRECISION_HINT`` (and OpenVINO's own compiled-blob cache), so
  a second run pays neither conversion nor compilation. The IR is saved in float32
  (``compress_to_fp16=False``): fp32 keeps the reference's numbers to about 1e-6.
- ``auto``: torch on CUDA; on the CPU the model config's ``runtime`` preference for this CPU
  (``native_bf16`` or ``default``), chosen from ``benchmarks/`` measurements; torch when OpenVINO is
  not installed.

OpenVINO missing, or a model it cannot convert or compile, falls back to torch with one warning.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, cast, get_args

import torch

from operators.core.device import CPUINFO, ComputeChoiceError, ComputeDevice, cpu_flags, has_native_bf16

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "openvino"]
ResolvedBackend = Literal["torch", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PerformanceHint = Literal["LATENCY", "THROUGHPUT"]
OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CACHE_ENV = "CLINICAL_AI_RUNTIME_CACHE"
# The most capable matrix ISA first: what summary.json reports as ``cpu_isa``.
ISA_ORDER = ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_isa(flags: Iterable[str]) -> str:
    """The most capable vector/matrix instruction set among ``flags`` (``ISA_ORDER``), or ``baseline``."""
    present = set(flags)
    return next((isa for isa in ISA_ORDER if isa in present), "baseline")


PREBUILT_CACHE_DIRNAME = "runtime_cache"  # a MAP's pre-built converted models, beside its apps/ folder


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend`` (into ``backend``), spelled alike on both apps and the evaluate commands."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="network runtime; auto: the model config's choice for this CPU (OpenVINO where measured faster), torch on CUDA",
    )


def check_backend(requested: str) -> Backend:
    if requested not in BACKENDS:
        raise ComputeChoiceError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    return cast(Backend, requested)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(
    requested: str, device_type: str, native_bf16: bool, preferences: dict[str, str], have_openvino: bool
) -> ResolvedBackend:
    """The runtime to use. ``preferences``: the model config's ``runtime`` block, e.g.
    ``{"native_bf16": "torch", "default": "openvino"}``; ``auto`` on the CPU reads it for this CPU."""
    if check_backend(requested) == "openvino" and device_type != "cpu":
        raise ComputeChoiceError(f"backend openvino runs on the CPU; it cannot run on {device_type} (use --device cpu)")
    if requested == "auto":
        if device_type != "cpu":
            return "torch"
        requested = preferences.get("native_bf16" if native_bf16 else "default", "torch")
        check_backend(requested)
    if requested == "openvino" and not have_openvino:
        logger.warning("OpenVINO is not installed (pip install openvino); running the network in torch")
        return "torch"
    return cast(ResolvedBackend, requested)


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs the network: backend, device and precision, and the CPU's ISA (for the summary)."""

    backend: ResolvedBackend
    compute: ComputeDevice
    cpu_isa: str

    def ran(self, network: Network) -> RuntimeChoice:
        """This choice as it ran: the backend of ``network`` (torch after a fallback)."""
        return replace(self, backend=network.backend)

    def as_json(self) -> dict[str, str]:
        record = {"backend": self.backend, **self.compute.as_json(), "cpu_isa": self.cpu_isa}
        if self.backend == "openvino":
            import openvino as ov

            record["openvino_version"] = ov.get_version()
        return record


def choose_runtime(backend: str, compute: ComputeDevice, preferences: dict[str, str], cpuinfo: Path = CPUINFO) -> RuntimeChoice:
    """Resolve ``--backend`` for ``compute`` on this machine."""
    flags = cpu_flags(cpuinfo)
    resolved = resolve_backend(backend, compute.device.type, has_native_bf16(flags), preferences, openvino_available())
    return RuntimeChoice(resolved, compute, cpu_isa(flags))


def torch_runtime(compute: ComputeDevice) -> RuntimeChoice:
    """Plain torch on ``compute`` (tests, export checks, training's validation)."""
    return RuntimeChoice("torch", compute, cpu_isa(cpu_flags()))


class Network(Protocol):
    """A prepared network: float32 tensor in (N, C, *spatial), float32 logits out, on the input's device."""

    backend: ResolvedBackend

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def _channels_last(rank: int) -> torch.memory_format:
    return torch.channels_last if rank == 4 else torch.channels_last_3d


class TorchNetwork:
    """The module in torch: channels-last inputs (and weights), under the device's autocast in bf16/fp16.

    bf16 runs as autocast, not as bf16 weights: casting the spleen UNet's weights (batch norm and PReLU
    included) to bfloat16 moved its mask to Dice 0.994 against float32 on the demo phantom, below the
    0.995 the apps promise; autocast keeps those layers and the accumulation in float32 (Dice >= 0.999).
    It takes the module over: its weights are re-laid in place.
    """

    backend: ResolvedBackend = "torch"

    def __init__(self, module: torch.nn.Module, compute: ComputeDevice, spatial_dims: int) -> None:
        self.compute = compute
        self.memory_format = _channels_last(spatial_dims + 2)
        module = module.eval()
        if compute.device.type == "cpu" or spatial_dims == 2:
            module = _to_memory_format(module, self.memory_format)
        self.module = module

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.module(batch.contiguous(memory_format=self.memory_format)).float()


def _to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format) -> torch.nn.Module:
    """``module`` with its 4-D/5-D weights in ``memory_format``; a frozen TorchScript module (no parameters
    to move) is returned as it is."""
    try:
        return module.to(memory_format=memory_format)
    except (RuntimeError, TypeError) as error:
        logger.debug("Weights stay in their layout (%s)", error)
        return module


def default_cache_dir() -> Path:
    """Where converted models are kept: $CLINICAL_AI_RUNTIME_CACHE, else ~/.cache/clinical-ai-apps/openvino,
    else (an unwritable home, as under a MAP's unknown uid) a folder in the temp directory."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clinical-ai-apps" / "openvino"
    try:
        home_cache.mkdir(parents=True, exist_ok=True)
        if os.access(home_cache, os.W_OK):
            return home_cache
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "clinical-ai-apps-openvino"


def cache_key(model_sha256: str, precision: str) -> str:
    """The folder name of one converted model: its SHA-256, the OpenVINO version, the precision."""
    import openvino as ov

    version = ov.get_version().split("-")[0]
    return f"{model_sha256[:32]}-openvino{version}-{precision}"


def _find_cached_ir(key: str, cache_dirs: Sequence[Path]) -> Path | None:
    for folder in cache_dirs:
        candidate = folder / key / "model.xml"
        if candidate.is_file() and candidate.with_suffix(".bin").is_file():
            return candidate
    return None


def _is_frozen(module: torch.jit.ScriptModule) -> bool:
    """A frozen module has no parameters left as attributes (freezing folds them into constants)."""
    return next(module.parameters(), None) is None


def convert_to_ir(module: torch.nn.Module, example: torch.Tensor, target: Path) -> Path:
    """Convert ``module`` (batch and spatial sizes left dynamic) and save the IR atomically in ``target``."""
    import openvino as ov

    shape = ov.PartialShape([-1, example.shape[1], *([-1] * (example.ndim - 2))])
    root_level = logging.getLogger().level
    try:
        with torch.no_grad():
            # Traced once on one sample: OpenVINO's own trace runs a whole batch three times to check itself
            # (most of the conversion's time). A TorchScript model is frozen first: OpenVINO cannot read the
            # attribute look-ups of a scripted module (the spleen bundle's model.ts failed so).
            sample = example[:1]
            if isinstance(module, torch.jit.ScriptModule):
                scripted = module if _is_frozen(module) else torch.jit.freeze(module.eval())
            else:
                scripted = torch.jit.trace(module.eval(), sample, check_trace=False)
            converted = ov.convert_model(scripted, example_input=sample, input=[shape])
    finally:  # convert_model raises the root logger to ERROR and, when it fails, leaves it there
        logging.getLogger().setLevel(root_level)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        ov.save_model(converted, staging / "model.xml", compress_to_fp16=False)
        with contextlib.suppress(OSError):  # another process may have written the same key first
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "model.xml"


class OpenVINONetwork:
    """A converted model compiled for the CPU per input shape; a batch shorter than ``batch_size`` of a
    shape already compiled at ``batch_size`` is padded (a sliding window's last, partial batch costs no
    second compilation); any other shape (a dense tile) is compiled as it comes."""

    backend: ResolvedBackend = "openvino"

    def __init__(self, ir_path: Path, precision: str, batch_size: int, hint: PerformanceHint, blob_cache: Path | None) -> None:
        import openvino as ov

        self.core = ov.Core()
        if blob_cache is not None:
            self.core.set_property({"CACHE_DIR": str(blob_cache)})
        self.model = self.core.read_model(ir_path)
        self.config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[precision], "PERFORMANCE_HINT": hint}
        self.batch_size = batch_size
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        if shape not in self._compiled:
            model = self.model.clone()
            model.reshape({0: list(shape)})
            self._compiled[shape] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[shape]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        count = batch.shape[0]
        array = batch.detach().to("cpu", torch.float32).contiguous()
        full = (self.batch_size, *array.shape[1:])
        if count < self.batch_size and full in self._compiled:  # a last, partial batch of a compiled shape
            array = torch.cat([array, array.new_zeros((self.batch_size - count, *array.shape[1:]))])
        compiled = self._compiled_for(tuple(array.shape))
        logits = compiled(array.numpy())[compiled.output(0)]
        return torch.from_numpy(logits[:count].copy()).to(batch.device)


def prepare_network(
    module: torch.nn.Module,
    choice: RuntimeChoice,
    example: torch.Tensor,
    model_sha256: str,
    *,
    batch_size: int,
    hint: PerformanceHint = "LATENCY",
    cache_dirs: Sequence[Path] = (),
) -> Network:
    """The network ``choice`` asks for. ``example``: one input batch on the CPU (for conversion);
    ``cache_dirs``: read-only folders of converted models (a MAP's pre-built cache) searched before the
    writable :func:`default_cache_dir`."""
    spatial_dims = example.ndim - 2
    if choice.backend == "torch":
        return TorchNetwork(module, choice.compute, spatial_dims)
    try:
        writable = default_cache_dir()
        key = cache_key(model_sha256, choice.compute.precision)
        ir_path = _find_cached_ir(key, [*cache_dirs, writable]) or convert_to_ir(module, example, writable / key)
        network = OpenVINONetwork(ir_path, choice.compute.precision, batch_size, hint, writable / "compiled")
        network(example)  # compile now: a model OpenVINO cannot run fails here, not mid-slide
    except Exception as error:  # noqa: BLE001 -- conversion and compilation raise many types; torch still runs the model
        first_line = next(iter(str(error).splitlines()), "")
        logger.warning("OpenVINO could not run this model (%s: %s); running it in torch", type(error).__name__, first_line)
        return TorchNetwork(module, choice.compute, spatial_dims)
    logger.info("Network in OpenVINO, precision %s, hint %s (IR %s)", choice.compute.precision, hint, ir_path.parent)
    return network
