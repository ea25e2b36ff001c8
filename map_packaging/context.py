"""The Docker build context of a MAP, written by holoscan-cli's own packager code, without Docker.

``monai-deploy package`` parses its arguments, downloads the release artifact list, writes
``map/app.json``, ``map/pkg.json``, copies the app, models and requirements, renders the Dockerfile and
then calls ``docker buildx`` in a temporary folder it deletes. :func:`build_context` runs the same
holoscan-cli code (its argument parser, :class:`PackagingArguments`, the packager's manifest writers and
:class:`PythonAppBuilder`) into a folder of ours, with the local artifact list, and stops where
``BuilderBase.build`` would call ``_build_internal`` (buildx).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .app_specs import ARTIFACTS_FILE

logger = logging.getLogger(__name__)

SDK = "monai-deploy"  # explicit: holoscan-cli otherwise guesses the SDK from the name of the running program


@dataclass(frozen=True)
class PackageRequest:
    """The arguments of one ``monai-deploy package`` call."""

    app_dir: Path
    models: Path
    tag: str
    platform: str = "x86_64"
    cuda: int = 13
    source: Path = ARTIFACTS_FILE
    config: Path | None = None  # default: app_dir/app.yaml

    def package_argv(self) -> list[str]:
        """``monai-deploy package`` arguments (after the program name) for this request."""
        config = self.config or self.app_dir / "app.yaml"
        return [
            "package",
            str(self.app_dir),
            "-c",
            str(config),
            "-t",
            self.tag,
            "--platform",
            self.platform,
            "--cuda",
            str(self.cuda),
            "-m",
            str(self.models),
            "--source",
            str(self.source),
            "--sdk",
            SDK,
        ]


@dataclass(frozen=True)
class BuildContext:
    """A written build context and its parsed manifests."""

    root: Path
    app_json: dict[str, Any]
    pkg_json: dict[str, Any]
    dockerfile: str
    image_tag: str  # the tag buildx would give the image (holoscan-cli adds platform and version)

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"


def pinned_holoscan_cuda(requirements: str) -> int | None:
    """The CUDA major version of the holoscan wheel pinned in a requirements text (holoscan-cuNN), if any."""
    match = re.search(r"^\s*holoscan-cu(\d+)\s*==", requirements, re.MULTILINE | re.IGNORECASE)
    return int(match.group(1)) if match else None


def read_context(root: Path, image_tag: str = "") -> BuildContext:
    """Parse the manifests and Dockerfile of a build context folder."""
    root = Path(root)
    return BuildContext(
        root=root,
        app_json=json.loads((root / "map" / "app.json").read_text()),
        pkg_json=json.loads((root / "map" / "pkg.json").read_text()),
        dockerfile=(root / "Dockerfile").read_text(),
        image_tag=image_tag,
    )


def build_context(request: PackageRequest, out_dir: Path) -> BuildContext:
    """Write the build context ``monai-deploy package`` would hand to ``docker buildx`` into ``out_dir``."""
    from holoscan_cli.__main__ import parse_args
    from holoscan_cli.common.enum_types import ApplicationType
    from holoscan_cli.packager import packager
    from holoscan_cli.packager.arguments import PackagingArguments
    from holoscan_cli.packager.container_builder import PythonAppBuilder

    requirements = request.app_dir / "requirements.txt"
    pinned = pinned_holoscan_cuda(requirements.read_text()) if requirements.is_file() else None
    if pinned is not None and pinned != request.cuda:
        raise ValueError(
            f"--cuda {request.cuda} does not match holoscan-cu{pinned} pinned in {requirements}; "
            "a CUDA major mismatch between the image and the wheel breaks the app at run time"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; write the build context into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="holoscan_build_cache") as cache:  # the parser creates it; only buildx uses it
        args = parse_args([SDK, *request.package_argv(), "--build-cache", cache])
        arguments = PackagingArguments(args, str(out_dir))
    parameters = arguments.build_parameters
    if parameters.application_type not in (ApplicationType.PythonModule, ApplicationType.PythonFile):
        raise ValueError(f"{request.app_dir} is a {parameters.application_type.value} application, not a Python one")
    packager._create_app_manifest(arguments.application_manifest, str(out_dir))
    packager._create_package_manifest(arguments.package_manifest, str(out_dir))
    builder = PythonAppBuilder(parameters, str(out_dir))  # copies app/, models/, app.config, tools, .dockerignore
    if len(arguments.platforms) != 1:
        raise ValueError(f"one platform per build context, got {len(arguments.platforms)}")
    platform = arguments.platforms[0]
    builder._copy_supporting_files(platform)  # pip/requirements.txt
    builder._write_dockerfile(platform)  # BuilderBase.build() calls _build_internal (docker buildx) next
    logger.info("Wrote the build context of %s (image %s) in %s", request.app_dir, platform.tag, out_dir)
    return read_context(out_dir, platform.tag)
