"""Shared fixtures (the demo CT, generated once per session; a runner for the apps' command line) and the skip rule.

The skip rule: under CI (``CI=true``, as .ci/run's environment has) or with ``REQUIRE_ALL_TESTS=1``
(scripts/test.sh sets it) a skipped test is reported as a failure that names the skip reason, so a
green run means the Orthanc, real-data and validator tests ran. The set-up (``scripts/setup.sh
--with-test-tools``) installs everything they need. A test that is conditional by design, on
something no set-up can provide (a CUDA device), carries ``@pytest.mark.may_skip(reason=...)``: its
skip stays a skip. Outside CI, without the variable, every skip stays a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from testkit.orthanc import Orthanc, missing_orthanc, start_orthanc
from training.synthetic.demo_inputs import DemoCT, write_demo_ct

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ALL_TESTS = "REQUIRE_ALL_TESTS"
MAY_SKIP = "may_skip"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
SKIPS_FAIL = pytest.StashKey[str | None]()

pytest_plugins = ("pytester",)  # tests/test_conftest.py runs the skip rule on small test files


def skips_fail(environ: Mapping[str, str]) -> str | None:
    """Which setting makes a skip a failure (``"CI=true"``, ``"REQUIRE_ALL_TESTS=1"``), or None when skips stay skips."""
    for name in ("CI", REQUIRE_ALL_TESTS):
        if environ.get(name, "").strip().lower() in TRUE_VALUES:
            return f"{name}={environ[name]}"
    return None


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skip report gives (pytest keeps it as (path, line, "Skipped: reason"))."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def as_failure(report: pytest.TestReport | pytest.CollectReport, setting: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under {setting}, where a skip is a failure: {skip_reason(report)}\n"
        f"(scripts/setup.sh --with-test-tools installs what the tests need; a test conditional by design is marked {MAY_SKIP})"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SKIPS_FAIL] = skips_fail(os.environ)
    config.addinivalue_line(
        "markers",
        f"{MAY_SKIP}(reason): conditional by design (e.g. needs a CUDA device); its skip stays a skip under CI or {REQUIRE_ALL_TESTS}=1",
    )


def pytest_report_header(config: pytest.Config) -> str:
    setting = config.stash[SKIPS_FAIL]
    return f"skips: failures ({setting})" if setting else f"skips: allowed (neither CI nor {REQUIRE_ALL_TESTS} is true)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    setting = item.config.stash[SKIPS_FAIL]
    if setting and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker(MAY_SKIP) is None:
        as_failure(report, setting)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    report = yield
    setting = collector.config.stash[SKIPS_FAIL]
    if setting and report.skipped:  # a module-level skip or importorskip
        as_failure(report, setting)
    return report


@pytest.fixture(scope="session")
def demo_ct(tmp_path_factory: pytest.TempPathFactory) -> DemoCT:
    return write_demo_ct(tmp_path_factory.mktemp("demo"))


def run_app(app: str, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """Run ``python apps/<app> ARGS`` as a user (or a MAP entrypoint) would, from the repository root."""
    full_env = {**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "apps" / app), *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _running_orthanc(folder: Path, dicomweb: bool) -> Iterator[Orthanc]:
    """A real Orthanc for one test; where it is not installed the test skips naming the set-up command
    (a failure under CI or REQUIRE_ALL_TESTS=1)."""
    problem = missing_orthanc(dicomweb=dicomweb)
    if problem:
        pytest.skip(problem)
    server = start_orthanc(folder, dicomweb=dicomweb)
    yield server
    server.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    yield from _running_orthanc(tmp_path / "orthanc", dicomweb=False)


@pytest.fixture
def orthanc_dicomweb(tmp_path: Path) -> Iterator[Orthanc]:
    yield from _running_orthanc(tmp_path / "orthanc-web", dicomweb=True)
