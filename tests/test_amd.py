"""The answering machine detector on the fixture audio: people, machines, silence, with noise."""

from __future__ import annotations

import numpy as np
import pytest

from ringflow.media.amd import (
    FRAME_SAMPLES,
    Detector,
    Mode,
    Result,
    detect,
    parse_mode,
)
from tests.amd_audio import (
    FIXTURES,
    NOISE_DB,
    Sample,
    from_ulaw,
    noisy,
    pcm,
    samples,
    silence,
    tone,
)

HUMAN_DEADLINE_MS = 3500


@pytest.fixture(scope="module")
def fixture_set() -> list[Sample]:
    return samples()


@pytest.mark.parametrize("mode", list(Mode))
def test_every_fixture_gets_its_verdict_at_every_noise_level(
    fixture_set: list[Sample], mode: Mode
) -> None:
    wrong = []
    for sample in fixture_set:
        for seed, level in enumerate(NOISE_DB):
            decision = detect(noisy(sample.pcm, level, seed), mode)
            if decision.result != sample.expected(mode):
                wrong.append(f"{sample.name} at {level} dB: {decision}")
            if sample.kind == "human":
                assert decision.ms <= HUMAN_DEADLINE_MS, (sample.name, level, decision)
    assert not wrong


def test_the_sip_callees_are_what_their_names_say() -> None:
    """The committed files SIPp plays (raw u-law) classify as the SIP tests expect."""
    hello = from_ulaw((FIXTURES / "human_hello.ulaw").read_bytes())
    machine = from_ulaw((FIXTURES / "machine_beep.ulaw").read_bytes())
    assert detect(hello, Mode.ENABLE).result is Result.HUMAN
    assert detect(hello, Mode.DETECT_MESSAGE_END).result is Result.HUMAN
    assert detect(machine, Mode.ENABLE).result is Result.MACHINE_START
    ended = detect(machine, Mode.DETECT_MESSAGE_END)
    assert ended.result is Result.MACHINE_END_BEEP
    # It ends as the beep does: greeting, 0.6 s, then 0.3 s of tone (within a frame or two).
    beep_end = len(machine) / 2 / 8000 - 3.0
    assert abs(ended.ms / 1000 - beep_end) < 0.1


def test_a_beep_alone_is_a_machine_and_its_end_the_end_of_the_message() -> None:
    audio = pcm(silence(0.5), tone(1000, 0.4), silence(2))
    assert detect(audio, Mode.ENABLE).result is Result.MACHINE_START
    ended = detect(audio, Mode.DETECT_MESSAGE_END)
    assert ended.result is Result.MACHINE_END_BEEP and ended.ms == 920  # 0.5 + 0.4 s, + 1 frame


def test_a_tone_too_short_or_out_of_band_is_no_beep() -> None:
    assert detect(pcm(silence(0.5), tone(1000, 0.1), silence(3))).result is Result.HUMAN
    # 3 kHz is no voicemail beep; a long one reads as a long sound, not a beep.
    hum = detect(pcm(silence(0.5), tone(3000, 0.5), silence(3)), Mode.DETECT_MESSAGE_END)
    assert hum.result is Result.HUMAN


def test_noise_alone_is_not_speech() -> None:
    rng = np.random.default_rng(7)
    hiss = rng.normal(0, 1500, 8000 * 6)
    assert detect(pcm(hiss)).result is Result.UNKNOWN


def test_a_party_that_hangs_up_early_gets_what_is_known() -> None:
    detector = Detector(Mode.ENABLE)
    for _ in range(10):
        assert detector.feed(bytes(FRAME_SAMPLES * 2)) is None
    assert detector.finish().result is Result.UNKNOWN and detector.finish().ms == 200


def test_modes_are_read_in_any_case() -> None:
    assert parse_mode("enable") is Mode.ENABLE
    assert parse_mode(" DETECTMESSAGEEND ") is Mode.DETECT_MESSAGE_END
    with pytest.raises(ValueError):
        parse_mode("yes")
