"""`swarm demo-data`: synthetic non-IID multi-site data (real PNG / NIfTI files plus datalists)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.errors import StoreError

if TYPE_CHECKING:
    from swarmd.train.demodata import DemoData


def _count(n: int, total: int) -> str:
    return f"{n:4d} " + "█" * round(8 * n / max(1, total))


def _scanner(demo: DemoData, i: int) -> str:
    sc = demo.sites[i].scanner
    return f"x{sc.gain:.2f} {sc.offset:+.2f} ^{sc.gamma:.2f} ~{sc.noise:.3f} 1/{sc.downsample}"


def _summary(demo: DemoData) -> Table:
    """One row per site: the label histogram and the raw intensity statistics, side by side."""
    table = Table(title=f"{demo.task} demo data: Dirichlet alpha={demo.alpha}, seed={demo.seed}")
    table.add_column("site")
    table.add_column("train/val", justify="right")
    for name in demo.class_names:
        table.add_column(name)
    table.add_column("intensity", justify="right")
    table.add_column("scanner: xgain offset ^gamma ~noise res")
    for i, s in enumerate(demo.sites):
        total = sum(s.class_counts)
        table.add_row(
            s.name,
            f"{s.n_train}/{s.n_val}",
            *(_count(n, total) for n in s.class_counts),
            f"{s.intensity_mean:.3g} ± {s.intensity_sd:.3g}",
            _scanner(demo, i),
        )
    total = sum(demo.test_counts)
    table.add_row(
        "test", f"0/{total}", *(_count(n, total) for n in demo.test_counts), "", "every site's, in turn"
    )
    return table


def demo_data(
    sites: int = typer.Option(3, "--sites", min=1, help="Number of sites."),
    task: str = typer.Option(
        "classification", "--task", help="classification (PNG), segmentation (NIfTI) or signal (1-D .npy)."
    ),
    alpha: float = typer.Option(
        0.5, "--non-iid", help="Dirichlet alpha of the label skew: 0.1 skewed, 100 IID."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed; the same seed writes the same files."),
    out: Path = typer.Option(Path("demo-data"), "--out", help="Output directory."),
    n_per_site: int = typer.Option(0, "--per-site", min=0, help="Images per site (0: a default per task)."),
    n_test: int = typer.Option(0, "--test", min=0, help="Images in the shared test set (0: a default)."),
    png_preview: bool = typer.Option(
        False, "--png-preview", help="Also write preview.png with examples per site."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write non-IID synthetic sites: images, one Decathlon datalist per site, a held-out test set."""
    from swarmd.train.demodata import DEFAULT_SIZES, generate_demo_data, preview_images

    with cli_errors():
        per_site, test = DEFAULT_SIZES.get(task, (60, 80))
        try:
            demo = generate_demo_data(
                out,
                sites=sites,
                task=task,
                alpha=alpha,
                seed=seed,
                n_per_site=n_per_site or per_site,
                n_test=n_test or test,
            )
        except OSError as exc:  # the output folder: not creatable, not writable, disk full
            raise StoreError(f"cannot write demo data under {out}: {exc.strerror or exc}") from None
        preview = preview_images(demo, out / "preview.png") if png_preview else None
    if json_out:
        print_json({**asdict(demo), "preview": preview})
        return
    console.print(_summary(demo))
    console.print(f"site datalists: {out}/site-N/datalist.json   held-out test: {demo.test_datalist}")
    if preview is not None:
        console.print(f"preview: {preview}")


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
