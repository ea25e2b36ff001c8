"""A folder of slides: each slide fails alone, whatever it raises, and the run's last line says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.wsi_metastasis_app.app import SlideFailure, batch_failure_message, process_each_slide
from operators.core.errors import SlideReadError
from operators.wsi.slide.sources import SlideSource


def process(slide: SlideSource, output_dir: Path) -> None:
    """A stand-in for one slide's graph: the slide's name says how it ends."""
    if slide.name.startswith("unreadable"):
        raise SlideReadError(f"{slide.path}: truncated TIFF:\n  cut at byte 10")
    if slide.name.startswith("bug"):
        raise KeyError("level")
    output_dir.mkdir(parents=True)
    (output_dir / "summary.json").write_text(json.dumps({"slide": slide.name}))


def test_every_failure_is_recorded_in_its_folder_and_the_other_slides_are_processed(tmp_path: Path):
    slides = [SlideSource(name, tmp_path / "in" / f"{name}.tif") for name in ("bug", "a_good", "unreadable", "z_good")]
    failures = process_each_slide(slides, tmp_path / "out", process)
    assert failures == [
        SlideFailure("bug", "unexpected KeyError: 'level'", "KeyError", input_problem=False),
        SlideFailure("unreadable", f"{tmp_path / 'in' / 'unreadable.tif'}: truncated TIFF: cut at byte 10", "SlideReadError", True),
    ]
    assert json.loads((tmp_path / "out" / "bug" / "error.json").read_text()) == {
        "slide": str(tmp_path / "in" / "bug.tif"),
        "error": "unexpected KeyError: 'level'",
        "error_type": "KeyError",
    }
    assert json.loads((tmp_path / "out" / "unreadable" / "error.json").read_text())["error_type"] == "SlideReadError"
    for good in ("a_good", "z_good"):
        assert sorted(p.name for p in (tmp_path / "out" / good).iterdir()) == ["summary.json"]


def failures(count: int) -> list[SlideFailure]:
    return [SlideFailure(f"s{i}", f"reason {i}", "SlideReadError", True) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "total", "line"),
    [
        (1, 1, "1 of 1 slides failed (s0: reason 0); see error.json in its output folder"),
        (2, 5, "2 of 5 slides failed (s0: reason 0; s1: reason 1); see error.json in their output folders"),
        (5, 9, "5 of 9 slides failed (s0: reason 0; s1: reason 1; s2: reason 2; and s3, s4); see error.json in their output folders"),
    ],
)
def test_the_last_line_gives_the_reasons_of_the_first_failures(count, total, line):
    assert batch_failure_message(failures(count), total) == line
