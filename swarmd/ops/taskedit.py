"""A task file derived from another one: the same text, with a few settings changed.

`swarm devnet run --rounds 2` or `--secure-aggregation` runs the given task with other settings. The
derived swarm.toml is the source's own text (so tables swarmd adds later, like `[bundle.inputs]`, and
the author's comments survive), with the bundle path made absolute (the copy lives elsewhere), the
given `[swarm]` keys set and, when asked, the `[privacy]` table replaced. The result is parsed back
and compared with what was meant, so a source this line editor cannot handle fails loudly.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmd.errors import TaskError
from swarmd.fsutil import atomic_write_text
from swarmd.task import load_task, parse_task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")  # [table]; never [[array]]


def derived_task(
    src: Path,
    out: Path,
    *,
    swarm: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> Path:
    """Write `out`: `src` with an absolute bundle path, `swarm` keys set, [privacy] replaced by `privacy`."""
    task = load_task(src)  # a bad source fails here, as itself
    text = Path(src).read_text(encoding="utf-8")
    tables = _tables(text)
    _set(tables, "task", {"bundle": str(task.bundle)})
    if swarm:
        _set(tables, "swarm", swarm)
    if privacy is not None:
        tables = [t for t in tables if t[0] != "privacy" and not t[0].startswith("privacy.")]
        tables.append(("privacy", ["", "[privacy]", *(_line(k, v) for k, v in privacy.items())]))
    result = "\n".join(line for _, lines in tables for line in lines) + "\n"
    _check(src, text, result, swarm or {}, privacy, str(task.bundle))
    try:
        parse_task(tomllib.loads(result), out.parent)  # before writing: a refused task leaves no file
    except TaskError as exc:
        raise TaskError(f"{src} with the devnet's settings: {exc}", hint=exc.hint) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, result)


def _line(key: str, value: Any) -> str:
    return f"{key} = {json.dumps(value)}"


def _tables(text: str) -> list[tuple[str, list[str]]]:
    """The file's lines, cut at each [table] header; the lines before the first one are table ""."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            out.append((m.group(1), [line]))
        else:
            out[-1][1].append(line)
    return out


def _set(tables: list[tuple[str, list[str]]], name: str, values: Mapping[str, Any]) -> None:
    """Set `values` in table `name`: in place where a key is written, else after its last line."""
    found = [lines for t, lines in tables if t == name]
    if not found:
        tables.append((name, ["", f"[{name}]"]))
        found = [tables[-1][1]]
    lines = found[0]
    for key, value in values.items():
        at = next((i for i, ln in enumerate(lines) if re.match(rf"\s*{re.escape(key)}\s*=", ln)), None)
        if at is not None:
            lines[at] = _line(key, value)
            continue
        last = max((i for i, ln in enumerate(lines) if ln.strip()), default=len(lines) - 1)
        lines.insert(last + 1, _line(key, value))


def _check(
    src: Path,
    before: str,
    after: str,
    swarm: Mapping[str, Any],
    privacy: Mapping[str, Any] | None,
    bundle: str,
) -> None:
    """The derived text parses to the source document with exactly the intended changes."""
    want = tomllib.loads(before)
    want.setdefault("task", {})["bundle"] = bundle
    if swarm:
        want.setdefault("swarm", {}).update(swarm)
    if privacy is not None:
        want["privacy"] = dict(privacy)
    try:
        got = tomllib.loads(after)
    except tomllib.TOMLDecodeError as exc:
        got = {"error": str(exc)}
    if got != want:
        raise TaskError(
            f"cannot derive a task from {src}: its layout defeats the line editor",
            hint="write the settings into a copy of the task file by hand and pass that with --task",
        )
