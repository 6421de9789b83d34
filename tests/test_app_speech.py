"""Saving an app checks that its texts can be spoken: the engine is installed, the voice known."""

from __future__ import annotations

import pytest

from ringflow.accounts import Accounts
from ringflow.errors import AppInvalid
from ringflow.media.tts import Espeak, TextToSpeech

APP = {
    "name": "speaks",
    "start": "hi",
    "nodes": {
        "hi": {"applet": "greeting", "text": "Namaste", "voice": "hi", "next": "menu"},
        "menu": {"applet": "ivr_menu", "text": "Press 1", "voice": "xx-klingon", "on_1": None},
    },
}


async def test_an_unknown_voice_is_named(db, clock, tmp_path):
    accounts = Accounts(db, clock, TextToSpeech(tmp_path))
    creds = await accounts.create_account("acme")
    with pytest.raises(AppInvalid) as info:
        await accounts.save_app(creds.account_sid, APP)
    [problem] = info.value.problems
    assert problem.startswith("node 'menu': field 'text': unknown TTS voice 'xx-klingon'")


async def test_without_an_engine_saving_says_how_to_install_one(db, clock, tmp_path):
    missing = Espeak(library=tmp_path / "no-such-libespeak-ng.so")
    accounts = Accounts(db, clock, TextToSpeech(tmp_path, engine=missing))
    creds = await accounts.create_account("acme")
    with pytest.raises(AppInvalid) as info:
        only_greeting = {"hi": {**APP["nodes"]["hi"], "next": None}}
        await accounts.save_app(creds.account_sid, {**APP, "nodes": only_greeting})
    [problem] = info.value.problems
    assert problem.startswith("node 'hi': field 'text': text to speech is unavailable")
    assert "pip install espeakng-loader" in problem


async def test_speakable_apps_save(db, clock, tmp_path):
    accounts = Accounts(db, clock, TextToSpeech(tmp_path))
    creds = await accounts.create_account("acme")
    fixed = {**APP, "nodes": {**APP["nodes"], "menu": {**APP["nodes"]["menu"], "voice": "en"}}}
    app = await accounts.save_app(creds.account_sid, fixed)
    assert app.version == 1


async def test_a_transfer_must_lead_to_an_app_of_the_account(db, clock, tmp_path):
    accounts = Accounts(db, clock)
    acme = await accounts.create_account("acme")
    other = await accounts.create_account("other")
    target = await accounts.save_app(
        other.account_sid, {"name": "t", "start": "h", "nodes": {"h": {"applet": "hangup"}}}
    )
    hop = {
        "name": "hop",
        "start": "go",
        "nodes": {"go": {"applet": "transfer", "app_id": target.id}},
    }
    with pytest.raises(AppInvalid) as info:
        await accounts.save_app(acme.account_sid, hop)
    assert info.value.problems == [
        f"node 'go': field 'app_id': there is no app {target.id} in this account"
    ]
    assert (await accounts.save_app(other.account_sid, hop)).name == "hop"
