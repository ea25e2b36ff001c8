"""The apps' own options as their command lines parse them (in a child process: the entry points may
re-execute themselves for Holoscan's stack size)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import dataclasses, json, sys
from apps.{app}.__main__ import parse_app_options
options, rest = parse_app_options(sys.argv[1:])
print(json.dumps(dataclasses.asdict(options)))
"""


def parse(app: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(app=app), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "backend", "slide_backend", "warned"),
    [
        ((), "auto", "auto", False),
        (("--backend", "openvino"), "openvino", "auto", False),
        (("--backend", "torch", "--slide-backend", "tifffile"), "torch", "tifffile", False),
        (("--backend", "openslide"), "auto", "openslide", True),  # the reader option's old spelling
    ],
)
def test_wsi_backend_names_the_network_runtime_and_still_takes_a_slide_reader(args, backend, slide_backend, warned):
    result = parse("wsi_metastasis_app", *args)
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.splitlines()[-1])
    assert (options["backend"], options["slide_backend"]) == (backend, slide_backend)
    assert ("use --slide-backend" in result.stderr) == warned


@pytest.mark.parametrize("app", ["spleen_seg_app", "wsi_metastasis_app"])
def test_an_unknown_backend_is_refused_with_exit_2(app: str):
    result = parse(app, "--backend", "tensorrt")
    assert result.returncode == 2
    assert "--backend" in result.stderr and "tensorrt" in result.stderr


def test_spleen_backend_and_precision_are_options():
    result = parse("spleen_seg_app", "--backend", "openvino", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.splitlines()[-1])
    assert (options["backend"], options["precision"]) == ("openvino", "fp32")


@pytest.mark.parametrize("app", ["spleen_seg_app", "wsi_metastasis_app"])
def test_a_rerun_names_its_result_series_and_the_result_it_supersedes(app: str):
    result = parse(app, "--result-series-uid", "1.2.826.0.1.3680043.8.498.7", "--supersedes-sop-uid", "1.2.3.0.4")
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.splitlines()[-1])
    assert (options["result_series_uid"], options["supersedes_sop_uid"]) == ("1.2.826.0.1.3680043.8.498.7", "1.2.3.0.4")
    assert options["allow_unverified_model"] is False


@pytest.mark.parametrize("app", ["spleen_seg_app", "wsi_metastasis_app"])
@pytest.mark.parametrize(
    ("option", "uid", "problem"),
    [
        ("--result-series-uid", "1.02.3", "leading zero"),
        ("--supersedes-sop-uid", "1.2.abc", "not digits"),
        ("--supersedes-sop-uid", "1." + "2" * 63, "more than 64"),
    ],
)
def test_a_malformed_uid_is_refused_with_exit_2_naming_the_problem(app: str, option: str, uid: str, problem: str):
    result = parse(app, option, uid)
    assert result.returncode == 2
    assert option in result.stderr and problem in result.stderr


@pytest.mark.parametrize(
    ("args", "message"), [(("--volume-range-ml", "300", "20"), "MIN < MAX"), (("--on-non-abdominal", "ok"), "invalid choice")]
)
def test_spleen_check_options_are_validated(args, message):
    result = parse("spleen_seg_app", *args)
    assert result.returncode == 2 and message in result.stderr


def test_spleen_check_options_default_to_refusing_a_non_abdominal_series():
    options = json.loads(parse("spleen_seg_app").stdout.splitlines()[-1])
    assert (options["on_non_abdominal"], options["volume_range_ml"]) == ("refuse", None)
    options = json.loads(parse("spleen_seg_app", "--on-non-abdominal", "warn", "--volume-range-ml", "10", "900").stdout.splitlines()[-1])
    assert (options["on_non_abdominal"], options["volume_range_ml"]) == ("warn", [10.0, 900.0])
