"""What a run folder records about where it came from (git commit, package versions, machine, one entry per
session), its log file, and atomic JSON writes; shared by the training pipelines."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torch",
    "monai",
    "numpy",
    "scipy",
    "nibabel",
    "pydicom",
    "SimpleITK",
    "scikit-image",
    "openslide-python",
    "openslide-bin",
    "tifffile",
    "pillow",
)


def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository."""

    def run(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    return {
        "git": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def save_torch(path: Path, value: Any) -> None:
    """``torch.save`` through a temporary file, so that a crash never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(value, tmp)
    tmp.replace(path)


def record_session(path: Path, device: torch.device, precision: str, **extra: Any) -> None:
    """Append this session (start time, device, precision, :func:`environment`) to ``environment.json``."""
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    sessions.append(
        {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device), "precision": precision, **extra, **environment()}
    )
    write_json(path, {"sessions": sessions})


def attach_log_file(path: Path) -> logging.Handler:
    """Copy the root logger's records to ``path``; remove and close the returned handler when done."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def check_resumable(config_path: Path, config: dict[str, Any], resumable_keys: frozenset[str]) -> None:
    """Raise ValueError when a run folder's recorded config differs from ``config`` in a key that may not change."""
    if not config_path.is_file():
        return
    previous, current = json.loads(config_path.read_text()), json.loads(json.dumps(config, default=str))
    changed = sorted(k for k in (set(previous) | set(current)) - resumable_keys if previous.get(k) != current.get(k))
    if changed:
        raise ValueError(f"{config_path.parent} holds a run with different settings ({', '.join(changed)}); use a new run folder")
