"""swarmd.compress: each mode's round trip within its stated error, the int8 per-block bound, top-k's
error-feedback invariant (exact), and malformed compressed updates refused with CompressionError."""

from __future__ import annotations

import math

import pytest
import torch

from swarmd.compress import (
    ENCODING_KEY,
    INDEX_PREFIX,
    INT8_BLOCK,
    SCALE_PREFIX,
    CompressionError,
    Encoding,
    compress,
    decompressed,
    layout,
    wire_bytes,
)
from swarmd.errors import InvalidUpdate


def _model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(16, 3, 3, 3, generator=g) * 0.01,
        "fc.weight": torch.randn(10, 700, generator=g) * 0.001,  # 7000: not a multiple of the block
        "fc.bias": torch.randn(10, generator=g),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0),
    }


def _dense(
    state: dict[str, torch.Tensor], template: dict[str, torch.Tensor], enc: Encoding
) -> dict[str, torch.Tensor]:
    view = decompressed(state, template, enc)
    return {k: view[k] for k in template}


def test_none_is_the_update_itself() -> None:
    update = _model()
    sent, residual = compress(update, Encoding())
    assert residual is None and sent.keys() == update.keys() and all(sent[k] is update[k] for k in update)
    assert decompressed(sent, update, Encoding()) is sent


@pytest.mark.parametrize(("mode", "rel", "tiny"), [("fp16", 2.0**-11, 2.0**-25), ("bf16", 2.0**-8, 0.0)])
def test_casts_round_trip_within_half_an_ulp(mode: str, rel: float, tiny: float) -> None:
    """Half an ulp relative; float16's subnormals (below 6.1e-5) only within half of 2**-24 absolute."""
    update = _model()
    enc = Encoding(mode)
    sent, _ = compress(update, enc)
    out = _dense(sent, update, enc)
    for name, t in update.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
        if t.is_floating_point():
            assert torch.all((out[name] - t).abs() <= t.abs() * rel + tiny)
        else:
            assert torch.equal(out[name], t)
    assert wire_bytes(sent) < 0.51 * wire_bytes(update) + 64


def test_int8_within_half_a_scale_per_block() -> None:
    update = _model()
    enc = Encoding("int8")
    sent, _ = compress(update, enc)
    out = _dense(sent, update, enc)
    for name, t in update.items():
        if not t.is_floating_point() or not t.numel():
            continue
        flat, got = t.reshape(-1), out[name].reshape(-1)
        for b in range(math.ceil(flat.numel() / INT8_BLOCK)):
            block = slice(b * INT8_BLOCK, (b + 1) * INT8_BLOCK)
            scale = float(flat[block].abs().max()) / 127
            assert float(sent[SCALE_PREFIX + name][b]) == pytest.approx(scale, rel=1e-6)
            assert float((got[block] - flat[block]).abs().max()) <= scale / 2 * (1 + 1e-5)
    codes = torch.cat([sent[k].reshape(-1) for k in update if update[k].is_floating_point()])
    assert codes.dtype == torch.int8 and int(codes.min()) >= -127 and int(codes.abs().max()) == 127
    # 1 byte per element plus 4 per block: about a quarter of float32
    floats = sum(t.numel() * 4 for t in update.values() if t.is_floating_point())
    assert wire_bytes(sent) - 8 - len(sent[ENCODING_KEY]) <= 0.27 * floats


def test_int8_zero_block_and_exact_halves() -> None:
    x = torch.zeros(2 * INT8_BLOCK)
    x[INT8_BLOCK] = 127.0
    x[INT8_BLOCK + 1] = 0.5  # x / scale = 0.5: round half to even gives code 0
    x[INT8_BLOCK + 2] = 1.5  # code 2
    sent, _ = compress({"w": x}, Encoding("int8"))
    assert sent[SCALE_PREFIX + "w"].tolist() == [0.0, 1.0]
    assert sent["w"][INT8_BLOCK : INT8_BLOCK + 3].tolist() == [127, 0, 2]
    assert torch.equal(_dense(sent, {"w": x}, Encoding("int8"))["w"][:INT8_BLOCK], torch.zeros(INT8_BLOCK))


def test_topk_sends_k_largest_and_error_feedback_is_exact() -> None:
    enc = Encoding("topk", topk_ratio=0.05)
    update, template = _model(1), _model(1)
    previous = {k: torch.randn(t.shape) * 1e-3 for k, t in update.items() if t.is_floating_point()}
    sent, residual = compress(update, enc, previous)
    assert residual is not None
    dense = _dense(sent, template, enc)
    for name, t in update.items():
        if not t.is_floating_point():
            assert torch.equal(sent[name], t)
            continue
        acc = t + previous[name]
        assert torch.equal(dense[name] + residual[name], acc)  # sent + residual == input + previous, exactly
        k = enc.k(t.numel())
        assert sent[name].shape == (k,) and sent[INDEX_PREFIX + name].dtype == torch.int32
        if k:  # what was sent is the k largest: nothing left behind is larger
            assert float(residual[name].abs().max()) <= float(sent[name].abs().min())
    assert enc.k(7000) == 350 and enc.k(10) == 1 and enc.k(0) == 0


def test_compression_refuses_non_finite_input_and_fp16_overflow() -> None:
    for mode in ("fp16", "bf16", "int8", "topk"):
        with pytest.raises(InvalidUpdate, match="NaN or infinite") as err:
            compress({"w": torch.tensor([1.0, math.nan])}, Encoding(mode))
        assert err.value.reason == "nonfinite"
    with pytest.raises(CompressionError, match="float16's range"):
        compress({"w": torch.tensor([1e6])}, Encoding("fp16"))
    with pytest.raises(CompressionError, match="unknown compression"):
        Encoding("zip")
    with pytest.raises(CompressionError, match="topk_ratio"):
        Encoding("topk", topk_ratio=0.0)


def test_robust_rules_read_slices_of_a_decoded_update() -> None:
    update = {"w": torch.randn(3 * INT8_BLOCK + 17)}
    for enc in (Encoding("int8"), Encoding("bf16"), Encoding("topk", 0.1)):
        view = decompressed(compress(update, enc)[0], update, enc)
        whole = view["w"]
        for start, stop in ((0, 5), (INT8_BLOCK - 3, 2 * INT8_BLOCK + 9), (700, 785), (785, 785)):
            assert torch.equal(view.read_flat("w", start, stop), whole[start:stop])  # type: ignore[attr-defined]


def _int8(**override: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    template = {"w": torch.randn(300), "n": torch.tensor(3)}
    sent, _ = compress(template, Encoding("int8"))
    sent.update(override)
    return sent, template


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"w": torch.zeros(299, dtype=torch.int8)}, r"w: torch.int8 \(299,\), the int8 encoding wants"),
        ({"w": torch.zeros(300, dtype=torch.int16)}, "w: torch.int16"),
        ({SCALE_PREFIX + "w": torch.ones(3)}, r"__swarmd_scale__/w: torch.float32 \(3,\)"),
        ({SCALE_PREFIX + "w": torch.tensor([1.0, -1.0])}, "scales must be finite and >= 0"),
        ({SCALE_PREFIX + "w": torch.tensor([1.0, math.inf])}, "scales must be finite and >= 0"),
        ({SCALE_PREFIX + "w": torch.tensor([math.nan, 1.0])}, "scales must be finite and >= 0"),
        ({"w": torch.full((300,), -128, dtype=torch.int8)}, "-128 is outside"),
        ({ENCODING_KEY: torch.tensor(list(b"int8;block=128"), dtype=torch.uint8)}, "declares encoding"),
        ({ENCODING_KEY: torch.zeros(3, dtype=torch.int32)}, "short uint8 string"),
        ({"extra": torch.zeros(1)}, "unexpected extra"),
    ],
)
def test_malformed_int8_updates_are_refused_by_name(override: dict[str, torch.Tensor], message: str) -> None:
    sent, template = _int8(**override)
    with pytest.raises(CompressionError, match=message) as err:
        view = decompressed(sent, template, Encoding("int8"), sender="0xabc")
        view["w"]
    assert err.value.reason == "compression" and "0xabc" in str(err.value)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ([0, 5, 5], "strictly increasing"),
        ([7, 5, 9], "strictly increasing"),
        ([0, 5, 100], "out of range"),
        ([-1, 5, 9], "out of range"),
    ],
)
def test_malformed_topk_indices_are_refused(index: list[int], message: str) -> None:
    enc = Encoding("topk", topk_ratio=0.03)
    template = {"w": torch.randn(100)}
    sent, _ = compress(template, enc)
    sent[INDEX_PREFIX + "w"] = torch.tensor(index, dtype=torch.int32)
    with pytest.raises(CompressionError, match=message):
        decompressed(sent, template, enc)["w"]
    sent[INDEX_PREFIX + "w"] = torch.tensor([0, 1, 2, 3], dtype=torch.int32)  # a denser update than agreed
    with pytest.raises(CompressionError, match=r"wants torch.int32 \(3,\)"):
        decompressed(sent, template, enc)


def test_a_plain_update_is_not_a_compressed_one() -> None:
    template = {"w": torch.randn(10)}
    with pytest.raises(CompressionError, match=f"missing {ENCODING_KEY}"):
        decompressed(template, template, Encoding("fp16"))
    assert set(layout(template, Encoding("topk"))) == {ENCODING_KEY, "w", INDEX_PREFIX + "w"}
    assert Encoding("int8").max_tensors(5) == 11 and Encoding("bf16").max_tensors(5) == 6
