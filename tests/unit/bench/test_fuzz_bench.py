"""`swarmd.bench.fuzz`: how a case is judged, and the schema of fuzz.json / fuzz.md on a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from typer.testing import CliRunner

from swarmd.bench.fuzz import fuzz_report, judge_case, run_target
from swarmd.bench.fuzz_targets import TARGETS, Target
from swarmd.cli.swarm import app
from swarmd.errors import ConfigError


def _target(run: Any, examples: tuple[Any, ...] = ()) -> Target:
    return Target("fake", "tests.fake", lambda: st.integers(0, 9), run, (ConfigError,), examples=examples)


def _raise(exc: BaseException) -> Any:
    def run(value: object, scratch: Path) -> None:
        raise exc

    return run


def test_allowed_errors_and_returns_are_not_findings(tmp_path: Path) -> None:
    assert judge_case(_target(_raise(ConfigError("bad"))), 1, tmp_path, 5.0, 256) is None
    assert judge_case(_target(lambda v, s: v), 1, tmp_path, 5.0, 256) is None


def test_another_exception_is_a_finding_with_its_input(tmp_path: Path) -> None:
    found = judge_case(_target(_raise(KeyError("site"))), {"x": 1}, tmp_path, 5.0, 256)
    assert found is not None
    assert (found.kind, found.error, found.input) == ("exception", "KeyError", "{'x': 1}")
    assert "test_fuzz_bench.py" in found.where


def test_a_case_past_its_time_bound_is_interrupted(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    found = judge_case(_target(lambda v, s: time.sleep(5)), 1, tmp_path, 0.2, 256)
    assert found is not None and found.kind == "timeout" and time.perf_counter() - t0 < 4


HOG = """
import sys
from pathlib import Path
from hypothesis import strategies as st
from swarmd.bench.fuzz import judge_case
from swarmd.bench.fuzz_targets import Target
from swarmd.errors import ConfigError

def hog(value, scratch):
    blob = bytearray(64 << 20)
    blob[::4096] = b"x" * len(blob[::4096])  # touch every page

target = Target("fake", "tests.fake", lambda: st.integers(0, 9), hog, (ConfigError,))
found = judge_case(target, 1, Path(sys.argv[1]), 5.0, 16)
print(found.kind if found else "none")
"""


def test_a_case_that_grows_peak_memory_is_a_finding(tmp_path: Path) -> None:
    # In a process of its own: a long test session's heap (freed but resident arenas, earlier peaks)
    # is not what this measures, and made the in-process version flaky in the full suite.
    done = subprocess.run(
        [sys.executable, "-c", HOG, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "memory"


def test_every_case_is_judged_and_examples_run_first(tmp_path: Path) -> None:
    seen: list[int] = []

    def run(value: int, scratch: Path) -> None:
        seen.append(value)
        if value == 123:
            raise ValueError("boom")

    result = run_target(_target(run, examples=(123,)), 20)
    assert seen[0] == 123 and result.cases == len(seen) >= 10
    assert [f.error for f in result.findings] == ["ValueError"] and len(result.distinct) == 1


def test_report_schema_on_a_tiny_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "fuzz",
            "--cases",
            "5",
            "--target",
            "manifest",
            "--target",
            "site_toml",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "fuzz.json").read_text())
    assert doc["bench"] == "fuzz" and doc["schema"] == 1 and doc["result"]["findings"] == 0
    assert doc["result"]["cases_per_target"] == 5
    rows = doc["result"]["targets"]
    assert [r["target"] for r in rows] == ["manifest", "site_toml"]
    for r in rows:
        assert set(r) == {
            "target",
            "boundary",
            "allowed",
            "cases",
            "findings",
            "distinct_findings",
            "seconds",
            "cases_per_s",
            "slowest_case_ms",
        }
        assert r["cases"] >= 5 and r["findings"] == 0 and r["cases_per_s"] > 0
    assert [g["met"] for g in doc["goals"]] == [True, True]
    md = (tmp_path / "fuzz.md").read_text()
    assert "| manifest | `swarmd.codec.Manifest.from_wire` | CodecError |" in md


def test_findings_are_rendered_and_counted(tmp_path: Path) -> None:
    result = run_target(_target(_raise(KeyError("k"))), 3)
    report = fuzz_report([result], 3)
    assert report.result["findings"] == result.cases and report.goals[0]["met"] is False
    assert "| fake | exception | KeyError |" in report.tables


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "fuzz", "--target", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "nope" in result.output
    assert "manifest" in TARGETS


def test_a_finding_makes_the_command_exit_non_zero(tmp_path: Path, monkeypatch: Any) -> None:
    from swarmd.bench import fuzz_targets

    monkeypatch.setitem(fuzz_targets.BUILDERS, "fake", lambda: _target(_raise(KeyError("k"))))
    monkeypatch.setattr(fuzz_targets, "TARGETS", (*TARGETS, "fake"))
    result = CliRunner().invoke(
        app, ["bench", "fuzz", "--cases", "3", "--target", "fake", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert json.loads((tmp_path / "fuzz.json").read_text())["result"]["findings"] >= 3
