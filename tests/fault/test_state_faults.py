"""Bad local state heals without a crash loop, with real daemons on a real chain: a site killed
mid-swarm comes back with every checkpoint flipped (its initial model and merged models), its
journal garbled and, where this test may mount one (root), its checkpoints on a full tmpfs. It
starts, reports each problem in its control snapshot and `swarm status`, quarantines the bad files,
rebuilds the initial model, waits for space, fetches the merged model again from a peer, resyncs its
round state from the chain and commits again within two rounds; it never exits meanwhile."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmd.checkpoint import QUARANTINE, SUFFIX
from swarmd.cli.swarm import app
from swarmd.ledger import RoundStatus
from swarmd.ops import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain, pytest.mark.long]


def _flip_every_checkpoint(ckpt_dir) -> list[str]:
    names = []
    for f in sorted(ckpt_dir.glob("0x*" + SUFFIX)):
        data = bytearray(f.read_bytes())
        data[-1] ^= 0xFF  # tensor bytes: the file still parses, and fails its hash
        f.write_bytes(bytes(data))
        names.append(f.name)
    return names


@contextlib.contextmanager
def _on_a_full_tmpfs(folder: Path) -> Iterator[Path | None]:
    """Move `folder`'s files onto a tmpfs mounted over it, filled to the last byte; yield the filler
    (None, with a warning, where no tmpfs can be mounted). Unmounted when the block ends."""
    files = [f.stat().st_size for f in folder.rglob("*") if f.is_file()]
    # Room, once the filler goes, for the models the site writes until the test ends.
    room = 8 * max(files, default=0) + (4 << 20)
    aside = folder.with_name(folder.name + ".aside")
    if os.geteuid() != 0:
        warnings.warn("not root: the disk-full part of this test is skipped", stacklevel=3)
        yield None
        return
    folder.rename(aside)
    folder.mkdir()
    size = f"size={sum(files) + room}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        folder.rmdir()
        aside.rename(folder)
        warnings.warn(f"cannot mount a tmpfs: {done.stderr!r}; disk-full part skipped", stacklevel=3)
        yield None
        return
    try:
        shutil.copytree(aside, folder, dirs_exist_ok=True)
        filler = folder / "filler"
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as fh:
            while True:
                fh.write(b"\0")
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_corrupt_checkpoints_and_journal_heal_without_the_daemon_exiting(swarm_root, swarm_factory):
    with (
        contextlib.ExitStack() as unmount,
        swarm_factory(
            swarm_root, sites=3, rounds=3, block_time=1, commit_window=4, leader_timeout=8
        ) as swarm,
    ):
        victim, *others = swarm.daemons
        site = next(s for s in swarm.consortium.sites if s.name == victim.name)
        state_dir = site.journal.parent
        # Round 0's model at every site, not only the victim: when the victim led round 0, its copy
        # may be the only one until the peers pull it, and corrupting that would lose the model.
        wait_until(
            lambda: (
                swarm.ledger.round(0).status == RoundStatus.FINALIZED
                and all((st := d.status()) and st["last_merged_round"] >= 0 for d in swarm.daemons)
            ),
            120,
            interval=0.2,
            what="round 0 merged at every site",
        )
        merged0 = "0x" + swarm.ledger.round(0).merged_hash.hex()
        initial = "0x" + swarm.ledger.binding().initial_model_hash.hex()
        # Freeze the peers so that the swarm waits at round 1, whose base is the model flipped below:
        # the victim must read its bad copy, and can fetch a good one only once they thaw.
        for d in others:
            d.proc.send_signal(signal.SIGSTOP)
        try:
            victim.kill()
            flipped = _flip_every_checkpoint(state_dir / "checkpoints")
            assert {merged0 + SUFFIX, initial + SUFFIX} <= set(flipped)
            site.journal.write_text('{"v": 1, "rounds": {"0": {"round": "not a number"')
            filler = unmount.enter_context(_on_a_full_tmpfs(state_dir / "checkpoints"))
            victim.start()
            if filler is not None:  # no space for the rebuilt initial model: reported, kept in memory
                wait_until(
                    lambda: "disk_full" in _kinds(_alive_status(victim)), 90, interval=0.2, what="disk full"
                )
                filler.unlink()  # space returns
            st = wait_until(
                lambda: _reporting(victim, merged0),
                90,
                interval=0.2,
                what="the victim to report its bad state",
            )
            rejoin = swarm.ledger.current_round()
            # `swarm status` shows the same problems to the operator
            shown = CliRunner().invoke(
                app, ["status", "--config", str(victim.config)], env={"COLUMNS": "250"}
            )
            assert shown.exit_code == 0, shown.output
            # The table may wrap a long problem over several lines: read it as the words it shows.
            words = " ".join(shown.output.replace("│", " ").split())
            assert "corrupt_checkpoint" in words and "fetching it again from a peer" in words, shown.output
            # the initial model was quarantined and rebuilt from the task before the first round
            assert any(p["kind"] == "corrupt_checkpoint" and initial in p["detail"] for p in st["repaired"])
        finally:
            for d in others:
                d.proc.send_signal(signal.SIGCONT)
        # back in the swarm: it commits within two rounds and every problem clears
        committed = wait_until(
            lambda: _committed_since(swarm, victim, site.address, rejoin), 120, interval=0.5, what="a commit"
        )
        assert rejoin <= committed <= rejoin + 1
        final = wait_until(
            lambda: (s := _alive_status(victim)) is not None and not s["problems"] and s,
            120,
            interval=0.5,
            what="every problem to clear",
        )
        repaired = {p["kind"] for p in final["repaired"]}
        assert {"corrupt_checkpoint", "corrupt_journal"} <= repaired
        assert filler is None or "disk_full" in repaired
        moved = sorted(p.name for p in (state_dir / "checkpoints" / QUARANTINE).iterdir())
        assert any(n.startswith(merged0) for n in moved) and any(n.startswith(initial) for n in moved)
        assert len(list((state_dir / QUARANTINE).iterdir())) == 1  # the journal, kept for inspection
        assert victim.alive(), victim.tail(40)


def _alive_status(d) -> dict | None:
    """The daemon's status; fails the test at once if the daemon exited (a crash loop's first step)."""
    assert d.alive(), f"daemon {d.name} exited:\n{d.tail(60)}"
    return d.status()


def _kinds(st: dict | None) -> set[str]:
    return {p["kind"] for p in st["problems"]} if st else set()


def _reporting(d, merged: str) -> dict | None:
    """The status once it lists both a bad merged model (`merged`) and a bad journal."""
    st = _alive_status(d)
    if st is None or {"corrupt_checkpoint", "corrupt_journal"} - {p["kind"] for p in st["problems"]}:
        return None
    return st if any(merged in p["detail"] for p in st["problems"]) else None


def _committed_since(swarm, d, address: str, rejoin: int) -> int | None:
    """The first round from `rejoin` on that `address` committed in; -1 once two rounds passed without."""
    _alive_status(d)
    now = swarm.ledger.current_round()
    for r in range(rejoin, min(now, rejoin + 1) + 1):
        if any(c.site == address for c in swarm.ledger.round(r).commits):
            return r
    return -1 if now > rejoin + 1 else None
