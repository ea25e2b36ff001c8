"""The spleen app end to end, through its command line, on synthetic and real series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import trimesh

from operators.core.metrics import dice_score
from operators.dicom.seg_readback import read_seg_on_source
from operators.models.config import load_model_card
from tests.conftest import run_app
from tests.real_data import GE_CT5N, requires_cranium, write_cranium_series
from tests.validators import dciodvfy_errors, requires_dciodvfy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
APP = "spleen_seg_app"


def succeed(args: list[str], env: dict[str, str] | None = None) -> dict:
    result = run_app(APP, args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = Path(args[args.index("-o") + 1]) if "-o" in args else Path(env["HOLOSCAN_OUTPUT_PATH"])
    return json.loads((output / "summary.json").read_text())


@pytest.fixture(scope="module")
def demo_run(demo_ct, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_run")
    return out, succeed(["-i", str(demo_ct.dicom_dir), "-o", str(out)])


def test_demo_phantom_seg_reads_back_with_dice_above_0_9(demo_run, demo_ct):
    out, summary = demo_run
    mask = read_seg_on_source(out / "spleen_seg.dcm", summary["input"]["sop_instance_uids"])
    truth = np.load(demo_ct.truth_path)
    assert dice_score(mask, truth) >= 0.9
    voxel_ml = summary["input"]["voxel_volume_mm3"] / 1000
    assert summary["spleen"]["volume_ml"] == pytest.approx(truth.sum() * voxel_ml, rel=0.15)


def test_demo_seg_names_the_model_from_its_card_and_references_every_source_slice(demo_run, demo_ct):
    out, summary = demo_run
    seg = hd.seg.segread(out / "spleen_seg.dcm")
    card = load_model_card("spleen_ct_segmentation")
    algorithm = seg.get_segment_description(1).algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (card["name"], card["version"])
    assert (summary["model"]["name"], summary["model"]["version"]) == (card["name"], card["version"])
    assert summary["model"]["integrity"] == {"status": "verified", "expected_sha256": card["weights"]["sha256"], "reason": None}
    assert summary["checks"]["flags"] == [] and summary["checks"]["abdominal_series"]["abdominal"] is True
    assert seg.NumberOfFrames == len(list(demo_ct.dicom_dir.glob("*.dcm")))
    referenced = {ref.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence for ref in item.ReferencedInstanceSequence}
    assert referenced == set(summary["input"]["sop_instance_uids"])
    assert "NOT FOR CLINICAL USE" in seg.SeriesDescription
    assert seg.get_segment_description(1).segment_label == "Spleen"


@requires_dciodvfy
def test_demo_seg_passes_dciodvfy(demo_run):
    out, _ = demo_run
    assert dciodvfy_errors(out / "spleen_seg.dcm") == []


def test_demo_stl_and_overlay_are_readable(demo_run):
    out, summary = demo_run
    surface = trimesh.load(out / "spleen.stl")
    assert surface.is_watertight
    assert surface.volume / 1000 == pytest.approx(summary["spleen"]["volume_ml"], rel=0.1)
    from PIL import Image

    with Image.open(out / "spleen_overlay.png") as overlay:
        assert overlay.mode == "RGB" and min(overlay.size) >= 256
    assert set(summary["timings_s"]) >= {"dicom_scan", "volume", "inference", "dicom_seg", "total"}


def test_runs_from_holoscan_environment_variables_as_a_map_does(demo_ct, tmp_path: Path):
    model_dir = tmp_path / "models" / "spleen_ct_segmentation"
    model_dir.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "model_zoo" / "spleen_ct_segmentation" / "model.ts", model_dir)
    env = {
        "HOLOSCAN_INPUT_PATH": str(demo_ct.dicom_dir),
        "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"),
        "HOLOSCAN_MODEL_PATH": str(tmp_path / "models"),
        "HOLOSCAN_WORKDIR": str(tmp_path / "work"),
    }
    summary = succeed(["--no-largest-component"], env)
    assert summary["largest_component"] is False
    assert summary["model"]["path"] == str(model_dir / "model.ts")


@requires_dciodvfy
def test_real_ge_ct_series_is_processed_under_warn_and_flagged_as_not_abdominal(tmp_path: Path):
    """pydicom's GE series is a 5-slice cardiac calcium-score slab, cut to 16 x 16 pixels: no abdomen."""
    summary = succeed(["-i", str(GE_CT5N), "-o", str(tmp_path), "--on-non-abdominal", "warn"])
    assert summary["input"]["grid_zyx"] == [5, 16, 16]
    assert "NON-ABDOMINAL SERIES" in summary["checks"]["flags"]
    assert dciodvfy_errors(tmp_path / "spleen_seg.dcm") == []


@requires_cranium
def test_real_head_ct_is_refused_by_default_before_any_pixel_is_read(demo_run, tmp_path: Path):
    series = write_cranium_series(tmp_path / "cranium")
    out = tmp_path / "out"
    shutil.copytree(demo_run[0], out)  # a previous result stays as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run_app(APP, ["-i", str(series), "-o", str(out)])
    assert result.returncode == 2, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "cannot hold a spleen: BodyPartExamined is HEAD" in last_line and "--on-non-abdominal warn" in last_line
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@requires_dciodvfy
@requires_cranium
def test_real_head_ct_under_warn_is_a_flagged_result_in_the_summary_and_the_seg(tmp_path: Path):
    series = write_cranium_series(tmp_path / "cranium")
    summary = succeed(["-i", str(series), "-o", str(tmp_path / "out"), "--on-non-abdominal", "warn"])
    assert summary["input"]["grid_zyx"] == [108, 256, 256]
    checks = summary["checks"]
    assert checks["abdominal_series"]["abdominal"] is False and checks["abdominal_series"]["body_part_examined"] == "HEAD"
    assert "NON-ABDOMINAL SERIES" in checks["flags"]
    volume = checks["spleen_volume"]
    assert volume["plausible"] == (not summary["spleen"]["found"] or 20 <= summary["spleen"]["volume_ml"] <= 2500)
    assert ("IMPLAUSIBLE VOLUME" in checks["flags"]) == (not volume["plausible"])
    seg = hd.seg.segread(tmp_path / "out" / "spleen_seg.dcm")
    assert seg.SeriesDescription.startswith("Spleen - NON-ABDOMINAL SERIES") and seg.SeriesDescription.endswith("NOT FOR CLINICAL USE")
    assert dciodvfy_errors(tmp_path / "out" / "spleen_seg.dcm") == []
    mask = read_seg_on_source(tmp_path / "out" / "spleen_seg.dcm", summary["input"]["sop_instance_uids"])
    assert mask.sum() == summary["spleen"]["voxel_count"]


def test_truncated_file_among_good_ones_is_skipped_with_a_warning(demo_ct, tmp_path: Path):
    series = tmp_path / "series"
    shutil.copytree(demo_ct.dicom_dir, series)
    (series / "broken.dcm").write_bytes((series / "CT0001.dcm").read_bytes()[:300])
    result = run_app(APP, ["-i", str(series), "-o", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Skipping" in result.stderr and "broken.dcm" in result.stderr
    assert (tmp_path / "out" / "spleen_seg.dcm").exists()


@pytest.mark.parametrize(
    ("backend", "precision", "min_dice", "volume_rel"), [("torch", "fp32", 0.999, 0.001), ("torch", "bf16", 0.995, 0.005)]
)
def test_every_runtime_gives_the_default_run_s_spleen(demo_run, demo_ct, tmp_path: Path, backend, precision, min_dice, volume_rel):
    """Clinical parity of the runtimes: the default run (the model config's runtime for this CPU) against
    torch in float32 and in bf16 (the fast path on CPUs with native bf16): same mask, same volume."""
    out, summary = demo_run
    other = succeed(["-i", str(demo_ct.dicom_dir), "-o", str(tmp_path), "--backend", backend, "--precision", precision])
    assert (other["backend"], other["precision"]) == (backend, precision)
    assert summary["backend"] in ("torch", "openvino") and summary["cpu_isa"]
    uids = summary["input"]["sop_instance_uids"]
    default_mask = read_seg_on_source(out / "spleen_seg.dcm", uids)
    assert dice_score(read_seg_on_source(tmp_path / "spleen_seg.dcm", uids), default_mask) >= min_dice
    assert other["spleen"]["volume_ml"] == pytest.approx(summary["spleen"]["volume_ml"], rel=volume_rel)
