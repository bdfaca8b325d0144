"""Contract views read lean: the `eth_call` built from selectors and types worked out once from the ABI,
sent straight to the provider, and the answer decoded into exactly what web3's contract call returns
(arrays as lists, structs as tuples, addresses checksummed). Transactions' calldata is built the same way.

web3's contract call spends about 5 ms of CPU a read before the request leaves: it validates the whole
ABI again (hashing every function's signature for its selector) and runs each request and response
through a dozen middlewares. A site reads the round after every block, so on a busy 2-core host those
reads were a sixth of a daemon's CPU. Only the happy path is taken here: an error answer, or one that
does not decode, is `NotTaken`, and the caller asks again through web3, which names it as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.codec import ABICodec
from eth_abi.exceptions import DecodingError, EncodingError
from eth_abi.grammar import ABIType, TupleType, parse
from eth_utils import to_checksum_address
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from web3.types import RPCEndpoint

Normalize = Callable[[Any], Any]
Request = tuple[RPCEndpoint, list[Any]]  # a JSON-RPC method and its params


class NotTaken(Exception):
    """An answer the lean path leaves to web3: an error, or bytes that are not the view's outputs."""


@functools.lru_cache(maxsize=4096)
def _checksummed(address: str) -> str:
    # A site reads the same few member addresses after every block: hash each once.
    return str(to_checksum_address(address))


def _normalizer(t: ABIType) -> Normalize | None:
    """What turns eth_abi's decoding of `t` into web3's; None where they are the same."""
    if t.is_array:
        item = _normalizer(t.item_type)
        return list if item is None else lambda v: [item(x) for x in v]
    if isinstance(t, TupleType):
        parts = [_normalizer(c) for c in t.components]
        if all(p is None for p in parts):
            return None
        return lambda v: tuple(x if p is None else p(x) for p, x in zip(parts, v, strict=True))
    return _checksummed if t.to_type_str() == "address" else None


@dataclass(frozen=True)
class _View:
    selector: bytes
    inputs: tuple[str, ...]
    output: str
    normalize: Normalize | None


def _block(block: str | int) -> str:
    return hex(block) if isinstance(block, int) else block


class Views:
    """The contract's view functions, by name: their requests and the decoding of their answers; and
    the calldata of any of its functions."""

    def __init__(self, abi: Iterable[Mapping[str, Any]], codec: ABICodec) -> None:
        self.codec = codec
        self._views: dict[str, _View] = {}
        self._functions: dict[str, tuple[bytes, tuple[str, ...]]] = {}
        functions: list[Any] = [dict(e) for e in abi if e.get("type") == "function"]
        names = [str(e["name"]) for e in functions]
        for fn in functions:
            name = str(fn["name"])
            if names.count(name) != 1:
                continue  # an overloaded name is left to web3, which picks by the arguments
            selector, inputs = function_abi_to_4byte_selector(fn), tuple(get_abi_input_types(fn))
            self._functions[name] = (selector, inputs)
            if fn.get("stateMutability") not in ("view", "pure"):
                continue
            if len(fn.get("outputs", ())) != 1:  # (SwarmLedger has none; web3 shapes those otherwise)
                continue
            (output,) = get_abi_output_types(fn)
            self._views[name] = _View(selector, inputs, output, _normalizer(parse(output)))

    def __contains__(self, name: str) -> bool:
        return name in self._views

    def calldata(self, name: str, args: Sequence[Any]) -> str | None:
        """The hex calldata calling `name` with `args`; None for a name or arguments this does not encode
        (web3 then encodes them, or names what is wrong with them)."""
        if name not in self._functions:
            return None
        selector, inputs = self._functions[name]
        try:
            return "0x" + (selector + self.codec.encode(list(inputs), list(args))).hex()
        except (EncodingError, TypeError, ValueError, OverflowError):
            return None

    def request(self, to: str, name: str, args: Sequence[Any], block: str | int) -> Request:
        view = self._views[name]
        data = view.selector + self.codec.encode(list(view.inputs), list(args))
        return RPCEndpoint("eth_call"), [{"to": to, "data": "0x" + data.hex()}, _block(block)]

    def answer(self, name: str, response: object) -> Any:
        """The view's return value from its JSON-RPC response, as web3 gives it; `NotTaken` for anything
        else (an error, a gateway's answer that is not a JSON-RPC response at all)."""
        view = self._views[name]
        if not isinstance(response, Mapping) or "error" in response:
            raise NotTaken(name)
        result = response.get("result")
        if not isinstance(result, str) or not result.startswith("0x"):
            raise NotTaken(name)
        try:
            raw = bytes.fromhex(result[2:])
            values = self.codec.decode([view.output], raw)
        except (ValueError, DecodingError) as exc:  # e.g. "0x": no contract there (web3 names it)
            raise NotTaken(name) from exc
        return values[0] if view.normalize is None else view.normalize(values[0])
