"""Stage an app as a self-contained MAP source folder.

Layout of the staged folder (it becomes /opt/holoscan/app in the image, run as ``python3 /opt/holoscan/app``)::

    __main__.py              the app's own entry point (apps/<app>/__main__.py): it finds operators/ beside
                             itself and puts this folder on sys.path, so ``apps.*`` and ``operators.*`` resolve
    app.yaml                 the app's MAP manifest (for ``monai-deploy package -c``)
    requirements.txt         the project's pinned requirements (the packager pip-installs them)
    apps/__init__.py, apps/common/, apps/<app>/   the app package and the start-up code it shares
    operators/<domain>/      the operator packages the app imports (directly or through them), with the
                             ``__init__.py`` of each package above them: the spleen MAP carries no WSI code
    model_zoo/<model>/*.json the model configs and cards the app reads at run time (weights come from -m)

Every first-party import in the staged code must resolve inside the folder; staging fails otherwise.
"""

from __future__ import annotations

import ast
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .app_specs import REPO_ROOT, AppSpec

logger = logging.getLogger(__name__)

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
MODEL_CONFIG_SUFFIXES = (".json",)  # configs and cards; weights travel separately as the MAP's models


class StagingError(RuntimeError):
    """The app cannot be staged as a self-contained folder."""


@dataclass(frozen=True)
class StageItem:
    """One file or tree copied from the repository into the staged folder."""

    source: Path
    target: str  # relative to the staged folder
    tree: bool = False


def stage_plan(spec: AppSpec, repo_root: Path = REPO_ROOT) -> list[StageItem]:
    """What is copied where, for ``spec``'s app (reads the app's imports and the model-zoo listing, writes nothing)."""
    app_dir = repo_root / "apps" / spec.name
    items = [
        StageItem(app_dir / "__main__.py", "__main__.py"),
        StageItem(app_dir / "app.yaml", "app.yaml"),
        StageItem(repo_root / "requirements.txt", "requirements.txt"),
        StageItem(repo_root / "apps" / "__init__.py", "apps/__init__.py"),
        StageItem(repo_root / "apps" / "common", "apps/common", tree=True),
        StageItem(app_dir, f"apps/{spec.name}", tree=True),
    ]
    items.extend(StageItem(path, str(path.relative_to(repo_root))) for path in imported_operator_files(app_dir, repo_root))
    for model in spec.model_names:
        configs = sorted(p for p in (repo_root / "model_zoo" / model).glob("*") if p.is_file() and p.suffix in MODEL_CONFIG_SUFFIXES)
        if not configs:
            raise StagingError(f"model_zoo/{model} has no config ({', '.join(MODEL_CONFIG_SUFFIXES)}) for {spec.name}")
        items.extend(StageItem(path, f"model_zoo/{model}/{path.name}") for path in configs)
    return items


def first_party_names(repo_root: Path) -> set[str]:
    """Top-level packages and modules of the repository (what a staged import may need from it)."""
    names = {p.name for p in repo_root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return names | {p.stem for p in repo_root.glob("*.py")}


def imported_modules(path: Path, folder: Path) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(dotted module path, whether it is an imported *name* that may be a module or an attribute) for each
    import of a source file, relative imports resolved against ``folder``."""
    package = path.parent.relative_to(folder).parts
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((tuple(alias.name.split(".")), False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = (*base, *(node.module.split(".") if node.module else ()))
            yield module, False
            yield from (((*module, alias.name), True) for alias in node.names if alias.name != "*")


def _module_file(root: Path, module: tuple[str, ...]) -> Path | None:
    target = root.joinpath(*module)
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_operator_files(app_dir: Path, repo_root: Path = REPO_ROOT, package: str = "operators") -> list[Path]:
    """Every file of the ``package`` sub-packages that the code of ``app_dir`` and ``apps/common`` imports,
    directly or through other modules of ``package``, plus the ``__init__.py`` of each package above them.

    Whole sub-packages are copied (a domain such as ``operators/ct`` travels as one), never single modules:
    a lazy import inside a function of a staged package still resolves.
    """
    pending = [p for d in (app_dir, repo_root / "apps" / "common") for p in sorted(d.rglob("*.py"))]
    seen: set[Path] = set()
    packages: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, _ in imported_modules(path, repo_root):
            if not module or module[0] != package:
                continue
            found = _module_file(repo_root, module)
            if found is None:
                continue
            folder = found.parent
            if folder not in packages:
                packages.add(folder)
                pending.extend(sorted(folder.glob("*.py")))
    files: set[Path] = set()
    for folder in packages:
        files.update(p for p in folder.glob("*.py"))
        for parent in folder.relative_to(repo_root).parents:
            if parent.parts:
                files.add(repo_root / parent / "__init__.py")
    return sorted(files)


def _resolves(folder: Path, module: tuple[str, ...]) -> bool:
    target = folder.joinpath(*module)
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def unresolved_first_party_imports(folder: Path, repo_root: Path = REPO_ROOT) -> list[str]:
    """``file: module`` for each first-party module imported in ``folder`` but missing from it.

    In ``from a.b import c``, ``a.b`` must be in the folder, and ``c`` too when the repository has it as a module.
    """
    first_party = first_party_names(repo_root)
    missing = set()
    for path in sorted(folder.rglob("*.py")):
        for module, is_name in imported_modules(path, folder):
            if not module or module[0] not in first_party or _resolves(folder, module):
                continue
            if not is_name or _resolves(repo_root, module):
                missing.add(f"{path.relative_to(folder)}: {'.'.join(module)}")
    return sorted(missing)


def stage_app(spec: AppSpec, out_dir: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Write the MAP source folder of ``spec``'s app to ``out_dir`` (absent or empty) and return it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise StagingError(f"{out_dir} is not empty; stage into a new folder")
    for item in stage_plan(spec, repo_root):
        target = out_dir / item.target
        if not item.source.exists():
            raise StagingError(f"{item.source} is missing")
        if item.tree:
            shutil.copytree(item.source, target, ignore=IGNORED)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item.source, target)
    missing = unresolved_first_party_imports(out_dir, repo_root)
    if missing:
        raise StagingError("staged code imports project modules that were not staged:\n  " + "\n  ".join(missing))
    logger.info("Staged %s as a MAP source folder in %s", spec.name, out_dir)
    return out_dir
