"""Every engine class meets the Protocol its stage uses (checked by mypy on
the tables below), and what the Protocols declare behaves as they say."""

from __future__ import annotations

import trio

from tests.conftest import FAST_FAKE
from voicetrio.engines.asr.whisper import WhisperAsr
from voicetrio.engines.base import AsrEngine, Engines, LlmEngine, TtsEngine, VadEngine
from voicetrio.engines.fake import EnergyVad, FakeAsr, FakeLlm, FakeTts, fake_engines
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.engines.registry import GatedAsr, GatedLlm, GatedTts
from voicetrio.engines.scheduler import Scheduler
from voicetrio.engines.tts.espeak import Pyttsx3Tts
from voicetrio.engines.tts.piper import PiperTts
from voicetrio.engines.vad.webrtc import WebRtcVad

# mypy checks each class against its Protocol here: a member the stages use
# and an engine lacks is a type error, not an AttributeError in a session.
VADS: tuple[type[VadEngine], ...] = (EnergyVad, WebRtcVad)
ASRS: tuple[type[AsrEngine], ...] = (FakeAsr, WhisperAsr, GatedAsr)
LLMS: tuple[type[LlmEngine], ...] = (FakeLlm, OpenAiLlm, GatedLlm)
TTSS: tuple[type[TtsEngine], ...] = (FakeTts, Pyttsx3Tts, PiperTts, GatedTts)


def test_a_vad_without_hangover_says_zero_and_resets_to_nothing() -> None:
    vad = EnergyVad(threshold=1)
    assert vad.hangover_ms == 0
    loud = b"\xff\x7f" * 480
    assert vad.is_speech(loud)
    vad.reset()
    assert not vad.is_speech(bytes(960))


def test_readiness_is_what_each_engine_says() -> None:
    engines = fake_engines(FAST_FAKE, Scheduler(1))
    assert engines.readiness() == {"asr": True, "llm": True, "tts": True}
    tts = FakeTts()
    tts.ready = False  # a speech thread that is not up (yet, or any more)
    partial = Engines("fake", engines.vad, engines.asr, engines.llm, tts)
    assert partial.readiness() == {"asr": True, "llm": True, "tts": False}


async def test_an_asr_engine_transcribes_pcm_as_the_upload_route_hands_it() -> None:
    # The upload route decodes a file to 16 kHz PCM and calls transcribe():
    # the deterministic engine serves it like any other.
    from voicetrio.core.audio import tone

    asr = FakeAsr(delay_s=0)
    with trio.fail_after(1):
        text = await asr.transcribe(tone(600, 300.0), final=True)
    assert text and asr.final_calls == 1
