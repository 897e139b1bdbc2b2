"""Compressed upstream bodies are inflated in bounded steps; other encodings are refused."""

from __future__ import annotations

import gzip
import zlib

import pytest

from tidegate.errors import UpstreamProtocolError
from tidegate.providers.http import INFLATE_STEP, Inflater


def drain(inflater: Inflater, data: bytes) -> list[bytes]:
    out = [inflater.feed(data)]
    while piece := inflater.more():
        out.append(piece)
    out.append(inflater.finish())
    return [p for p in out if p]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    ],
)
def test_round_trip(encoding: str, compress: object) -> None:
    body = b'{"choices": [{"message": {"content": "hello"}}]}' * 100
    assert callable(compress)
    assert b"".join(drain(Inflater(encoding), compress(body))) == body


def test_a_bomb_comes_out_one_bounded_step_at_a_time() -> None:
    """Invariant: one call never returns more than INFLATE_STEP bytes, however small the input."""
    bomb = gzip.compress(b"\0" * (64 * INFLATE_STEP))
    inflater = Inflater("gzip")
    first = inflater.feed(bomb)
    assert len(first) == INFLATE_STEP
    steps = 1
    while piece := inflater.more():
        assert len(piece) <= INFLATE_STEP
        steps += 1
    assert steps >= 64


def test_unknown_and_corrupt_encodings_are_protocol_errors() -> None:
    with pytest.raises(UpstreamProtocolError, match="'br'"):
        Inflater("br")
    with pytest.raises(UpstreamProtocolError, match="corrupt"):
        Inflater("gzip").feed(b"not gzip at all")
