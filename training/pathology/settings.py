"""The Camelyon16 layout, the slides the seed paper leaves out, and the settings of each stage.

Slide names follow Camelyon16 (``tumor_010``, ``normal_086``, ``test_001``). Coordinates are level-0
pixels (x, y); a ``level`` is a power-of-two downsample of level 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from operators.core.device import Precision, check_precision

MODEL_NAME = "pathology_tumor_detection"

# Liu et al. (2017): tumor slides whose annotations are incomplete; their non-tumor areas are never normal.
INCOMPLETE_ANNOTATION_TUMOR_SLIDES = frozenset(
    f"tumor_{n:03d}" for n in (10, 15, 18, 20, 25, 29, 33, 34, 44, 46, 51, 54, 55, 56, 67, 79, 85, 92, 95, 110)
)
# Normal slides that contain tumor (unannotated): none of their patches are used.
NORMAL_SLIDES_WITH_TUMOR = frozenset({"normal_086", "normal_144"})


def normal_patches_excluded(slide_name: str) -> str | None:
    """Why a training slide gives no normal patches (None: it does)."""
    if slide_name in INCOMPLETE_ANNOTATION_TUMOR_SLIDES:
        return "tumor slide with incomplete annotations (Liu et al. 2017)"
    if slide_name in NORMAL_SLIDES_WITH_TUMOR:
        return "normal slide that contains unannotated tumor (Liu et al. 2017)"
    return None


@dataclass(frozen=True)
class CamelyonLayout:
    """Where the slides and annotations of a Camelyon16-layout dataset are."""

    tumor_dir: Path
    normal_dir: Path
    annotations_dir: Path
    test_images_dir: Path
    test_reference_dir: Path  # per-slide ground truth of the tumor test slides (<slide>.xml and/or masks)
    test_reference_csv: Path | None = None  # image,type rows (Tumor / Normal); optional

    @classmethod
    def from_root(cls, root: Path, **overrides: Path | None) -> CamelyonLayout:
        """The standard layout under ``root``; any path given in ``overrides`` (not None) replaces its default."""
        root = Path(root)
        paths: dict[str, Path | None] = {
            "tumor_dir": root / "training" / "tumor",
            "normal_dir": root / "training" / "normal",
            "annotations_dir": root / "training" / "lesion_annotations",
            "test_images_dir": root / "testing" / "images",
            "test_reference_dir": root / "testing" / "reference",
            "test_reference_csv": root / "testing" / "reference.csv",
        }
        paths.update({key: Path(value) for key, value in overrides.items() if value is not None})
        return cls(**paths)

    def as_json(self) -> dict[str, str | None]:
        return {key: None if value is None else str(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class PrepareSettings:
    layout: CamelyonLayout
    prep_dir: Path
    label_level: int = 2  # tumor mask level the centre-region labels are read from (4 level-0 px per pixel)
    mask_level: int = 5  # level of the tumor and tissue mask PNGs written for inspection
    label_centre_px: int = 128  # side of the centre region that decides a patch's label (level-0 px)
    val_fraction: float = 0.25  # training slides of each class held out for validation (at least one each)
    heldout_patches_per_class: int = 256
    seed: int = 0
    model_name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if not 0 <= self.label_level <= self.mask_level:
            raise ValueError(f"need 0 <= label_level <= mask_level, got {self.label_level}, {self.mask_level}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class TrainSettings:
    prep_dir: Path
    run_dir: Path
    epochs: int = 4
    steps_per_epoch: int = 100
    batch_size: int = 32  # patches per step and process
    learning_rate: float | None = None  # None: the config's (Novograd 1e-3)
    lr_schedule: str = "cosine"  # cosine decay over all steps, or constant
    tumor_probability: float = 0.5
    position_jitter_px: int | None = None  # None: the config's (8)
    color_jitter: tuple[float, float, float, float] | None = None  # brightness, saturation, hue, contrast; None: config's
    augment: bool = True
    heldout_limit: int | None = 256  # held-out patches scored after each epoch (None: all)
    workers: int = 1  # DataLoader worker processes reading patches
    seed: int = 0
    precision: Precision = "auto"
    device: str = "auto"
    model_name: str = MODEL_NAME
    # second pass (Wang et al. 2016, training.pathology.hard_negatives): the first model (a checkpoint or
    # model.pt) whose false positives on the training slides' normal candidates become extra normal patches
    hard_negatives_from: Path | None = None
    hard_negative_fraction: float = 0.5  # share of the normal draws taken from the hard negatives
    hard_negative_threshold: float = 0.5  # first-model tumor probability from which a normal candidate is hard
    hard_negative_max_candidates: int = 4000  # normal candidates the first model scores, spread over the slides
    init_from: Path | None = None  # initial weights (a checkpoint or model.pt); None: random initialisation

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not 0 <= self.hard_negative_fraction <= 1:
            raise ValueError(f"hard_negative_fraction must be in [0, 1], got {self.hard_negative_fraction}")
        if not 0 <= self.hard_negative_threshold <= 1:
            raise ValueError(f"hard_negative_threshold must be a probability in [0, 1], got {self.hard_negative_threshold}")
        if self.hard_negative_max_candidates < 1:
            raise ValueError(f"hard_negative_max_candidates must be at least 1, got {self.hard_negative_max_candidates}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size) < 1:
            raise ValueError("epochs, steps_per_epoch and batch_size must be at least 1")
        if not 0 < self.tumor_probability < 1:
            raise ValueError(f"tumor_probability must be in (0, 1), got {self.tumor_probability}")


HARD_NEGATIVE_KEYS = ("hard_negative_fraction", "hard_negative_threshold", "hard_negative_max_candidates")

# Settings that may change when a run is resumed.
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "heldout_limit", "run_dir", "prep_dir", "device"})


def resolve_train(settings: TrainSettings, model_config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The complete configuration of a training run, every default filled in from the model config; the
    hard-negative settings are None without ``hard_negatives_from`` (as in run folders older than them)."""
    training = model_config["training"]
    resolved = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(settings).items()}
    resolved["learning_rate"] = settings.learning_rate or training["optimizer"]["lr"]
    resolved["optimizer"] = training["optimizer"]["name"]
    resolved["position_jitter_px"] = training["position_jitter_px"] if settings.position_jitter_px is None else settings.position_jitter_px
    jitter = training["color_jitter"]
    resolved["color_jitter"] = dict(
        zip(
            ("brightness", "saturation", "hue", "contrast"),
            settings.color_jitter or (jitter["brightness"], jitter["saturation"], jitter["hue"], jitter["contrast"]),
            strict=True,
        )
    )
    resolved["patch_px"] = model_config["preprocessing"]["patch_size_px"]
    resolved["loss"] = "BCEWithLogitsLoss"
    resolved["world_size"] = world_size
    resolved["global_batch_size"] = settings.batch_size * world_size
    if settings.hard_negatives_from is None:  # no second pass: the hard-negative settings do not apply
        for key in HARD_NEGATIVE_KEYS:
            resolved[key] = None
    resolved["model_config"] = model_config
    return resolved
