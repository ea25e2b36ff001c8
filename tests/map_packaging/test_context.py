"""Build contexts written by holoscan-cli's own packager code, and the manifests they carry."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml
from holoscan_cli.common.artifact_sources import ArtifactSources
from holoscan_cli.common.utils import get_requested_gpus
from holoscan_cli.packager.config_reader import ApplicationConfiguration
from holoscan_cli.packager.parameters import PackageBuildParameters
from holoscan_cli.runner.resources import _convert_to_bytes, get_shared_memory_size

from map_packaging.app_specs import APPS, ARTIFACTS_FILE, REPO_ROOT, app_spec
from map_packaging.context import PackageRequest, build_context, pinned_holoscan_cuda
from map_packaging.stage import stage_app

from .conftest import SPLEEN_MODELS, WSI_CARD


def app_yaml(app: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "apps" / app / "app.yaml").read_text())


@pytest.mark.parametrize("path", ["app.yaml", *(f"apps/{app}/app.yaml" for app in sorted(APPS))])
def test_app_yaml_is_accepted_by_holoscan_cli_config_reader_with_title_version_formats_and_resources(path: str):
    reader = ApplicationConfiguration()
    reader.read(REPO_ROOT / path)
    parameters = PackageBuildParameters()
    manifest = reader.populate_app_manifest(parameters)
    assert reader.title() and manifest.version
    assert manifest.input["formats"] == ["file"] and manifest.output["formats"] == ["file"]
    resources = reader.populate_package_manifest(parameters).resources
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(resources)
    assert resources["gpu"] == 1 and resources["cpu"] >= 1
    for key in ("memory", "gpuMemory", "sharedMemory"):
        assert _convert_to_bytes(resources[key]) >= 2**30


def test_root_app_yaml_is_the_spleen_apps_manifest():
    assert (REPO_ROOT / "app.yaml").resolve() == (REPO_ROOT / "apps" / "spleen_seg_app" / "app.yaml").resolve()


def test_committed_artifact_list_passes_holoscan_cli_validation_for_its_own_release_on_cuda_13():
    sources = ArtifactSources(13)
    sources.load(str(ARTIFACTS_FILE))
    release = ArtifactSources.HoloscanVersion  # holoscan-cli's own version, as the download would pick
    assert release == "4.2.0" and release in sources.holoscan_versions
    assert re.fullmatch(r"nvcr\.io/nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04", sources.base_image(release)["dgpu"])
    assert sources.wheel_package_version(release) == importlib.metadata.version("holoscan-cu13")


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_json_runs_the_app_folder_with_python3_on_the_image_paths(app: str, spleen_context, wsi_context):
    context = {"spleen_seg_app": spleen_context, "wsi_metastasis_app": wsi_context}[app]
    manifest = context.app_json
    assert manifest["command"] == '["python3", "/opt/holoscan/app"]'
    assert manifest["environment"]["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    assert manifest["environment"]["HOLOSCAN_APPLICATION"] == "/opt/holoscan/app"
    assert (manifest["workingDirectory"], manifest["input"]["path"], manifest["output"]["path"]) == ("/var/holoscan", "input/", "output/")
    assert manifest["input"]["formats"] == manifest["output"]["formats"] == ["file"]
    assert (manifest["sdk"], manifest["sdkVersion"]) == ("monai-deploy", importlib.metadata.version("monai-deploy-app-sdk"))
    assert manifest["version"] == app_yaml(app)["application"]["version"]


@pytest.mark.parametrize("app", sorted(APPS))
def test_pkg_json_carries_the_app_yaml_resources_and_model_folders_and_holoscan_cli_reads_them(app: str, spleen_context, wsi_context):
    context = {"spleen_seg_app": spleen_context, "wsi_metastasis_app": wsi_context}[app]
    package = context.pkg_json
    assert package["resources"] == app_yaml(app)["resources"]
    assert package["models"] == {name: f"/opt/holoscan/models/{name}" for name in app_spec(app).model_names}
    assert (package["applicationRoot"], package["platformConfig"]) == ("/opt/holoscan/app", "dgpu")
    assert get_requested_gpus(package) == 1
    assert get_shared_memory_size(package, False, False, None, "config") == _convert_to_bytes(app_yaml(app)["resources"]["sharedMemory"])


def test_dockerfile_builds_on_cuda_13_installs_the_pinned_requirements_and_copies_app_and_models(spleen_context):
    dockerfile = spleen_context.dockerfile
    base = re.search(r"^FROM (\S+) AS base$", dockerfile, re.MULTILINE).group(1)
    assert re.fullmatch(r"nvcr\.io/nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04", base)
    requirements = (spleen_context.root / "pip" / "requirements.txt").read_text()
    assert requirements.strip() == (REPO_ROOT / "requirements.txt").read_text().strip()
    assert pinned_holoscan_cuda(requirements) == 13
    assert "COPY ./pip/requirements.txt /tmp/requirements.txt" in dockerfile
    assert "RUN pip install --no-cache-dir --user -r /tmp/requirements.txt" in dockerfile
    assert f"RUN pip install monai-deploy-app-sdk=={importlib.metadata.version('monai-deploy-app-sdk')}" in dockerfile
    assert re.search(r"^COPY ./app /opt/holoscan/app$", dockerfile, re.MULTILINE)
    assert re.search(r"^COPY ./models\s+/opt/holoscan/models$", dockerfile, re.MULTILINE)
    assert "ENV HOLOSCAN_MODEL_PATH=/opt/holoscan/models" in dockerfile
    assert 'ENTRYPOINT ["/var/holoscan/tools"]' in dockerfile and (spleen_context.root / "tools").is_file()
    # the app runs as the unprivileged user, who owns the working, input and output folders
    assert re.search(r"^USER \$UNAME$", dockerfile, re.MULTILINE)
    assert "chown -R holoscan /var/holoscan/output" in dockerfile


def test_context_app_folder_is_the_staged_one_and_models_sit_where_the_image_expects_them(spleen_context):
    assert (spleen_context.app_dir / "__main__.py").is_file() and (
        spleen_context.app_dir / "operators" / "models" / "networks.py"
    ).is_file()
    image_model = spleen_context.models_dir / "spleen_ct_segmentation" / "model.ts"
    assert hashlib.sha256(image_model.read_bytes()).hexdigest() == hashlib.sha256((SPLEEN_MODELS / "model.ts").read_bytes()).hexdigest()
    assert (spleen_context.root / "app.config").read_bytes() == (REPO_ROOT / "apps" / "spleen_seg_app" / "app.yaml").read_bytes()
    assert spleen_context.image_tag == f"spleen-seg-x64-workstation-dgpu-linux-amd64:{app_yaml('spleen_seg_app')['application']['version']}"


def test_wsi_context_carries_the_classifier_given_with_its_card(wsi_context):
    folder = wsi_context.models_dir / "pathology_tumor_detection"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.pt"]
    assert WSI_CARD["name"] in (folder / "metadata.json").read_text()


def test_cuda_version_other_than_the_pinned_holoscan_wheels_is_refused(tmp_path: Path):
    staged = stage_app(app_spec("spleen_seg_app"), tmp_path / "staged")
    with pytest.raises(ValueError, match="holoscan-cu13"):
        build_context(PackageRequest(staged, SPLEEN_MODELS, "spleen-seg", cuda=12), tmp_path / "context")
    assert not (tmp_path / "context").exists()


def test_build_context_refuses_a_folder_that_is_not_empty(tmp_path: Path):
    staged = stage_app(app_spec("spleen_seg_app"), tmp_path / "staged")
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(FileExistsError):
        build_context(PackageRequest(staged, SPLEEN_MODELS, "spleen-seg"), tmp_path / "context")


def test_package_command_names_cuda_13_the_local_artifact_list_and_the_staged_manifest(tmp_path: Path):
    argv = PackageRequest(tmp_path / "staged", SPLEEN_MODELS, "spleen-seg").package_argv()
    assert argv[:2] == ["package", str(tmp_path / "staged")]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options == {
        "-c": str(tmp_path / "staged" / "app.yaml"),
        "-t": "spleen-seg",
        "--platform": "x86_64",
        "--cuda": "13",
        "-m": str(SPLEEN_MODELS),
        "--source": str(ARTIFACTS_FILE),
        "--sdk": "monai-deploy",
    }
