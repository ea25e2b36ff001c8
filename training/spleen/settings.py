"""Settings of the training stage, and the resolved configuration a run folder records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from operators.core.device import Precision, check_precision
from operators.models.loader import sha256_of
from training.spleen.network import MODEL_NAME

OPTIMIZERS = ("novograd", "adam")
LR_SCHEDULES = ("constant", "cosine")
CACHE_DEVICES = ("cpu", "device")  # where CacheDataset keeps the preprocessed volumes: host memory or the training device
# Settings that may change when a run is resumed (more epochs, different validation cadence, ...).
RESUMABLE_CHANGES = frozenset({"epochs", "val_interval", "val_overlap", "cache_workers", "cache_device", "run_dir", "data_dir"})


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``train`` needs; ``None`` means "take it from the model config"."""

    data_dir: Path
    run_dir: Path
    epochs: int = 60
    optimizer: str = "novograd"
    learning_rate: float | None = None
    lr_schedule: str = "cosine"
    crop_size: tuple[int, int, int] | None = None
    num_samples: int | None = None
    batch_size: int = 1
    val_cases: int | None = None
    train_cases: int | None = None
    val_interval: int = 10
    val_overlap: float | None = None
    seed: int = 0
    precision: Precision = "auto"
    device: str = "auto"
    intensity_augmentation: bool = True
    cache_workers: int = 2
    cache_device: str = "cpu"  # "device": the cached volumes and their random crops live on the training device
    init_weights: Path | None = None  # a checkpoint or state dict to start from (fine-tuning)
    model_name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f"cache_device must be one of {CACHE_DEVICES}, got {self.cache_device!r}")
        check_precision(self.precision)
        if self.epochs < 1 or self.batch_size < 1 or self.val_interval < 1:
            raise ValueError("epochs, batch_size and val_interval must be at least 1")
        if self.crop_size is not None and (len(self.crop_size) != 3 or min(self.crop_size) < 16):
            raise ValueError(f"crop_size must be three sizes of at least 16 voxels, got {self.crop_size}")


def resolve(settings: TrainSettings, model_config: dict[str, Any]) -> dict[str, Any]:
    """The complete configuration of a run: the settings with every default filled in from the config."""
    training = model_config["training"]
    resolved = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(settings).items()}
    resolved["learning_rate"] = settings.learning_rate or training["optimizers"][settings.optimizer]["lr"]
    resolved["crop_size"] = list(settings.crop_size or training["crop_size"])
    resolved["num_samples"] = settings.num_samples or training["num_samples"]
    resolved["pos"], resolved["neg"] = training["pos"], training["neg"]
    resolved["val_cases"] = settings.val_cases or training["val_cases"]
    resolved["val_overlap"] = settings.val_overlap if settings.val_overlap is not None else (model_config["inference"]["overlap"])
    resolved["loss"] = "DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True)"
    resolved["model_config"] = model_config
    if settings.init_weights is not None:
        resolved["init_weights_sha256"] = sha256_of(Path(settings.init_weights))
    return resolved
