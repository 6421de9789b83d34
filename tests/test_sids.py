"""Identifiers on the wire: Exotel's shape, every character in every place."""

from __future__ import annotations

import string

from ringflow.calls.sids import new_call_sid, new_recording_sid

ALNUM = set(string.ascii_lowercase + string.digits)


def test_a_call_sid_has_exotels_shape() -> None:
    for _ in range(200):
        sid = new_call_sid()
        assert len(sid) == 32 and set(sid) <= ALNUM
        assert sid[-1] in "ghijklmnopqrstuvwxyz"  # never read as hex


def test_every_character_turns_up_in_every_place() -> None:
    """One draw per identifier, cut into characters: each of the 36 can come anywhere (a
    missing one in 3000 draws has odds of about e^-84)."""
    sids = [new_recording_sid() for _ in range(3000)]
    assert all(len(sid) == 32 and set(sid) <= ALNUM for sid in sids)
    for place in range(32):
        assert {sid[place] for sid in sids} == ALNUM, place
    assert len(set(sids)) == len(sids)
