"""Every boundary under a few hundred hypothesis inputs: nothing but its named errors may come out.

`swarm bench fuzz` runs the same targets at 10,000 cases each. Each target's `examples` (inputs
that once escaped its boundary: non-UTF-8 files, nesting past the parser's recursion, NUL bytes in
paths, TOML's inf as an integer, integers past 4300 digits, DICOM elements without a value or of
odd length, PNG and NIfTI headers that libraries reject with their own exception types) run first.
Derandomized under HYPOTHESIS_PROFILE=ci (tests/conftest.py), so a red run is reproducible.
"""

from __future__ import annotations

import pytest

from swarmd.bench.fuzz import run_target
from swarmd.bench.fuzz_targets import TARGETS, target

CASES = 300


@pytest.mark.parametrize("name", TARGETS)
def test_boundary_raises_only_its_named_errors(name: str) -> None:
    t = target(name)
    result = run_target(t, CASES)
    shown = "\n".join(
        f"{f.kind} {f.error} at {f.where}: {f.message[:200]}\n  input: {f.input[:300]}"
        for f in result.distinct
    )
    assert not result.findings, f"{name}: {len(result.findings)} finding(s) in {result.cases} cases:\n{shown}"
    assert result.cases >= len(t.examples) + CASES // 2  # the regressions ran, and generation did too
