"""`swarm bench transport`: codec and transfer throughput as ratios, and the receiver's memory.

For each payload (7M, 30M, 100M float32 parameters) it measures, in one run:
- codec: encode + decode throughput / memcpy of the same bytes (zero-copy views, and the one-copy
  path for read-only buffers), and the content-hash throughput;
- transfer: a full `Node.send_update` (CURVE control channel, AES-256-GCM sealed bulk chunks,
  incremental hash, decode) and the same with CURVE on the bulk data too, each divided by plain
  ZeroMQ (no security, no hash) on the same loopback with the same chunking; and the CPU seconds
  sender and receiver spent per GB moved, which a busy machine does not change as much as GB/s;
- receiver memory: the receiving process's peak RSS growth / payload size.

The receiver of every transfer is a separate process (multiprocessing spawn), so sender and receiver
do not share a GIL. Nothing here is a timed test: it reports what it measures.
`swarmd.bench.transport_report` judges the goals and renders the tables and the throughput plot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import torch
import zmq
import zmq.asyncio

from swarmd import codec
from swarmd.bench.relay import run_relay_bench, run_relay_link_bench
from swarmd.bench.report import Step
from swarmd.ops.netns import format_rate
from swarmd.transport import Limits, Node, Refusal, Verdict
from swarmd.transport.node import BulkMode
from swarmd.transport.stream import iter_chunks, payload_buffer

SIZES = (7_000_000, 30_000_000, 100_000_000)
RELAY_LINKS = (100 * 10**6, 10**9)  # issue 15's hospital links, for the relayed transfer of issue 18
MODES = ("plain", "plain_work", "aead", "curve")
LAYER = 1 << 20  # parameters per tensor: a CNN's big layers are ~0.1-2.4M parameters


def _state(n_params: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for i, start in enumerate(range(0, n_params, LAYER)):
        n = min(LAYER, n_params - start)
        state[f"layer{i:05d}.weight"] = torch.empty(n).uniform_(-1, 1, generator=g)
    return state


def _best(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _bench_codec(state: dict[str, torch.Tensor], reps: int) -> dict[str, float]:
    manifest, _ = codec.encode(state)
    nbytes = manifest.total_nbytes
    src = torch.empty(nbytes, dtype=torch.uint8).random_()
    dst = torch.empty(nbytes, dtype=torch.uint8)

    def memcpy(into: torch.Tensor) -> None:
        # libc's memcpy, one thread like the codec's copy; torch's copy_ splits a big copy across
        # its intra-op threads, which made an earlier baseline up to 2x faster than any memcpy.
        ctypes.memmove(into.data_ptr(), src.data_ptr(), nbytes)

    memcpy(dst)  # touch the pages once, so the warm memcpy is measured warm

    def zero_copy() -> None:
        m, f = codec.encode(state)
        codec.decode(m, f)

    def one_copy() -> None:
        m, f = codec.encode(state)
        codec.decode(m, [v.toreadonly() for v in f])

    # Two baselines: into warm memory (the floor for views), and into a fresh buffer, which is what
    # the one-copy path must do: on these VMs first-touch page faults cost more than the copy itself.
    warm = nbytes / _best(lambda: memcpy(dst), reps)
    fresh = nbytes / _best(lambda: memcpy(torch.empty(nbytes, dtype=torch.uint8)), reps)
    out = {
        "memcpy_warm_gbps": warm / 1e9,
        "memcpy_fresh_gbps": fresh / 1e9,
        "zero_copy_ratio": nbytes / _best(zero_copy, reps) / warm,
        "one_copy_ratio": nbytes / _best(one_copy, reps) / fresh,
        "hash_gbps": nbytes / _best(lambda: codec.content_hash(state), reps) / 1e9,
    }
    return {k: round(v, 3) for k, v in out.items()}


# --- the receiving process --------------------------------------------------------------------------
class _Discard:
    def check_offer(self, peer: bytes, header: Any) -> Verdict:
        return Verdict(True)

    async def on_update(
        self, peer: bytes, header: Any, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        return Verdict(True)

    async def on_secagg(self, peer: bytes, header: Any, body: bytes) -> Verdict:
        return Verdict(False, Refusal.PRIVACY_REFUSED)

    async def on_announce(self, peer: bytes, header: Any) -> None:
        return None

    def serve_model(self, model_hash: bytes) -> None:
        return None


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _peak_rss() -> int:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a spawned child would inherit the parent's peak.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def _plain_receiver(conn: Connection, total: int, count: int, work: bool) -> None:
    """Plain ZeroMQ, no security. With `work`, it also does what any receiver must: copy each chunk
    into a fresh payload buffer (as the transport allocates it) and hash it (the content hash) on a
    worker thread, so the ratio isolates the crypto."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.maxmsgsize = 64 << 20
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    conn.send({"endpoint": f"tcp://127.0.0.1:{port}", "baseline": _rss_now()})
    pool = ThreadPoolExecutor(max_workers=1)
    payload_manifest = codec.Manifest((codec.TensorSpec("payload", "uint8", (total,), total),))
    for _ in range(count):
        got, hasher = 0, codec.ContentHasher(payload_manifest)
        # the payload buffer the transport itself uses (huge pages), so "/ plain+work" isolates the crypto
        buf = payload_buffer(total).numpy().data.cast("B") if work else None
        last: Any = None
        while got < total:
            frames = await sock.recv_multipart(copy=False)
            for f in frames[2:]:  # [routing id, b"chunk", *pieces]
                n = len(f)
                if buf is not None:
                    buf[got : got + n] = memoryview(f.buffer).cast("B")
                    last = pool.submit(hasher.update, buf[got : got + n])
                got += n
        if last is not None:
            await asyncio.wrap_future(last)
        await sock.send_multipart([frames[0].bytes, b"done"])
    conn.send({"peak": _peak_rss()})
    pool.shutdown()
    ctx.destroy(linger=0)


async def _node_receiver(conn: Connection, mode: BulkMode, total: int) -> None:
    pub, sec = zmq.curve_keypair()
    node = Node(
        _Discard(), bind="tcp://127.0.0.1:*", public_key=pub, secret_key=sec, max_bytes=total, bulk=mode
    )
    await node.start()
    conn.send({"endpoint": node.endpoint, "key": node.peer_id, "baseline": _rss_now()})
    loop = asyncio.get_running_loop()
    sender_key = await loop.run_in_executor(None, conn.recv)
    node.set_peers({sender_key: "tcp://127.0.0.1:1", node.peer_id: node.endpoint})
    conn.send("members")  # the sender's handshake is refused until its key is a member here
    await loop.run_in_executor(None, conn.recv)  # "stop"
    conn.send({"peak": _peak_rss(), "rejections": dict(node.stats.rejections)})
    await node.close()


def _fix_mmap_threshold() -> None:
    """Serve payload-sized blocks from mmap so they go back to the OS when freed (M_MMAP_THRESHOLD).

    glibc raises its threshold after each large free, so the next payload buffer lands in the heap and
    the freed ones stay resident: peak RSS then measures the allocator, not the transport. 16 MiB keeps
    the 4 MiB chunk messages in the (warm) heap and puts payload buffers in mmap.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD = -3


def _receiver_main(conn: Connection, mode: str, total: int, count: int) -> None:
    _fix_mmap_threshold()
    torch.set_num_threads(1)
    if mode == "aead" or mode == "curve":
        asyncio.run(_node_receiver(conn, "aead" if mode == "aead" else "curve", total))
    else:
        asyncio.run(_plain_receiver(conn, total, count, work=mode == "plain_work"))


# --- the sending side ---------------------------------------------------------------------------------
def _send_plain(endpoint: str, frames: list[memoryview], total: int, reps: int) -> float:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.rcvtimeo = 120_000  # a crashed receiver ends the bench with an error, not a hang
    sock.connect(endpoint)
    chunk = Limits().chunk_size

    def once() -> None:
        for pieces in iter_chunks(frames, chunk):
            sock.send_multipart([b"chunk", *pieces], copy=False)
        sock.recv()

    once()  # warm-up: connection, page faults at the receiver
    best = _best(once, reps)
    ctx.destroy(linger=0)
    return total / best


async def _send_node(
    info: dict[str, Any], conn: Connection, mode: BulkMode, payload: Any, reps: int
) -> float:
    pub, sec = zmq.curve_keypair()
    node = Node(_Discard(), bind="tcp://127.0.0.1:*", public_key=pub, secret_key=sec, max_bytes=1, bulk=mode)
    await node.start()
    try:
        node.set_peers({info["key"]: info["endpoint"]})
        conn.send(node.peer_id)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, conn.poll, 120) or conn.recv() != "members":
            raise RuntimeError("bench receiver did not admit the sender")
        digest = codec.hash_frames(*payload)
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            verdict = await node.send_update(
                info["key"], round=i, term=0, payload=payload, digest=digest, timeout=120
            )
            if not verdict.ok:
                raise RuntimeError(f"bench transfer refused: {verdict}")
            times.append(time.perf_counter() - t0)
        return payload[0].total_nbytes / min(times[1:])
    finally:
        await node.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench_transfer(
    mode: str, payload: tuple[codec.Manifest, list[memoryview]], reps: int
) -> dict[str, float]:
    total = payload[0].total_nbytes
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(child, mode, total, reps + 1), daemon=True)
    proc.start()

    def recv() -> Any:
        if not parent.poll(120):
            raise RuntimeError(f"bench receiver ({mode}) did not answer; exit code {proc.exitcode}")
        return parent.recv()

    try:
        info = recv()
        cpu0 = time.process_time() + _cpu_seconds(proc.pid or 0)
        if mode == "aead" or mode == "curve":
            bulk: BulkMode = "aead" if mode == "aead" else "curve"
            rate = asyncio.run(_send_node(info, parent, bulk, payload, reps))
        else:
            rate = _send_plain(info["endpoint"], payload[1], total, reps)
        cpu = time.process_time() + _cpu_seconds(proc.pid or 0) - cpu0  # warm-up and reps: reps + 1
        parent.send("stop")
        end = recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return {
        "gbps": round(rate / 1e9, 3),
        "cpu_s_per_gb": round(cpu / ((reps + 1) * total / 1e9), 2),
        "rss_growth_ratio": round((end["peak"] - info["baseline"]) / total, 2),
    }


def plain_zmq_gbps(n_params: int, reps: int) -> float:
    """Plain ZeroMQ loopback throughput (GB/s) for a payload of `n_params` float32 parameters."""
    return float(_bench_transfer("plain", codec.encode(_state(n_params)), reps)["gbps"])


def run_transport_bench(sizes: tuple[int, ...] = SIZES, quick: bool = False) -> dict[str, Any]:
    """Measure codec and transfer ratios for each payload size; see the module docstring."""
    if quick:
        sizes = sizes[:1]
    _fix_mmap_threshold()  # payload-sized buffers are fresh memory every time, as at a real receiver
    reps = 2 if quick else 3
    rows = []
    for n_params in sizes:
        state = _state(n_params)
        payload = codec.encode(state)
        row: dict[str, Any] = {"params": n_params, "mb": round(payload[0].total_nbytes / 1e6, 1)}
        row["codec"] = _bench_codec(state, reps)
        # best of enough transfers to move ~0.4 GB: one 28 MB transfer is too short to time on a busy box
        n = max(reps, min(15, int(4e8 // payload[0].total_nbytes)))
        transfer = {mode: _bench_transfer(mode, payload, n) for mode in MODES}
        plain = transfer["plain"]["gbps"]
        row["transfer"] = transfer
        row["aead_vs_plain"] = round(transfer["aead"]["gbps"] / plain, 3)
        row["curve_vs_plain"] = round(transfer["curve"]["gbps"] / plain, 3)
        row["aead_vs_plain_work"] = round(transfer["aead"]["gbps"] / transfer["plain_work"]["gbps"], 3)
        row["aead_vs_curve"] = round(transfer["aead"]["gbps"] / transfer["curve"]["gbps"], 2)
        rows.append(row)
        del state, payload
    return result_of(rows)


def result_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The result of one run from its per-size rows."""
    return {
        "rows": rows,
        "chunk_mib": Limits().chunk_size >> 20,
        "median_aead_vs_plain": statistics.median(r["aead_vs_plain"] for r in rows),
    }


def transport_steps(quick: bool = False, relay_links: tuple[int, ...] = RELAY_LINKS) -> list[Step]:
    """One step per payload size (the smallest only when `quick`), then the relayed transfer (issue 18)
    on 127.0.0.1 and, unless `quick`, over each of `relay_links` (bit/s) between network namespaces;
    `transport_report.join_sizes` puts them together."""
    sizes = SIZES[:1] if quick else SIZES
    steps: list[Step] = [
        (f"{n / 1e6:.0f}M parameters", partial(run_transport_bench, (n,), quick)) for n in sizes
    ]
    steps.append(("relayed transfer (libp2p)", lambda: {"relay": run_relay_bench(reps=1 if quick else 2)}))
    for rate in () if quick else relay_links:
        label = f"relayed transfer over {format_rate(rate)} links"
        steps.append((label, partial(lambda r: {"relay_link": run_relay_link_bench(r)}, rate)))
    return steps


if __name__ == "__main__":  # python -m swarmd.bench.transport [--quick]
    import json
    import sys

    res = run_transport_bench(quick="--quick" in sys.argv)
    print(json.dumps(res, indent=1))
    from swarmd.bench.transport_report import format_table

    print(format_table(res))
