"""Media: prompts converted once to 8 kHz mono, text to speech, and the cache that holds both.

The public surface other packages use::

    prompt = load_audio(data)                 # WAV/MP3 bytes -> Prompt, or InvalidRequest
    prompt = await cache.audio(data)          # the same, converted once and cached
    tts = TextToSpeech(cache)                 # or TextToSpeech(data_dir / "media")
    prompt = await tts.speak(text, "hi")      # rendered once per (engine, voice, text)
    prompt.duration                           # seconds
    is_silence(pcm), voiced_seconds(pcm)      # did a recording catch anyone speaking
    tts.voices(), tts.available(), tts.require()   # the last raises TtsUnavailable with a hint

Nothing here imports the API, storage, flows or telephony.
"""

from ringflow.media.audio import (
    MAX_SECONDS,
    RATE,
    Prompt,
    encode_mp3,
    frame_rms,
    from_pcm,
    is_silence,
    load_audio,
    read_wav,
    voiced_seconds,
    wav_bytes,
    write_wav,
)
from ringflow.media.cache import PromptCache
from ringflow.media.tts import (
    DEFAULT_VOICE,
    Espeak,
    TextToSpeech,
    TtsError,
    TtsUnavailable,
    available,
    voices,
)

__all__ = [
    "DEFAULT_VOICE",
    "MAX_SECONDS",
    "RATE",
    "Espeak",
    "Prompt",
    "PromptCache",
    "TextToSpeech",
    "TtsError",
    "TtsUnavailable",
    "available",
    "encode_mp3",
    "frame_rms",
    "from_pcm",
    "is_silence",
    "load_audio",
    "read_wav",
    "voiced_seconds",
    "voices",
    "wav_bytes",
    "write_wav",
]
