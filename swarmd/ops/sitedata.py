"""What a local devnet's sites train on, as the operator names it: `--data SITE=DATALIST` per site
and an optional held-out `--test-data` (checked here, before anything is deployed), or a kind of
generated demo data, which must fit the task's bundle."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from swarmd.errors import DataError, UsageError
from swarmd.ops.local import DemoData, OwnData

SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
MAX_LISTED = 5
# What generated demo data is, for the bundles that can take it: (spatial dims, label kind).
DEMO_KINDS = {"classification": (2, "target"), "segmentation": (3, "mask"), "signal": (1, "target")}
# `--task NAME`: the example task shipped for each kind of generated data.
EXAMPLE_TASKS = {"classification": "cxr_densenet", "segmentation": "tumor_unet", "signal": "ecg_densenet"}


def parse_data_specs(specs: Sequence[str]) -> dict[str, Path]:
    """`SITE=DATALIST` strings -> {site: absolute datalist path}, in the order given."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path.strip():
            raise UsageError(
                f"--data {spec!r} is not SITE=DATALIST",
                hint="e.g. --data st-marys=/data/st-marys/datalist.json",
            )
        if not SITE_NAME.fullmatch(name):
            raise UsageError(
                f"--data {spec!r}: site name {name!r} is not usable",
                hint="letters, digits, '.', '_' and '-', at most 40, starting with a letter or digit",
            )
        if name in out:
            raise UsageError(f"--data names site {name!r} twice", hint="one --data per site")
        out[name] = Path(path.strip()).expanduser().resolve()
    return out


def own_data(specs: Sequence[str], test: Path | None = None) -> OwnData:
    """Each site's datalist and the test datalist, every one checked: DataError names the bad one."""
    datalists = parse_data_specs(specs)
    if not datalists:
        raise UsageError("no --data SITE=DATALIST given")
    for name, path in datalists.items():
        check_datalist(path, "training", f"--data {name}")
        if test is None:
            check_datalist(
                path,
                "validation",
                f"--data {name}",
                hint="without --test-data a site scores the merged models on its list's 'validation' "
                "section: add one, or pass --test-data DATALIST",
            )
    if test is not None:
        test = test.expanduser().resolve()
        check_datalist(test, "validation", "--test-data")
    return OwnData(datalists, test)


def check_datalist(path: Path, section: str, what: str, *, hint: str | None = None) -> int:
    """`section` of the datalist at `path` is a non-empty list of entries whose files exist and are
    readable; DataError starting with `what` otherwise. Decoding the files is the bundle's business
    (the daemon checks that at its start). Returns the number of entries."""
    from swarmd.train import read_datalist

    try:
        items = read_datalist(path, section).items
    except DataError as exc:
        raise DataError(f"{what}: {exc.args[0]}", hint=hint or exc.hint) from None
    problems = []
    for i, item in enumerate(items):
        for key in ("image", "label"):
            value = item.get(key)
            if isinstance(value, str) and not (os.path.isfile(value) and os.access(value, os.R_OK)):
                problems.append(f"{section}[{i}].{key}: {value} is not a readable file")
    if problems:
        more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(
            f"{what}: datalist {path}: {len(problems)} missing file(s): "
            + "; ".join(problems[:MAX_LISTED])
            + more,
            hint="paths in a datalist are relative to the datalist's own folder",
        )
    return len(items)


def check_demo_fits(task_path: Path, kind: str) -> None:
    """UsageError unless generated `kind` data (1-channel images) is what the task's bundle takes."""
    from swarmd.task import load_task
    from swarmd.train.bundle import read_bundle_info

    if kind not in DEMO_KINDS:
        raise UsageError(f"--data-kind must be one of {', '.join(DEMO_KINDS)}, got {kind!r}")
    info = read_bundle_info(load_task(task_path).bundle)
    dims, labels = DEMO_KINDS[kind]
    takes = (info.input.channels, info.input.spatial_dims, info.label_kind.value)
    if takes == (1, dims, labels):
        return
    fits = [k for k, (d, lab) in DEMO_KINDS.items() if (1, d, lab) == takes]
    raise UsageError(
        f"the bundle {info.name} takes {takes[0]}-channel {takes[1]}-D inputs with {takes[2]} labels; "
        f"generated {kind} data is 1-channel {dims}-D with {labels} labels",
        hint="pass --data SITE=DATALIST for each site" + "".join(f", or --data-kind {k}" for k in fits),
    )


def devnet_data(
    task: str | None,
    *,
    data: Sequence[str] = (),
    test_data: Path | None = None,
    data_kind: str | None = None,
    sites: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    n_per_site: int | None = None,
    n_test: int | None = None,
) -> tuple[Path, DemoData | OwnData]:
    """The task file and the data of a new local devnet, from `swarm devnet up | run`'s options.

    `task`: an example task's name (classification, segmentation: its generated data kind comes with
    it), a swarm.toml, or None (classification). `data`: SITE=DATALIST strings, one site each; without
    them, `sites` sites get generated `data_kind` data, which the bundle must be able to take."""
    from swarmd.train import example_task_file
    from swarmd.train.demodata import DEFAULT_SIZES

    named = task in EXAMPLE_TASKS or task is None
    if named and data_kind is not None and data_kind != (task or "classification"):
        raise UsageError(f"--data-kind {data_kind} does not fit the example task {task or 'classification'}")
    path = example_task_file(EXAMPLE_TASKS[task or "classification"]) if named else Path(str(task))
    if not named and not path.is_file():
        raise UsageError(
            f"--task {task}: no such file", hint=f"a swarm.toml, or one of {', '.join(EXAMPLE_TASKS)}"
        )
    if data:
        own = own_data(data, test_data)
        if sites is not None and sites != own.sites:
            raise UsageError(f"--sites {sites} but {own.sites} --data lists", hint="--data gives the sites")
        return path, own
    if test_data is not None:
        raise UsageError("--test-data goes with --data SITE=DATALIST", hint="generated data has its test set")
    kind = task if named and task is not None else (data_kind or "classification")
    check_demo_fits(path, kind)
    # The demo's classification sizes are DemoData's own; segmentation volumes are fewer (slower steps).
    per_site, test = (
        (DemoData.n_per_site, DemoData.n_test) if kind == "classification" else DEFAULT_SIZES[kind]
    )
    return path, DemoData(alpha, seed, n_per_site or per_site, n_test or test, task=kind)
