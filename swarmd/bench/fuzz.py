"""`swarm bench fuzz`: every boundary fed thousands of hypothesis inputs; anything but its named errors
is a finding.

`run_target` drives one `fuzz_targets.Target` through hypothesis (explicit examples first, then
`cases` generated inputs, no shrinking) and judges each case itself, so one bad input does not stop
the run: a finding is an exception outside the target's allowed SwarmErrors, a case that runs past
`case_seconds` (interrupted by SIGALRM where it can be), or a case that raises the process's peak
RSS by more than `case_mib`. `fuzz_report` renders cases, findings and speed per target; the CLI
exits non-zero when anything was found.
"""

from __future__ import annotations

import gc
import resource
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings

from swarmd.bench.fuzz_targets import TARGETS, Target, target
from swarmd.bench.report import Report, Step, goal, num, table

FULL_CASES = 10_000
QUICK_CASES = 300
CASE_SECONDS = 5.0  # a generous bound on a shared 2-core box; imports on the first case included
CASE_MIB = 256  # one case may not raise the process's peak RSS by more than this
SHOWN = 400  # characters of an input or message kept in a finding


class CaseTimeout(BaseException):
    """Raised into a case that ran past its time bound (BaseException: no `except Exception` eats it)."""


@dataclass(frozen=True)
class Finding:
    target: str
    kind: str  # "exception", "timeout" or "memory"
    error: str  # the exception's type, or what was exceeded
    message: str
    where: str  # innermost frame of the traceback in swarmd, else the last one
    input: str  # repr of the input, cut to SHOWN characters

    @property
    def signature(self) -> tuple[str, str, str]:
        return self.kind, self.error, self.where


@dataclass
class TargetResult:
    name: str
    boundary: str
    allowed: list[str]
    cases: int = 0
    seconds: float = 0.0
    slowest_ms: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def distinct(self) -> list[Finding]:
        """The first finding of each (kind, error, place), in the order found."""
        seen: dict[tuple[str, str, str], Finding] = {}
        for f in self.findings:
            seen.setdefault(f.signature, f)
        return list(seen.values())

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "boundary": self.boundary,
            "allowed": self.allowed,
            "cases": self.cases,
            "findings": len(self.findings),
            "distinct_findings": [asdict(f) for f in self.distinct],
            "seconds": round(self.seconds, 2),
            "cases_per_s": round(self.cases / self.seconds, 1) if self.seconds else 0.0,
            "slowest_case_ms": round(self.slowest_ms, 1),
        }


def _status_mib(field: str) -> float | None:
    """A `VmRSS`/`VmHWM` line of /proc/self/status in MiB; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> float:
    """Start a case's memory measure: reset the process's peak RSS (Linux >= 4.0: clear_refs 5) and
    return the RSS now. The lifetime peak (`ru_maxrss`) would hide a case that grows memory in a
    process that once used more, as a test run always has."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return _status_mib("VmRSS") or 0.0


def _peak_since_reset() -> float:
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _time_bound(seconds: float) -> Iterator[None]:
    """Interrupt the case with CaseTimeout after `seconds` (main thread only; elsewhere the caller
    still sees the elapsed time)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/swarmd/" in f.filename and "/bench/" not in f.filename]
    if not (ours or frames):
        return "?"
    f = (ours or frames)[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}"


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} chars)"


def judge_case(t: Target, value: Any, scratch: Path, case_seconds: float, case_mib: float) -> Finding | None:
    """Run one input through the target; a Finding when it did anything but return or raise an
    allowed error."""
    base, t0 = _reset_peak(), time.perf_counter()
    kind = error = message = where = ""
    # No cyclic GC inside a case: a full collection of the fuzzer's own heap (hypothesis keeps every
    # case's draws) would be billed to whichever case triggered it; a case's garbage goes after it.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with _time_bound(case_seconds):
            t.run(value, scratch)
    except t.allowed:
        pass
    except CaseTimeout as exc:
        kind, error, message, where = "timeout", "CaseTimeout", str(exc), _where(exc)
    except Exception as exc:  # noqa: BLE001 - anything outside the allowed errors is what we look for
        kind, error, message, where = "exception", type(exc).__name__, str(exc), _where(exc)
    finally:
        if gc_was_on:
            gc.enable()
    elapsed = time.perf_counter() - t0
    grown = _peak_since_reset() - base
    if not kind and elapsed > case_seconds:
        kind, error, message = "timeout", "slow", f"took {elapsed:.1f} s (bound {case_seconds} s)"
    if not kind and grown > case_mib:
        kind, error, message = "memory", "peak RSS", f"peak RSS grew by {grown:.0f} MiB (bound {case_mib})"
    if not kind:
        return None
    return Finding(t.name, kind, error, _cut(message), where, _cut(repr(value)))


def run_target(
    t: Target,
    cases: int,
    *,
    case_seconds: float = CASE_SECONDS,
    case_mib: float = CASE_MIB,
    on_case: Callable[[int], None] | None = None,
) -> TargetResult:
    """Feed `t` its explicit examples and then `cases` generated inputs; collect every finding.

    Inherits the loaded hypothesis profile (derandomized under HYPOTHESIS_PROFILE=ci)."""
    result = TargetResult(t.name, t.boundary, [e.__name__ for e in t.allowed])
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{t.name}-") as tmp:
        scratch = Path(tmp)
        t.prepare(scratch)

        def case(value: Any) -> None:
            c0 = time.perf_counter()
            found = judge_case(t, value, scratch, case_seconds, case_mib)
            result.slowest_ms = max(result.slowest_ms, (time.perf_counter() - c0) * 1000)
            result.cases += 1
            if found:
                result.findings.append(found)
            if on_case:
                on_case(result.cases)

        test: Any = given(t.inputs())(case)
        for value in reversed(t.examples):
            test = example(value)(test)
        test = settings(
            max_examples=cases,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )(test)
        t0 = time.perf_counter()
        test()
        result.seconds = time.perf_counter() - t0
    return result


def fuzz_steps(cases: int, names: Sequence[str] = TARGETS) -> list[Step]:
    """One progress step per target."""

    def step(name: str) -> Step:
        return name, lambda: run_target(target(name), cases)

    return [step(name) for name in names]


def fuzz_report(results: Sequence[TargetResult], cases: int) -> Report:
    rows = [
        (
            r.name,
            f"`{r.boundary}`",
            ", ".join(r.allowed),
            num(r.cases),
            num(len(r.findings)),
            f"{r.seconds:.1f}",
            num(round(r.cases / r.seconds) if r.seconds else 0),
            f"{r.slowest_ms:.0f}",
        )
        for r in results
    ]
    tables = table(
        "target | function under test | may raise | cases | findings | seconds | cases/s | slowest case (ms)",
        rows,
    )
    distinct = [f for r in results for f in r.distinct]
    if distinct:
        found = [
            (f.target, f.kind, f.error, f.where, f"`{f.message[:120]}`", f"`{f.input[:160]}`")
            for f in distinct
        ]
        tables += "\n\n" + table("target | kind | error | where | message | input", found)
    goals = [
        goal(f"{r.name}: no findings in {r.cases:,} cases", len(r.findings), 0, not r.findings)
        for r in results
    ]
    return Report(
        name="fuzz",
        result={
            "cases_per_target": cases,
            "findings": sum(len(r.findings) for r in results),
            "targets": [r.summary() for r in results],
        },
        goals=goals,
        tables=tables,
        plots=[],
        notes=[
            "A finding is an exception other than the target's named errors, a case past "
            f"{CASE_SECONDS:g} s, or a case that raised peak RSS by more than {CASE_MIB} MiB."
        ],
    )
