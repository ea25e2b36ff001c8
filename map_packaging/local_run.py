"""Run a build context's app folder as the image's entrypoint would, without Docker.

In the image, ``/var/holoscan/tools`` launches app.json's ``command`` (``python3 /opt/holoscan/app``) in
the working directory /var/holoscan, with app.json's ``environment``; ``monai-deploy run`` mounts the
host input and output folders at the working directory's ``input/`` and ``output/`` and points
HOLOSCAN_INPUT_PATH / HOLOSCAN_OUTPUT_PATH there. Here the same command and variables are used with
each container path replaced by its local counterpart: the context's ``app/``, ``models/`` and ``map/``
folders, and local input, output and working folders.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import BuildContext


@dataclass(frozen=True)
class LocalMounts:
    """Local folders standing for the container's input and output mounts and its working directory."""

    input_dir: Path
    output_dir: Path
    work_dir: Path


def container_path_map(context_root: Path, mounts: LocalMounts) -> dict[str, Path]:
    """Container path -> local path, from holoscan-cli's own defaults for the image layout."""
    from holoscan_cli.common.constants import DefaultValues as D

    work = D.WORK_DIR.as_posix()
    return {
        D.HOLOSCAN_APP_DIR.as_posix(): context_root / "app",
        D.MODELS_DIR.as_posix(): context_root / "models",
        D.HOLOSCAN_DOCS_DIR.as_posix(): context_root / "docs",
        D.APP_MANIFEST_PATH: context_root / "map" / "app.json",
        D.PKG_MANIFEST_PATH: context_root / "map" / "pkg.json",
        D.HOLOSCAN_CONFIG_PATH.as_posix(): context_root / "app.config",
        posixpath.join(work, D.INPUT_DIR).rstrip("/"): mounts.input_dir,
        posixpath.join(work, D.OUTPUT_DIR).rstrip("/"): mounts.output_dir,
        work: mounts.work_dir,
    }


def localize(value: str, path_map: Mapping[str, Path]) -> str:
    """``value`` with its container path prefix (the longest that matches) replaced by the local path."""
    for prefix in sorted(path_map, key=len, reverse=True):
        if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
            rest = value[len(prefix.rstrip("/")) :].lstrip("/")
            return str(path_map[prefix] / rest) if rest else str(path_map[prefix])
    return value


def container_environment(app_json: Mapping[str, Any]) -> dict[str, str]:
    """The HOLOSCAN_* variables ``monai-deploy run`` sets (holoscan-cli dockerutils.docker_run's rules)."""
    work = app_json["workingDirectory"]
    mounted = {
        "HOLOSCAN_INPUT_PATH": posixpath.join(work, app_json["input"]["path"]),
        "HOLOSCAN_OUTPUT_PATH": posixpath.join(work, app_json["output"]["path"]),
    }
    return {name: mounted.get(name, str(value)) for name, value in app_json["environment"].items()}


def entrypoint_command(app_json: Mapping[str, Any], path_map: Mapping[str, Path], python: str = sys.executable) -> list[str]:
    """app.json's command, localized; its ``python3`` is this interpreter (the one with the pinned stack)."""
    command = json.loads(app_json["command"])
    return [python if word == "python3" else localize(word, path_map) for word in command]


def local_environment(app_json: Mapping[str, Any], path_map: Mapping[str, Path], base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without PYTHONPATH or HOLOSCAN_* variables, plus the container's variables localized."""
    env = {k: v for k, v in base.items() if k != "PYTHONPATH" and not k.startswith("HOLOSCAN_")}
    env.update({name: localize(value, path_map) for name, value in container_environment(app_json).items()})
    return env


def run_as_entrypoint(
    context: BuildContext,
    mounts: LocalMounts,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess:
    """Run the context's app as the container would; output and working folders are created as in the image.

    Bytecode goes to a throw-away cache: in the image the app folder is root-owned and the app user
    cannot write it, so nothing may appear there.
    """
    path_map = container_path_map(context.root, mounts)
    mounts.output_dir.mkdir(parents=True, exist_ok=True)
    mounts.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="map_pycache") as pycache:
        env = {**local_environment(context.app_json, path_map, os.environ), "PYTHONPYCACHEPREFIX": pycache, **(extra_env or {})}
        return subprocess.run(
            [*entrypoint_command(context.app_json, path_map), *args],
            cwd=mounts.work_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
