"""Speak one text with libespeak-ng, in a short-lived process of its own.

Run as a script (``python -I -S espeak_worker.py --library L [--data D] speak --voice V``, the
text on stdin), never imported by the server: the library keeps global state, and it is C code
reading text that customers control, so a crash or a hang must cost one render, not the server.
Only the standard library is used, so the process starts in a few tens of milliseconds.

Modes:
  info   print JSON {"version", "rate", "voices"} on stdout
  speak  print a 16-bit mono WAV at the engine's own rate (22050 Hz) on stdout

Exit status: 0 done; 2 unknown voice; 3 the library or its data could not be loaded; 4 synthesis
failed. The reason is one line on stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import sys
import wave

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # without it the library calls exit() when its data is missing
CHARS_UTF8 = 1
ENDPAUSE = 0x1000  # a short pause after the last sentence, as the espeak-ng command adds
POS_CHARACTER = 1
EXIT_VOICE, EXIT_LOAD, EXIT_SYNTH = 2, 3, 4


class Voice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, language, NUL)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Failure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def load(library: str, data: str | None) -> tuple[ctypes.CDLL, int]:
    """Open the library and initialise it for synchronous synthesis; returns it and its rate."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise Failure(EXIT_LOAD, f"cannot load {library}: {exc}") from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(Voice))
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(Voice)]
    lib.espeak_SetSynthCallback.argtypes = [SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    path = data.encode() if data else None
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, path, INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise Failure(
            EXIT_LOAD, f"espeak-ng could not read its voice data at {data or 'the default path'}"
        )
    return lib, rate


def languages(voice: Voice) -> list[str]:
    """The language codes a voice speaks, best first."""
    out: list[str] = []
    p = voice.languages
    while p and ctypes.string_at(p, 1) != b"\0":
        lang = ctypes.string_at(p + 1)
        out.append(lang.decode("ascii", "replace").lower())
        p += len(lang) + 2
    return out


def info(lib: ctypes.CDLL, rate: int) -> dict[str, object]:
    """Version, sample rate and the languages of every installed voice."""
    version = lib.espeak_Info(None).decode()
    voices: set[str] = set()
    listed = lib.espeak_ListVoices(None)
    i = 0
    while listed[i]:
        voices.update(languages(listed[i].contents))
        i += 1
    return {"version": version, "rate": rate, "voices": sorted(voices)}


def select_voice(lib: ctypes.CDLL, voice: str) -> None:
    """By voice file name ("en-us", "hi"), else the closest voice for a language ("en-in")."""
    if lib.espeak_SetVoiceByName(voice.encode()) == 0:
        return
    lang = ctypes.c_char_p(voice.encode())
    spec = Voice(languages=ctypes.cast(lang, ctypes.c_void_p))
    if lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
        raise Failure(EXIT_VOICE, f"espeak-ng has no voice for {voice!r}")


def speak(lib: ctypes.CDLL, rate: int, voice: str, text: str) -> bytes:
    """The text spoken by the voice, as a mono 16-bit WAV at the engine's rate."""
    select_voice(lib, voice)
    chunks: list[bytes] = []

    # ctypes._Pointer is the class POINTER(c_short) makes; POINTER itself is a function, no type.
    def collect(wav: ctypes._Pointer[ctypes.c_short], count: int, events: int) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0: go on synthesising

    callback = SynthCallback(collect)  # kept referenced until synthesis ends
    lib.espeak_SetSynthCallback(callback)
    encoded = text.encode("utf-8")
    status = lib.espeak_Synth(
        encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None
    )
    if status != 0:
        raise Failure(EXIT_SYNTH, f"espeak_Synth failed with status {status}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(chunks))
    return buf.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--data")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("info")
    speak_parser = sub.add_parser("speak")
    speak_parser.add_argument("--voice", required=True)
    args = parser.parse_args(argv)
    try:
        lib, rate = load(args.library, args.data)
        if args.mode == "info":
            sys.stdout.write(json.dumps(info(lib, rate)))
        else:
            text = sys.stdin.buffer.read().decode("utf-8")
            sys.stdout.buffer.write(speak(lib, rate, args.voice, text))
    except Failure as exc:
        print(exc, file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
