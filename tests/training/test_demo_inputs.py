"""The demo inputs are reused only when the same generator, with the same parameters, wrote them."""

from __future__ import annotations

from training.synthetic.demo_inputs import STAMP_FILE, write_demo_ct

SMALL = {"shape_zyx": (8, 48, 48), "spacing_zyx_mm": (20.0, 8.0, 8.0), "seed": 3}


def test_demo_ct_is_reused_when_its_generator_is_unchanged(tmp_path):
    first = write_demo_ct(tmp_path, **SMALL)
    written = {p: p.stat().st_mtime_ns for p in first.dicom_dir.iterdir()}
    again = write_demo_ct(tmp_path, **SMALL)
    assert again == first and {p: p.stat().st_mtime_ns for p in again.dicom_dir.iterdir()} == written


def test_demo_ct_written_by_another_generator_version_is_rewritten(tmp_path):
    demo = write_demo_ct(tmp_path, **SMALL)
    stamp_path = demo.dicom_dir.parent / STAMP_FILE
    stamp_path.write_text("0" * 64)
    (demo.dicom_dir / "stale.dcm").write_bytes(b"left by an older generator")
    write_demo_ct(tmp_path, **SMALL)
    assert not (demo.dicom_dir / "stale.dcm").exists() and stamp_path.read_text() != "0" * 64
    assert len(list(demo.dicom_dir.glob("*.dcm"))) == SMALL["shape_zyx"][0]


def test_demo_ct_with_other_parameters_is_rewritten(tmp_path):
    demo = write_demo_ct(tmp_path, **SMALL)
    write_demo_ct(tmp_path, **{**SMALL, "shape_zyx": (6, 48, 48)})
    assert len(list(demo.dicom_dir.glob("*.dcm"))) == 6
