"""SIGINT and SIGTERM leave no partial output: real signals to a child process that stages an output set
with the real operators.core code (the apps' own runs are in tests/apps/test_output_safety.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from operators.core.interrupts import interrupt_exit_code, interrupt_message, pending_output, remove_pending_outputs
from tests.conftest import REPO_ROOT

OUTPUTS = ("seg.dcm", "surface.stl", "summary.json")
DEADLINE_S = 60.0  # generous: the 2 cores are shared

# The child: installs the handler, stages a new set over ``out`` and signals readiness by a file.
CHILD_PRELUDE = """
import os, signal, sys, time
from pathlib import Path
from operators.core.atomic_io import write_atomically, write_json_atomically
from operators.core.interrupts import install_interrupt_handler
from operators.core.output_set import staged_output_set
out, ready = Path(sys.argv[1]), Path(sys.argv[2])
install_interrupt_handler("test_app", out)
OUTPUTS = ("seg.dcm", "surface.stl", "summary.json")
"""

STAGE_AND_WAIT = """
with staged_output_set(out, OUTPUTS) as staging:
    write_atomically(staging / "seg.dcm", lambda tmp: tmp.write_text("new seg"))
    def slow_write(tmp):
        tmp.write_text("half a surface")
        ready.touch()
        time.sleep(120)
    write_atomically(staging / "surface.stl", slow_write)
"""

WRITE_BESIDE_THE_SET = """
def slow_write(tmp):
    tmp.write_text("half a record")
    ready.touch()
    time.sleep(120)
out.mkdir(parents=True, exist_ok=True)
write_atomically(out / "error.json", slow_write)
"""

# An audit hook sends SIGTERM at the first rename out of the staging folder: the signal lands mid-publication.
SIGNAL_WHILE_PUBLISHING = """
def hook(event, args):
    publishing = event == "os.rename" and Path(args[0]).parent.name.startswith(".partial-") and Path(args[1]).parent == out
    if publishing and not ready.exists():
        ready.touch()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler thread has the signal now, and waits for the publication
sys.addaudithook(hook)
with staged_output_set(out, OUTPUTS) as staging:
    for name in ("seg.dcm", "surface.stl"):
        write_atomically(staging / name, lambda tmp: tmp.write_text("new " + tmp.name.split(".")[1]))
    write_json_atomically(staging / "summary.json", {"run": 2})
"""  # no wait after it: the publication's end waits for the interrupt's exit


def contents(folder: Path) -> dict[str, str]:
    return {p.name: (p.read_text() if p.is_file() else "<dir>") for p in sorted(folder.iterdir())}


def previous_set(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in OUTPUTS:
        (folder / name).write_text(f"old {name}")
    return folder


def start_child(body: str, out: Path, ready: Path) -> subprocess.Popen:
    code = textwrap.dedent(CHILD_PRELUDE) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(out), str(ready)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, f"{path} did not appear within {DEADLINE_S} s"
        time.sleep(0.02)


def finish(child: subprocess.Popen) -> tuple[int, str]:
    _, stderr = child.communicate(timeout=DEADLINE_S)
    return child.returncode, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("earlier", ["previous-set", "first-run"])
def test_an_interrupt_while_staging_leaves_the_previous_set_or_nothing(tmp_path: Path, signum: int, earlier: str):
    out = previous_set(tmp_path / "out") if earlier == "previous-set" else tmp_path / "out" / "slide"  # the run creates it
    before = contents(out) if out.exists() else None
    child = start_child(STAGE_AND_WAIT, out, tmp_path / "ready")
    wait_for(tmp_path / "ready", child)
    child.send_signal(signum)
    returncode, stderr = finish(child)
    assert returncode == 128 + signum
    assert stderr.strip().splitlines()[-1] == f"test_app: interrupted by {signal.Signals(signum).name}; no partial outputs left in {out}"
    assert "Traceback" not in stderr
    if before is None:
        assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # the folder the run made is gone too
    else:
        assert contents(out) == before  # byte for byte, no .partial-* folder, no temporary file


def test_an_interrupt_while_a_file_is_written_beside_a_set_removes_its_temporary_file(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    before = contents(out)
    child = start_child(WRITE_BESIDE_THE_SET, out, tmp_path / "ready")
    wait_for(tmp_path / "ready", child)
    assert any(p.name.startswith(".error.json.") for p in out.iterdir())  # the temporary file the signal interrupts
    child.send_signal(signal.SIGTERM)
    returncode, _ = finish(child)
    assert returncode == 143
    assert contents(out) == before


def test_a_sigterm_while_publishing_waits_for_the_whole_new_set(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    child = start_child(SIGNAL_WHILE_PUBLISHING, out, tmp_path / "ready")
    returncode, stderr = finish(child)
    assert (tmp_path / "ready").exists(), stderr  # the signal was sent from inside the publication
    assert returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == f"test_app: interrupted by SIGTERM; no partial outputs left in {out}"
    assert contents(out) == {"seg.dcm": "new seg", "summary.json": '{\n  "run": 2\n}\n', "surface.stl": "new surface"}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_the_exit_code_of_an_interrupt_is_the_shells(signum: int, code: int):
    assert interrupt_exit_code(signum) == code


@pytest.mark.parametrize(
    ("left", "line"),
    [
        ((), "app: interrupted by SIGTERM; no partial outputs left in /out"),
        ((Path("/out/.partial-x"),), "app: interrupted by SIGTERM; could not remove the unfinished /out/.partial-x"),
    ],
)
def test_the_interrupt_message_is_one_line_naming_the_signal_and_what_is_left(left: tuple[Path, ...], line: str):
    assert interrupt_message("app", signal.SIGTERM, Path("/out"), left) == line


def test_pending_outputs_are_removed_but_a_created_folder_only_while_empty(tmp_path: Path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "error.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "staging" / "deep").mkdir(parents=True)
    (tmp_path / "staging" / "deep" / "seg.dcm").write_text("half")
    (tmp_path / "file.partial").write_text("half")
    with (
        pending_output(tmp_path / "kept", "remove_if_empty"),
        pending_output(tmp_path / "empty", "remove_if_empty"),
        pending_output(tmp_path / "staging"),
        pending_output(tmp_path / "file.partial"),
        pending_output(tmp_path / "never-made"),
    ):
        assert remove_pending_outputs() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert remove_pending_outputs() == []  # unregistered on leaving: nothing more is touched
