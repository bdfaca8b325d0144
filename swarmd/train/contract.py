"""The bundle contract: does a bundle read the data swarmd points it at?

swarmd sets six bundle variables: `datalist`, `dataset_dir`, `val_datalist`, `val_dataset_dir`,
`device` and `amp`, or the names `[bundle.inputs]` maps them to. A bundle that reads its data
through a variable of its own trains on whatever that names, while swarmd would report the size of
the site's datalist as the fedavg weight: a silently wrong merge. Two checks close that gap:

- by name: each data variable swarmd sets must be reached from the engine that uses it
  (`train#trainer` for the training inputs, `validate#evaluator` for the validation ones) through
  the config's references (`@id`, `%id`, `@id` inside `$` expressions), with swarmd's values set
  first, exactly as MonaiAlgo sets them. `device` and `amp` unread are only warnings;
- by count: the dataset the engine iterates must hold as many items as the datalist section.

BundleTrainer runs both when it builds an engine (so a daemon refuses to start), and
`swarm task check` (`train.check`) runs them with one training step and one evaluation.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmd.errors import TaskError
from swarmd.task import Task
from swarmd.train.data import Datalist

log = logging.getLogger("swarmd.train.contract")

TRAIN_ROOT = "train::trainer"  # the ids MonaiAlgo runs (its defaults; swarmd does not change them)
EVAL_ROOT = "validate::evaluator"
SEP = "::"
_DATA_NAME = re.compile(r"list|json|data|file|path|dir|root|folder", re.IGNORECASE)
_LIST_LIKE = re.compile(r"list|json", re.IGNORECASE)
_WHAT = {  # what swarmd sets each input to
    "datalist": "the site's training datalist",
    "dataset_dir": "the directory the datalist's relative paths start from",
    "val_datalist": "the datalist evaluated",
    "val_dataset_dir": "the directory the evaluated list's relative paths start from",
    "device": "the site's device",
    "amp": "mixed precision on CUDA",
}


class BundleMismatch(TaskError):
    """The bundle does not read (all of) the data swarmd gives it: it would train or evaluate on
    something else while swarmd reports the site's datalist."""


@dataclass(frozen=True)
class Findings:
    """What the name check found: problems refuse the bundle, warnings are reported."""

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    suggestion: tuple[str, ...] = ()  # `[bundle.inputs]` lines that would fix the problems


# --- what a config reaches ----------------------------------------------------------------------


def _norm(ident: str) -> str:
    return ident.replace("#", SEP)


def _leaves(ident: str, node: Any) -> Iterator[tuple[str, str]]:
    """(id, text) of every string in `node`, the config item at `ident`."""
    if isinstance(node, str):
        yield ident, node
    elif isinstance(node, dict | list):
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            yield from _leaves(f"{ident}{SEP}{key}" if ident else str(key), value)


def _refs(where: str, text: str) -> list[str]:
    """The ids a config string at `where` refers to, by MONAI's own rules."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    try:
        text = ConfigParser.resolve_relative_ids(where, text)
    except ValueError:  # a relative id above the root: MONAI refuses it when it parses
        return []
    if text.startswith("%"):  # a macro copies the raw content of an id (in this file, or another)
        path, ident = ConfigParser.split_path_id(text[1:])
        return [] if path else [ident]
    return list(ReferenceResolver.match_refs_pattern(text))


def reached(parser: Any, root: str) -> set[str]:
    """Every id the config item `root` refers to, directly or through other items."""
    seen: set[str] = set()
    todo = [_norm(root)]
    while todo:
        ident = todo.pop()
        if ident in seen:
            continue
        seen.add(ident)
        for where, text in _leaves(ident, parser.get(ident)):
            todo.extend(r for r in _refs(where, text) if r not in seen)
    return seen


def reads(seen: set[str], var: str) -> bool:
    """Whether a config reaching `seen` reads `var`: the id itself, an item inside it, or one around it."""
    var = _norm(var)
    return any(s == var or var.startswith(s + SEP) or s.startswith(var + SEP) for s in seen)


def _parser(task: Task, configs: Sequence[str], overrides: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """The bundle's configs with swarmd's values set, as MonaiAlgo builds them (and what failed to set)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config([str(task.bundle / c) for c in configs])
    except (OSError, ValueError) as exc:
        raise TaskError(f"bundle {task.bundle}: cannot read {', '.join(configs)}: {exc}") from None
    failed = []
    for var, value in overrides.items():
        try:
            parser[var] = value
        except (KeyError, ValueError, IndexError, TypeError):
            failed.append(var)
    return parser, failed


# --- the checks ---------------------------------------------------------------------------------


def _relative(path: Path) -> bool:
    """Whether a (validated) datalist names any file by a relative path."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # read_datalist reports it
    sections = doc.values() if isinstance(doc, dict) else []
    entries = [e for s in sections if isinstance(s, list) for e in s if isinstance(e, dict)]
    return any(
        isinstance(e.get(k), str) and not Path(e[k]).is_absolute()
        for e in entries
        for k in ("image", "label")
    )


def _candidates(parser: Any, seen: set[str], taken: set[str]) -> list[str]:
    """Top-level variables the engine reads that look like data inputs (named or valued like paths)."""
    out = []
    for ident in sorted(seen):
        value = parser.get(ident)
        if SEP in ident or ident in taken or ident == "bundle_root" or not isinstance(value, str):
            continue
        if _DATA_NAME.search(ident) or "/" in value or ".json" in value:
            out.append(ident)
    return out


def _suggest(name: str, parser: Any, found: list[str]) -> str | None:
    """The `[bundle.inputs]` line for an unread input, when one variable of the bundle fits it."""
    lists = [c for c in found if _LIST_LIKE.search(c) or ".json" in str(parser.get(c))]
    pick = lists if name.endswith("datalist") else [c for c in found if c not in lists]
    return f'{name} = "{pick[0]}"' if len(pick) == 1 else None


def check_names(task: Task, overrides: Mapping[str, Any], datalists: Sequence[Path]) -> Findings:
    """Whether the engines read every variable swarmd sets; `datalists`: the lists they will load."""
    relative = any(_relative(p) for p in datalists)
    taken = {_norm(v) for _, v in task.inputs.items()}
    problems: list[str] = []
    lines: list[str] = []
    warnings: list[str] = []
    any_seen: set[str] = set()
    for root, configs, names in (
        (TRAIN_ROOT, [task.train_config], ("datalist", "dataset_dir")),
        (EVAL_ROOT, [task.train_config, task.eval_config], ("val_datalist", "val_dataset_dir")),
    ):
        parser, failed = _parser(task, configs, overrides)
        unset = [f"`{v}` cannot be set: the bundle has no item to hold it" for v in failed]
        problems += [p for p in unset if p not in problems]  # the same in both engines' configs
        if parser.get(root) is None:
            if root == TRAIN_ROOT:
                problems.append(f"the bundle's {task.train_config} has no train#trainer")
            else:
                warnings.append("the bundle has no validate#evaluator: evaluation will fail")
            continue
        seen = reached(parser, root)
        any_seen |= seen
        engine = root.replace(SEP, "#")
        found = _candidates(parser, seen, taken)
        unread = [
            n
            for n in names
            if (relative or not n.endswith("dir"))  # absolute paths need no base directory
            and not reads(seen, getattr(task.inputs, n))
        ]
        for name in unread:
            problems.append(f"{engine} never reads `{getattr(task.inputs, name)}`, set to {_WHAT[name]}")
            line = _suggest(name, parser, found)
            lines += [line] if line and line not in lines else []
        if unread and found:
            problems.append(f"{engine} reads its data through {', '.join(found)}")
    for name in ("device", "amp"):
        var = getattr(task.inputs, name)
        if not reads(any_seen, var):
            warnings.append(f"the bundle never reads `{var}` ({_WHAT[name]}): it chooses its own")
    return Findings(tuple(problems), tuple(warnings), tuple(lines))


def dataset_size(engine: Any) -> int | None:
    """Items in the dataset an ignite engine iterates (None: not countable, e.g. an iterable dataset)."""
    dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def refuse(task: Task, found: Findings, more: Sequence[str] = (), cause: BaseException | None = None) -> None:
    """Raise BundleMismatch listing every problem (none: return)."""
    problems = [*found.problems, *more]
    if not problems:
        return
    if cause is not None:
        problems.append(f"and the bundle then failed: {cause}")
    text = f"bundle {task.bundle.name} does not read the data swarmd gives it:\n" + "".join(
        f"  - {p}\n" for p in problems
    )
    if found.suggestion:
        fix = "".join(f"  {line}\n" for line in found.suggestion)
        text += f"map swarmd's inputs onto the bundle's variables in swarm.toml:\n  [bundle.inputs]\n{fix}"
    else:
        text += "map swarmd's inputs onto the bundle's own variables in swarm.toml's [bundle.inputs]\n"
    text += (
        "('What swarmd needs from a bundle' in swarmd/train/bundles/README.md; check with `swarm task check`)"
    )
    raise BundleMismatch(text)


def check_count(task: Task, engine: Any, datalist: Datalist, found: Findings = Findings()) -> int:
    """The items the engine loads, which must be the datalist section's; BundleMismatch otherwise
    (with `found`'s problems). This count is the site's fedavg weight."""
    for warning in found.warnings:
        log.warning("bundle %s: %s", task.bundle.name, warning)
    want = len(datalist.items)
    have = dataset_size(engine)
    more = []
    if have is None:
        log.warning(
            "bundle %s: its %s dataset has no length; cannot count it", task.bundle.name, datalist.section
        )
    elif have != want and datalist.section == "training":
        more.append(
            f"the bundle loads {have} training items, but the site's datalist {datalist.path} has {want}: "
            f"the fedavg weight would be {want} for a model trained on {have}"
        )
    elif have != want:
        more.append(f"the bundle evaluates {have} items, but {datalist.path} has {want} 'validation' entries")
    refuse(task, found, more)
    return want if have is None else have
