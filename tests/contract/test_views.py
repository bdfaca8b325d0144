"""Views read lean (`swarmd.ledger.views`: calldata from selectors worked out once, the answer decoded by
eth_abi) give exactly what web3's contract calls give, on a real anvil, in every state a round passes
through and at every kind of block; an error answer is still named as web3's path names it.
Transactions built lean are the very bytes web3 builds and signs, and a revert is still named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chainkit import Consortium, commit, deploy_consortium, elect, finalize, h32
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_abi_to_4byte_selector

from swarmd.ledger import Devnet, Ledger, errors
from swarmd.ledger.artifact import load_artifact

pytestmark = pytest.mark.chain


def every_view(c: Consortium, r: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Every view of the contract, with arguments that reach its interesting answers."""
    site, other = c.sites[0].sender, c.sites[1].sender
    outsider = c.outsiders[0].sender
    args: dict[str, list[tuple[Any, ...]]] = {
        "baseHash": [(r,)],
        "canElect": [(r,)],
        "canReelect": [(r,)],
        "canReveal": [(r,)],
        "disputesAgainst": [(site,)],
        "getMember": [(site,), (outsider,)],
        "getRound": [(r,)],
        "hasCommitted": [(r, site), (r, other)],
        "hasVoted": [(outsider, site, True)],
        "roundStatus": [(r,)],
    }
    views = [e for e in load_artifact().abi if e.get("type") == "function" and e["stateMutability"] == "view"]
    return [(e["name"], a) for e in views for a in args.get(e["name"], [()])]


def read_both(site: Ledger, name: str, args: tuple[Any, ...], block: str | int) -> tuple[str, str]:
    """repr of the lean read and of web3's (repr: a list is not a tuple, nor True 1, nor HexBytes bytes)."""
    out = []
    for lean in (True, False):
        site.lean = lean
        try:
            out.append(repr(site._call(name, *args, block=block)))
        except errors.ContractRevert as exc:
            out.append(f"{type(exc).__name__}{exc.args}")
        finally:
            site.lean = True
    return out[0], out[1]


def test_every_view_reads_as_web3_reads_it_through_a_round(
    devnet: Devnet, accounts: list[LocalAccount]
) -> None:
    c = deploy_consortium(devnet, accounts, sites=3)
    site = c.sites[0]

    def same_everywhere(r: int) -> int:
        checked = 0
        for block in ("latest", "pending", site.block_number()):
            for name, args in every_view(c, r):
                lean, web3 = read_both(site, name, args, block)
                assert lean == web3, (name, args, block)
                checked += 1
        return checked

    checked = same_everywhere(0)  # open, nothing committed
    for i, s in enumerate(c.sites):
        commit(s, 0, h32(f"u{i}"), 3 + i)
    checked += same_everywhere(0)  # every site committed: commits closed
    elect(c, 0)
    checked += same_everywhere(0)  # revealed and elected
    finalize(c, 0, h32("merged"))
    checked += same_everywhere(0) + same_everywhere(1)  # finalized, and the next round opened
    assert checked > 100


def test_a_revert_and_a_missing_contract_are_named_as_before(
    devnet: Devnet, accounts: list[LocalAccount]
) -> None:
    c = deploy_consortium(devnet, accounts, sites=2, outsiders=0)
    site = c.sites[0]
    with pytest.raises(errors.UnknownRound):
        site.round(9)
    with pytest.raises(errors.UnknownRound):  # one revert in a batch of reads
        site.election_view(9)
    nowhere = Ledger(devnet.rpc_url, accounts[-1].address, retries=0)  # an account: no code there
    with pytest.raises(errors.UnknownContract):
        nowhere.current_round()
    with pytest.raises(errors.UnknownContract):
        nowhere.election_view(0)


def built_both_ways(c: Consortium) -> list[str]:
    """Make every site build each transaction both ways and send web3's, after checking the lean one is
    the same transaction, signed to the same bytes; returns the selectors built lean."""
    lean_built: list[str] = []
    for site in [c.admin, *c.sites, *c.outsiders]:
        real = site._build_and_sign

        def both(fn: Callable[[], Any], data: str | None, real: Any = real) -> Any:
            web3 = real(fn, None)
            if data is not None:
                lean = real(fn, data)
                assert lean[1] == web3[1]
                assert bytes(lean[0].raw_transaction) == bytes(web3[0].raw_transaction)
                lean_built.append(data[:10])
            return web3

        site._build_and_sign = both  # type: ignore[method-assign]
    return lean_built


def test_every_transaction_of_a_round_is_built_lean_to_the_bytes_web3_signs(
    devnet: Devnet, accounts: list[LocalAccount]
) -> None:
    c = deploy_consortium(devnet, accounts, sites=3)
    lean_built = built_both_ways(c)
    c.outsiders[0].request_join(b"k" * 32, "tcp://10.0.0.9:7000", "site-x")
    c.sites[0].update_endpoint("tcp://10.0.0.1:7001")
    for i, s in enumerate(c.sites):
        commit(s, 0, h32(f"u{i}"), 3 + i)
    elect(c, 0)  # every site reveals, then one elects
    finalize(c, 0, h32("merged"))
    sent = ("requestJoin", "updateEndpoint", "commit", "reveal", "elect", "finalize")
    abi = {e["name"]: e for e in load_artifact().abi if e.get("type") == "function"}
    assert {"0x" + function_abi_to_4byte_selector(abi[name]).hex() for name in sent} <= set(lean_built)


def test_a_transaction_that_would_revert_is_named_and_an_argument_eth_abi_refuses_goes_to_web3(
    devnet: Devnet, accounts: list[LocalAccount]
) -> None:
    c = deploy_consortium(devnet, accounts, sites=2, outsiders=0)
    site = c.sites[0]
    commit(site, 0, h32("u"), 3)
    with pytest.raises(errors.AlreadyCommitted):  # the estimate's revert: web3's path names it
        commit(site, 0, h32("v"), 3)
    assert site.views.calldata("updateEndpoint", (7,)) is None  # not a string: web3 says what is wrong
    assert site.views.calldata("noSuchFunction", ()) is None
