"""Find the slides in an input path: one slide file, one DICOM slide folder, or a folder of either."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from operators.core.errors import AppInputError
from operators.wsi.slide.dicom_source import is_dicom_file

logger = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm"})


_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
_LEADING_DOTS = re.compile(r"^\.+")


def output_name(name: str) -> str:
    """``name`` made safe as one folder inside the output folder: control characters and path
    separators become ``_``, and so do leading dots (``..`` would climb out of it, ``.x`` hide);
    nothing left gives ``slide``."""
    safe = _LEADING_DOTS.sub(lambda dots: "_" * len(dots.group()), _UNSAFE_IN_NAME.sub("_", name))
    return safe or "slide"


@dataclass(frozen=True)
class SlideSource:
    """A slide to process: a file, or a folder holding one DICOM whole-slide image's instances.
    ``name`` names its output folder: built from the file or folder name by :func:`output_name`,
    never from what the slide's metadata says (UIDs, patient, description)."""

    name: str
    path: Path

    @classmethod
    def at(cls, path: Path, name: str) -> SlideSource:
        return cls(output_name(name), path)


def _holds_dicom(folder: Path) -> bool:
    return any(child.is_file() and is_dicom_file(child) for child in folder.iterdir())


def find_slides(input_path: Path) -> list[SlideSource]:
    """Slides in ``input_path``, sorted by name; files that are not slides are skipped with a warning."""
    input_path = Path(os.path.abspath(input_path))  # "case/.." is named by the folder it means; links stay as given
    if not input_path.exists():
        raise AppInputError(f"input path does not exist: {input_path}")
    if input_path.is_file():
        return [
            SlideSource.at(input_path.parent, input_path.parent.name)
            if is_dicom_file(input_path)
            else SlideSource.at(input_path, input_path.stem)
        ]
    if _holds_dicom(input_path):
        return [SlideSource.at(input_path, input_path.name)]
    slides: list[SlideSource] = []
    for child in sorted(input_path.iterdir()):
        if child.is_dir() and _holds_dicom(child):
            slides.append(SlideSource.at(child, child.name))
        elif child.is_file() and child.suffix.lower() in SLIDE_SUFFIXES:
            slides.append(SlideSource.at(child, child.stem))
        elif not child.name.startswith("."):
            logger.warning("Skipping %s: not a slide file (suffix %s) nor a DICOM slide folder", child, child.suffix or "none")
    if not slides:
        raise AppInputError(f"no slides in {input_path}")
    names = [s.name for s in slides]
    if len(set(names)) != len(names):
        raise AppInputError(f"slides in {input_path} share output names: {sorted({n for n in names if names.count(n) > 1})}")
    return slides
