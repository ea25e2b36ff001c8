"""The configuration file: the committed example loads; mistakes are named before anything starts."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "gateway" / "example_config.yaml"


def minimal(**overrides: object) -> dict:
    return {
        "ae_title": "GW",
        "port": 11112,
        "allowed_calling_aets": ["PACS"],
        "storage_dir": "data",
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "command": ["true"]}],
        **overrides,
    }


def test_example_config_routes_ct_to_the_spleen_app_and_sm_to_the_wsi_app():
    config = load_config(EXAMPLE)
    by_modality = {route.match["Modality"]: route for route in config.routes}
    assert by_modality[("CT",)].app == REPO_ROOT / "apps" / "spleen_seg_app"
    assert by_modality[("CT",)].model == REPO_ROOT / "model_zoo" / "spleen_ct_segmentation" / "model.ts"
    assert by_modality[("SM",)].app == REPO_ROOT / "apps" / "wsi_metastasis_app"
    assert config.allowed_calling_aets == ("ORTHANC",) and config.destinations[0].type == "dicom"


def test_a_cut_off_study_waits_five_minutes_unless_configured_and_never_less_than_the_quiet_period(tmp_path: Path):
    assert parse_config(minimal(), tmp_path).cut_off_wait_s == 300
    assert parse_config(minimal(quiet_period_s=600), tmp_path).cut_off_wait_s == 600
    assert parse_config(minimal(cut_off_wait_s=45), tmp_path).cut_off_wait_s == 45


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path):
    config = parse_config(minimal(), tmp_path)
    assert config.storage_dir == tmp_path / "data" and config.database == tmp_path / "data" / "gateway.sqlite"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ae_title": "A" * 17}, "ae_title"),
        ({"allowed_calling_aets": []}, "allowed_calling_aets"),
        ({"grouping": "patient"}, "grouping"),
        ({"routes": []}, "routes"),
        ({"routes": [{"name": "x", "match": {"Modality": "CT"}}]}, "routes[0] (x): give 'app'"),
        ({"routes": [{"name": "x", "match": {"Modality": "CT"}, "app": "no/such/app"}]}, "does not exist"),
        ({"quiet_period_s": 0}, "quiet_period_s"),
        ({"quiet_period_s": 30, "cut_off_wait_s": 10}, "cut_off_wait_s: must be at least quiet_period_s (30), got 10"),
        ({"destinations": [{"name": "p", "type": "ftp"}]}, "destinations[0] (p): type"),
        ({"destinations": [{"name": "p", "ae_title": "P", "host": "h"}]}, "destinations[0]: missing 'port'"),
    ],
    ids=["long-ae", "no-callers", "grouping", "no-routes", "no-app", "missing-app", "quiet", "cut-off-wait", "dest-type", "dest-port"],
)
def test_config_mistakes_are_refused_naming_the_key(tmp_path: Path, change: dict, message: str):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_config(minimal(**change), tmp_path)


def test_cli_with_a_bad_config_exits_2_with_one_error_line(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(minimal(grouping="patient")))
    assert main(["jobs", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gateway: error: grouping")


def test_the_queue_is_sqlite_unless_a_postgresql_url_is_given(tmp_path: Path):
    default = parse_config(minimal(), tmp_path)
    assert (default.queue, default.clustered, default.lease_s, default.node_name) == ("sqlite", False, 120.0, socket.gethostname())
    cluster = parse_config(minimal(queue="postgresql://gw@db:5432/gw", lease_s=30, node_name="gpu-1"), tmp_path)
    assert (cluster.queue, cluster.clustered, cluster.lease_s, cluster.node_name) == ("postgresql://gw@db:5432/gw", True, 30.0, "gpu-1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"queue": "mysql://db/gw"},
            "queue: must be 'sqlite' or a PostgreSQL URL (postgresql://user@host:port/database), got 'mysql://db/gw'",
        ),
        ({"queue": "sqlite:///x.db"}, "queue: must be 'sqlite' or a PostgreSQL URL"),
        ({"lease_s": 0}, "lease_s: must be positive, got 0"),
        ({"lease_s": "long"}, "lease_s: 'long' is not a number"),
    ],
    ids=["other-database", "sqlite-url", "lease-zero", "lease-text"],
)
def test_cluster_config_mistakes_are_refused_naming_the_key(tmp_path: Path, change: dict, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(minimal(**change), tmp_path)
