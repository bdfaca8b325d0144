"""Attacks on a live secure-aggregation swarm by a member, against real daemons on a real chain with
1-second blocks. The attacker is a provisioned member driven from this test process with its own `Node`
and ledger client (as in test_member_attacks.py), speaking the transport's `secagg` messages built with
swarmd.privacy's wire types.

One swarm of two honest daemons and the attacker, round 0 attacked, round 1 honest:
- before its keys are on chain the attacker sends shares (unknown_site); after, a garbage blob, a share
  for another round, a share naming another sender, a tampered share, a message for a round that does
  not exist, an unmask request while it leads nothing, an oversize and a garbage frame: each is refused
  (PRIVACY_REFUSED, NOT_READY or dropped by the transport) and counted in swarmd_rejections_total;
- a stranger's `advertise` is reverted by the contract (NotActiveMember);
- the attacker commits a masked update it never sends and withholds its shares, so no honest leader can
  remove its masks: each honest term fails below the threshold until the draw falls on the attacker.
  As leader it asks an honest site for both shares of one peer (double_reveal), sends requests of an
  older term and naming another leader, gets its one honest request answered (and the same request
  again, byte for byte), and is refused a second, different one under the same term (term_conflict);
- the round is abandoned once every committer's term ran out; round 1 finalizes with the honest sites'
  FedAvg sum, and no daemon crashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path

import pytest
import torch
from eth_account import Account

from swarmd.bench.attack.member import _rejections as metrics_rejections
from swarmd.config import load_config
from swarmd.daemon.site import site_identity
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import PeerRejected
from swarmd.ledger import Ledger, RoundStatus
from swarmd.ledger import errors as reverts
from swarmd.ledger.receipt import election_seal
from swarmd.ops import wait_until
from swarmd.privacy import (
    Advertised,
    RevealRequest,
    RevealResponse,
    RoundSecrets,
    SecAggParams,
    graph_seed,
    make_shares,
    neighbourhood,
)
from swarmd.privacy.errors import BadResponse
from swarmd.privacy.wire import ShareMsg
from swarmd.task import PrivacySettings
from swarmd.transport import Node, Refusal, SecAggTopic, Verdict
from swarmd.transport.messages import MAX_SECAGG_BODY
from swarmd.transport.messages import PROTOCOL_VERSION as V

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from harness import RawPeer

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]

SECURE = {"secure_aggregation": True}


class _Attacker:
    """The attacker's handler: takes the honest sites' shares, refuses their updates, serves nothing."""

    def check_offer(self, peer, header) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, "not now")

    async def on_update(self, peer, header, state, digest) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, "not now")

    async def on_announce(self, peer, header) -> None:
        return None

    async def on_secagg(self, peer, header, body) -> bytes:
        return b"ok"

    def serve_model(self, model_hash):
        return None


def _rejections(site) -> dict[str, float]:
    """The site's `swarmd_rejections_total` by reason (the attack bench's scraper)."""
    return metrics_rejections(load_config(site.config).metrics.bind)


async def _refused(node: Node, peer: bytes, r: int, topic: SecAggTopic, body: bytes) -> str:
    """Send one secagg message that must be refused; the refusal's text (reason and detail)."""
    with pytest.raises(PeerRejected) as err:
        await node.secagg(peer, round=r, topic=topic, body=body, timeout=10)
    return str(err.value)


def _check_fedavg(swarm, r: int) -> None:
    """Round r's model is the sample-weighted mean of its included sites' plain updates (fixed point)."""
    info = swarm.ledger.round(r)
    sites = {s.address: s for s in swarm.consortium.sites}
    store = {a: ModelStore(sites[a].config.parent / "state" / "checkpoints") for a in sites}
    n = {c.site: c.n_samples for c in info.commits if c.site in info.included}
    plain = {a: store[a].get(Journal.read(sites[a].journal).rounds[r].plain_hash) for a in n}
    params = SecAggParams.from_settings(PrivacySettings(secure_aggregation=True))
    step = len(n) / (params.scale * sum(n.values()))
    merged = store[info.leader].get(info.merged_hash)
    for name, m in merged.items():
        if m.dtype.is_floating_point:
            want = sum(plain[a][name].double() * n[a] for a in n) / sum(n.values())
            assert torch.allclose(m.double(), want, atol=step + 1e-6, rtol=0), name


def test_a_member_s_secagg_attacks_are_refused_counted_and_cost_one_round(swarm_root, swarm_factory):
    t0 = time.monotonic()
    with swarm_factory(
        swarm_root, rounds=2, block_time=1, commit_window=6, leader_timeout=6, start=False, privacy=SECURE
    ) as swarm:
        honest, site = swarm.consortium.sites[:2], swarm.consortium.sites[2]
        for d in swarm.daemons[:2]:
            d.start()
        cfg = load_config(site.config)
        ident = site_identity(cfg)
        me = site.address.lower()
        ledger = Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account)
        members = {m.account: m for m in ledger.active_members()}
        keys = {s.address: members[s.address].curve_key for s in honest}
        d1, d2 = (s.address.lower() for s in honest)
        wait_until(lambda: len(ledger.advertised_keys(0)) == 2, 120, 0.1, "the honest sites' keys")
        secrets = RoundSecrets.new(0, site.address)
        params = SecAggParams.from_settings(PrivacySettings(secure_aggregation=True))

        def share_for(to: str, **change: object) -> bytes:
            """A share message for `to` as the attacker would make it, with fields changed."""
            rows = ledger.advertised_keys(0)
            advertised = [Advertised(a.site, a.mask_pk, a.enc_pk) for a in rows]
            graph = neighbourhood(advertised, graph_seed(0, ledger.round(0).base_hash), params.neighbours)
            msg = ShareMsg.from_bytes(make_shares(secrets, advertised, graph, params)[to], BadResponse)
            fields = {k: getattr(msg, k) for k in ("round", "sender", "recipient", "view", "nonce", "ct")}
            return ShareMsg(**(fields | change)).to_bytes()

        async def before_the_commits() -> dict[str, str]:
            out: dict[str, str] = {}
            async with Node(
                _Attacker(),
                bind="tcp://127.0.0.1:*",
                public_key=ident.curve.public,
                secret_key=ident.curve.secret,
                max_bytes=1 << 30,
            ) as node:
                node.set_peers({members[a].curve_key: members[a].endpoint for a in keys})
                peer = keys[honest[0].address]
                unsigned = ShareMsg(0, me, d1, bytes(32), bytes(12), bytes(64)).to_bytes()
                out["unknown_site"] = await _refused(node, peer, 0, SecAggTopic.SHARES, unsigned)
                await asyncio.to_thread(ledger.advertise_keys, 0, *secrets.public)
                out["malformed"] = await _refused(node, peer, 0, SecAggTopic.SHARES, b"\xc1garbage")
                out["round"] = await _refused(node, peer, 0, SecAggTopic.SHARES, share_for(d1, round=1))
                out["sender"] = await _refused(node, peer, 0, SecAggTopic.SHARES, share_for(d1, sender=d2))
                tampered = share_for(
                    d1, ct=bytes(b ^ 1 for b in ShareMsg.from_bytes(share_for(d1), BadResponse).ct)
                )
                out["tampered"] = await _refused(node, peer, 0, SecAggTopic.SHARES, tampered)
                out["unknown_round"] = await _refused(node, peer, 7, SecAggTopic.SHARES, share_for(d1))
                request = RevealRequest(0, 1, me, d1, tuple(sorted((d1, d2, me))), (), (d1,), (), ())
                out["not_leader"] = await _refused(node, peer, 0, SecAggTopic.UNMASK, request.to_bytes())
            return out

        before = asyncio.run(before_the_commits())
        print("refused before the commits:", before)
        assert all("privacy_refused" in v for k, v in before.items() if k != "unknown_round")
        assert "not_ready" in before["unknown_round"]

        # --- the transport's own limits: an oversize secagg frame and a garbage frame --------------------
        member = members[honest[0].address]
        raw = RawPeer(member.endpoint, member.curve_key_z85, (ident.curve.public, ident.curve.secret))
        try:
            big = b"\x01" * (MAX_SECAGG_BODY + 1024)
            raw.send({"v": V, "kind": "secagg", "req": 1, "round": 0, "topic": "shares", "body": big})
            raw.send(b"\x93\xc1\xff garbage")
            # counted before the socket goes: a close with linger 0 drops frames still queued behind a
            # CURVE handshake the daemon (training on a loaded box) has not yet answered
            wait_until(
                lambda: (c := _rejections(honest[0])).get("oversize", 0) + c.get("bad_header", 0) >= 2,
                60,
                0.2,
                "the oversize and garbage frames to be counted",
            )
        finally:
            raw.close()

        # --- a stranger cannot bind keys to the round --------------------------------------------------
        stranger = Ledger(cfg.chain.rpc_url, cfg.chain.contract, Account.from_key(swarm.devnet.dev_keys[-1]))
        with pytest.raises(reverts.NotActiveMember):
            stranger.advertise_keys(0, b"\x01" * 32, b"\x02" * 32)

        # --- commit last a masked update never sent, shares withheld: wait for our term -------------------
        wait_until(lambda: len(ledger.round(0).commits) == 2, 120, 0.2, "the honest commits")
        secret = b"\x5a" * 32
        seal = election_seal(secret, str(ledger.sender), 0)
        ledger.commit(0, hashlib.sha256(b"never sent").digest(), 16, key_count=3, seal=seal)
        wait_until(lambda: ledger.can_reveal(0), 60, 0.1, "the reveal window")
        ledger.reveal(0, secret)  # only a revealer can be drawn
        info = wait_until(
            lambda: (i := ledger.round(0)).status == RoundStatus.ELECTED and i.leader.lower() == me and i,
            120,
            0.1,
            "the draw to fall on the attacker",
        )
        t = info.term
        everyone = tuple(sorted((d1, d2, me)))

        async def as_leader() -> dict[str, object]:
            out: dict[str, object] = {}
            async with Node(
                _Attacker(),
                bind="tcp://127.0.0.1:*",
                public_key=ident.curve.public,
                secret_key=ident.curve.secret,
                max_bytes=1 << 30,
            ) as node:
                node.set_peers({members[a].curve_key: members[a].endpoint for a in keys})
                peer = keys[honest[0].address]

                def ask(
                    term: int, leader: str, survivors: tuple, dropped: tuple, b: tuple, c: tuple
                ) -> bytes:
                    return RevealRequest(0, term, leader, d1, survivors, dropped, b, c, ()).to_bytes()

                both = ask(t, me, everyone, (), (d2,), (d2,))
                out["double_reveal"] = await _refused(node, peer, 0, SecAggTopic.UNMASK, both)
                honest_ask = ask(t, me, everyone, (), everyone, ())
                out["term"] = await _refused(
                    node, peer, 0, SecAggTopic.UNMASK, ask(t - 1, me, everyone, (), everyone, ())
                )
                out["leader"] = await _refused(
                    node, peer, 0, SecAggTopic.UNMASK, ask(t, d2, everyone, (), everyone, ())
                )
                answer = await node.secagg(
                    peer, round=0, topic=SecAggTopic.UNMASK, body=honest_ask, timeout=10
                )
                again = await node.secagg(
                    peer, round=0, topic=SecAggTopic.UNMASK, body=honest_ask, timeout=10
                )
                out["answered"] = RevealResponse.from_bytes(answer, BadResponse)
                out["replay_answered_alike"] = again == answer
                other = ask(t, me, tuple(sorted((d1, me))), (d2,), tuple(sorted((d1, me))), (d2,))
                out["term_conflict"] = await _refused(node, peer, 0, SecAggTopic.UNMASK, other)
            return out

        led = asyncio.run(as_leader())
        print(f"as the leader of term {t}:", {k: v for k, v in led.items() if k != "answered"})
        for reason in ("double_reveal", "term", "leader", "term_conflict"):
            assert "privacy_refused" in led[reason] and reason in led[reason], reason
        answered = led["answered"]
        assert set(answered.b) == {d1, d2} and not answered.c and led["replay_answered_alike"]

        # --- the round is abandoned, the next one finalizes with the honest sum -------------------------
        closed = wait_until(
            lambda: (i := swarm.ledger.round(0)).status != RoundStatus.ELECTED and i,
            120,
            0.2,
            "round 0 to close",
        )
        assert closed.status == RoundStatus.ABANDONED and len(closed.failed_leaders) == 3
        final = wait_until(
            lambda: (i := swarm.ledger.round(1)).status == RoundStatus.FINALIZED and i, 180, 0.2, "round 1"
        )
        assert set(final.included) == {s.address for s in honest}
        _check_fedavg(swarm, 1)
        counted = {s.address: _rejections(s) for s in honest}
        print("rejections:", counted)
        at_d1 = counted[honest[0].address]
        for reason in (
            "unknown_site",
            "malformed",
            "round",
            "sender",
            "tampered",
            "unknown_round",
            "not_leader",
        ):
            assert at_d1.get(f"secagg_{reason}", 0) >= 1, reason
        for reason in ("double_reveal", "term", "leader", "term_conflict"):
            assert at_d1.get(f"secagg_{reason}", 0) >= 1, reason
        assert at_d1.get("oversize", 0) + at_d1.get("bad_header", 0) >= 2
        assert all(c.get("secagg_below_threshold", 0) >= 1 for c in counted.values())
        assert all(d.alive() for d in swarm.daemons[:2])
        print(
            f"attacked round abandoned after {len(closed.failed_leaders)} failed terms; "
            f"test took {time.monotonic() - t0:.1f}s"
        )
