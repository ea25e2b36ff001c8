"""Command line: stage an app as a MAP source, write its build context, or run a context's app.

    python -m map_packaging stage   --app spleen_seg_app --out STAGED [--models MODEL --prebuild-runtime-cache]
    python -m map_packaging context --app spleen_seg_app --models model_zoo/spleen_ct_segmentation --out CONTEXT [--tag spleen-seg:0.1.0]
    python -m map_packaging run     --context CONTEXT -i INPUT -o OUTPUT [-w WORKDIR] [-- APP OPTIONS]

``stage`` logs the ``monai-deploy package`` command that builds the image from the staged folder on a
machine with Docker; ``context`` runs holoscan-cli's packager up to (not including) ``docker buildx``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from .app_specs import APPS, ARTIFACTS_FILE, app_spec
from .context import PackageRequest, build_context, read_context
from .local_run import LocalMounts, run_as_entrypoint
from .runtime_cache import prebuild_runtime_cache
from .stage import stage_app

logger = logging.getLogger("map_packaging")


def default_tag(app: str) -> str:
    return app.replace("_", "-")  # holoscan-cli tags it with the app.yaml version


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m map_packaging", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    stage = commands.add_parser("stage", help="write the app's self-contained MAP source folder")
    stage.add_argument("--app", required=True, choices=sorted(APPS))
    stage.add_argument("--out", required=True, type=Path, help="new or empty folder")
    stage.add_argument("--models", type=Path, help="models folder, only for the logged package command")
    stage.add_argument("--tag", help="image tag, only for the logged package command")
    stage.add_argument(
        "--prebuild-runtime-cache",
        action="store_true",
        help="convert the --models model for OpenVINO into the MAP (no conversion at its first run)",
    )

    context = commands.add_parser("context", help="stage the app and write its Docker build context with holoscan-cli's packager")
    context.add_argument("--app", required=True, choices=sorted(APPS))
    context.add_argument("--models", required=True, type=Path, help="model file, model folder, or folder of model folders (as -m)")
    context.add_argument("--out", required=True, type=Path, help="new or empty folder")
    context.add_argument("--tag", help="image name[:tag] (default: the app name)")
    context.add_argument("--cuda", type=int, default=13, choices=[12, 13], help="CUDA major version; holoscan-cu13 needs 13")
    context.add_argument("--source", type=Path, default=ARTIFACTS_FILE, help="holoscan-cli artifact list (default: the committed copy)")
    context.add_argument("--prebuild-runtime-cache", action="store_true", help="convert the model for OpenVINO into the MAP")

    run = commands.add_parser("run", help="run a build context's app as the image's entrypoint would")
    run.add_argument("--context", required=True, type=Path)
    run.add_argument("-i", "--input", required=True, type=Path)
    run.add_argument("-o", "--output", required=True, type=Path)
    run.add_argument("-w", "--workdir", type=Path, help="stands for /var/holoscan (default: a temporary folder)")
    run.add_argument("app_args", nargs="*", help="options passed to the app (after --)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "stage":
        if args.prebuild_runtime_cache and args.models is None:
            logger.error("--prebuild-runtime-cache needs --models (the model to convert)")
            return 2
        staged = stage_app(app_spec(args.app), args.out).resolve()
        if args.prebuild_runtime_cache:
            prebuild_runtime_cache(app_spec(args.app), staged, args.models)
        request = PackageRequest(staged, args.models or Path("MODELS"), args.tag or default_tag(args.app))
        logger.info("Build the image on a machine with Docker:\n  monai-deploy %s", shlex.join(request.package_argv()))
        return 0
    if args.command == "context":
        with tempfile.TemporaryDirectory(prefix=f"{args.app}_staged") as staged:
            staged_app = stage_app(app_spec(args.app), Path(staged) / "app")
            if args.prebuild_runtime_cache:
                prebuild_runtime_cache(app_spec(args.app), staged_app, args.models)
            request = PackageRequest(
                staged_app,
                args.models.resolve(),
                args.tag or default_tag(args.app),
                cuda=args.cuda,
                source=args.source.resolve(),
            )
            context = build_context(request, args.out)
        logger.info("Build context in %s; image tag %s; Dockerfile, map/app.json, map/pkg.json", context.root, context.image_tag)
        return 0
    context = read_context(args.context)
    with tempfile.TemporaryDirectory(prefix="map_workdir") as scratch:
        mounts = LocalMounts(args.input.resolve(), args.output.resolve(), (args.workdir or Path(scratch)).resolve())
        result = run_as_entrypoint(context, mounts, args.app_args)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
