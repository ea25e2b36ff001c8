"""The skip rule of tests/conftest.py, run by pytester on small test files: under CI or REQUIRE_ALL_TESTS=1 a skip fails."""

from __future__ import annotations

import pytest

from tests import conftest

TESTS = """
import pytest

def test_passes():
    pass

def test_skips_in_its_body():
    pytest.skip("orthanc is not installed")

@pytest.mark.skipif(True, reason="dciodvfy is not installed")
def test_skipped_by_a_mark():
    pass

@pytest.mark.may_skip(reason="needs a CUDA device")
def test_conditional_by_design():
    pytest.skip("no CUDA device")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_to_fail():
    assert False
"""
MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_nobody_installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def no_ci_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(conftest.REQUIRE_ALL_TESTS, raising=False)
    return monkeypatch


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_probe=source)
    return pytester.runpytest("-p", "no:cacheprovider", "-rA", plugins=[conftest])


def test_without_ci_settings_skips_stay_skips(pytester: pytest.Pytester, no_ci_settings):
    result = run(pytester, TESTS)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["skips: allowed*"])


@pytest.mark.parametrize(("name", "value"), [(conftest.REQUIRE_ALL_TESTS, "1"), ("CI", "true")])
def test_under_ci_settings_a_skip_fails_naming_its_reason(pytester: pytest.Pytester, no_ci_settings, name: str, value: str):
    no_ci_settings.setenv(name, value)
    result = run(pytester, TESTS)
    # a skip in the body fails the test; a skip at set-up (a skipif mark, a fixture) is an error at set-up
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"skips: failures ({name}={value})",
            f"skipped under {name}={value}, where a skip is a failure: dciodvfy is not installed",
            f"skipped under {name}={value}, where a skip is a failure: orthanc is not installed",
        ]
    )
    result.stdout.fnmatch_lines(["SKIPPED *no CUDA device"])


def test_ci_false_leaves_skips_as_skips(pytester: pytest.Pytester, no_ci_settings):
    no_ci_settings.setenv("CI", "false")
    no_ci_settings.setenv(conftest.REQUIRE_ALL_TESTS, "0")
    run(pytester, TESTS).assert_outcomes(passed=1, skipped=3, xfailed=1)


def test_a_module_level_skip_is_a_collection_error_under_the_rule(pytester: pytest.Pytester, no_ci_settings):
    run(pytester, MODULE_SKIP).assert_outcomes(skipped=1)
    no_ci_settings.setenv(conftest.REQUIRE_ALL_TESTS, "1")
    result = run(pytester, MODULE_SKIP)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*where a skip is a failure: could not import 'a_module_nobody_installed'*"])
