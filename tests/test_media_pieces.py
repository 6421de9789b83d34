"""Audio cut into equal pieces, whatever lengths it comes in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringflow.media.pieces import Cutter


@given(size=st.integers(1, 64), audio=st.lists(st.binary(max_size=200), max_size=20))
def test_pieces_are_the_audio_in_order_each_of_the_size(size, audio):
    cutter = Cutter(size)
    out = [piece for part in audio for piece in cutter.feed(part)]
    joined = b"".join(audio)
    assert all(len(piece) == size for piece in out)
    assert b"".join(out) == joined[: len(out) * size]
    assert len(cutter) == len(joined) % size  # the rest waits for more


def test_silence_padded_goes_in_front_of_what_comes_next():
    cutter = Cutter(4)
    cutter.pad(3)
    assert cutter.feed(b"ab") == [b"\0\0\0a"] and len(cutter) == 1
    assert cutter.feed(b"cde") == [b"bcde"]


def test_a_whole_piece_is_passed_on_as_it_came():
    piece = b"x" * 320
    assert Cutter(320).feed(piece)[0] is piece


def test_pieces_have_a_length():
    with pytest.raises(ValueError):
        Cutter(0)
