"""Hypothesis strategies the fuzz targets share: near-valid documents and near-valid bytes.

A target starts from one valid document (a JSON-like tree) and its serialized bytes. `mutated()`
applies one to three edits to the tree at random places (a field dropped, retyped, made huge or
negative, given odd unicode, nested, an unknown key added, a list entry repeated); `bytes_mutated()`
edits the bytes (truncated, flipped, spliced, deeply nested prefix); `document_inputs()` mixes both
with plain random bytes. The serializers here write what a careless or hostile author could: lone
surrogates, NaN, integers past 64 bits are kept where the format can carry them.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from hypothesis import strategies as st

Doc = Any  # a JSON-like tree: dict, list, str, bytes, int, float, bool, None
Slot = tuple[Any, Any]  # (container, key or index) naming one place in a tree

ODD_TEXT = (
    "",
    "\x00",
    "a\x00b",
    "..",
    "/",
    "~",
    "\u202e",
    "é",
    "\U0001d54f",
    "\ud800",
    " ",
    "\n",
    "0x",
    "NaN",
)
HUGE_INTS = (2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63), -(2**64))
ODD_FLOATS = (math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324)
MAX_NEST = 40  # structured nesting; deeper nesting goes in as bytes (serializers recurse)


# --- values ---------------------------------------------------------------------------------------
@functools.cache  # a strategy built once: hypothesis validates each new one
def odd_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=40))


@functools.cache
def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(HUGE_INTS),
        st.floats(),
        st.sampled_from(ODD_FLOATS),
        odd_text(),
        st.binary(max_size=64),
    )


@functools.cache
def values() -> st.SearchStrategy[Any]:
    """Any small tree of scalars: what a retyped field becomes."""
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(odd_text(), inner, max_size=4)),
        max_leaves=8,
    )


@functools.cache
def huge() -> st.SearchStrategy[Any]:
    """Values far beyond any sane bound: giant numbers, long strings, long lists."""
    return st.one_of(
        st.sampled_from(HUGE_INTS),
        st.sampled_from(ODD_FLOATS),
        st.integers(1_000, 300_000).map(lambda n: "x" * n),
        st.integers(1_000, 100_000).map(lambda n: [0] * n),
    )


# --- structured mutation --------------------------------------------------------------------------
def _slots(tree: Doc, box: list[Any]) -> Iterator[Slot]:
    yield box, 0
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
        for k in keys:
            yield node, k
            stack.append(node[k])


def _negative(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return -1
    return -abs(v) - 1


def _nest(v: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        v = [v] if as_list else {"k": v}
    return v


_EDITS = st.sampled_from(("drop", "retype", "huge", "negative", "unicode", "nest", "add", "repeat"))


@st.composite
def _edit(draw: st.DrawFn, box: list[Any]) -> None:
    """Apply one edit to the tree held in box[0], in place."""
    slots = list(_slots(box[0], box))
    container, key = slots[draw(st.integers(0, len(slots) - 1))]
    op = draw(_EDITS)
    if op == "drop" and container is not box:
        del container[key]
    elif op == "retype":
        container[key] = draw(values())
    elif op == "huge":
        container[key] = draw(huge())
    elif op == "negative":
        container[key] = _negative(container[key])
    elif op == "unicode":
        container[key] = draw(odd_text())
    elif op == "nest":
        container[key] = _nest(container[key], draw(st.integers(1, MAX_NEST)), draw(st.booleans()))
    elif op == "add" and isinstance(container[key], dict):
        container[key][draw(odd_text())] = draw(values())
    elif op == "repeat" and isinstance(container[key], list) and container[key]:
        items = container[key]
        items.insert(
            draw(st.integers(0, len(items))), copy.deepcopy(items[draw(st.integers(0, len(items) - 1))])
        )
    else:  # the edit does not apply here: retype instead, so every draw changes something
        container[key] = draw(values())


@st.composite
def mutated(draw: st.DrawFn, doc: Doc, max_edits: int = 3) -> Doc:
    """`doc` with one to `max_edits` edits; the original is never changed."""
    box = [copy.deepcopy(doc)]
    for _ in range(draw(st.integers(1, max_edits))):
        draw(_edit(box))
    return box[0]


# --- byte mutation --------------------------------------------------------------------------------
_BYTE_EDITS = st.sampled_from(("truncate", "flip", "insert", "delete", "repeat", "nest"))


@st.composite
def bytes_mutated(draw: st.DrawFn, data: bytes, nest: bytes = b"[") -> bytes:
    """`data` with one to three byte-level edits: truncation, flips, splices, repeats, deep nesting."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(out)))
        op = draw(_BYTE_EDITS)
        if op == "truncate":
            del out[i:]
        elif op == "flip" and i < len(out):
            out[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[i : i + draw(st.integers(1, 16))]
        elif op == "repeat":
            out[i:i] = out[i : i + draw(st.integers(1, 64))] * draw(st.integers(2, 2000))
        else:
            out[i:i] = nest * draw(st.sampled_from((50, 1_000, 100_000)))
    return bytes(out)


def document_inputs(
    valid: Doc, serialize: Callable[[Doc], bytes], nest: bytes = b"["
) -> st.SearchStrategy[bytes]:
    """Serialized mutations of `valid`, byte-level mutations of its bytes, and random bytes."""
    return st.one_of(
        mutated(valid).map(serialize),
        bytes_mutated(serialize(valid), nest),
        st.binary(max_size=2048),
    )


# --- serializers that keep what the format can carry ----------------------------------------------
def _text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def to_json(doc: Doc) -> bytes:
    def plain(x: Any) -> Any:
        return x.decode("latin-1") if isinstance(x, bytes) else str(x)

    return _text_bytes(json.dumps(doc, ensure_ascii=False, default=plain))


def _toml_key(k: Any) -> str:
    return json.dumps(k if isinstance(k, str) else str(k), ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        return "null"  # not TOML: the parser must refuse it
    return json.dumps(v.decode("latin-1") if isinstance(v, bytes) else str(v), ensure_ascii=False)


def to_toml(doc: Doc) -> bytes:
    """TOML text of a document: scalars first, then one [table] per dict value."""
    if not isinstance(doc, dict):
        return _text_bytes(f"value = {_toml_value(doc)}\n")
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return _text_bytes("\n".join(lines) + "\n")


def _msgpack_safe(x: Any) -> Any:
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return max(-(2**63), min(x, 2**64 - 1))  # what msgpack can carry
    if isinstance(x, list):
        return [_msgpack_safe(v) for v in x]
    if isinstance(x, dict):
        return {_msgpack_safe(k): _msgpack_safe(v) for k, v in x.items()}
    return x


def to_msgpack(doc: Doc) -> bytes:
    return msgpack.packb(_msgpack_safe(doc), use_bin_type=True, unicode_errors="surrogatepass")
