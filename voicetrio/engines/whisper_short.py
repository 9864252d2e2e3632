"""Whisper on a shortened window: the decode for utterances, not for files.

Whisper's encoder is trained on 30 s windows, and faster-whisper always pads
the log-mel features to 3000 frames, so a one-second partial costs as much as
a 30 s window: on tiny.en here, 0.36 s of a 0.5 s decode is the encoder
working on padding. CTranslate2's encoder accepts a shorter input; feeding it
the utterance plus a margin of padding (the same zero padding faster-whisper
uses, only less of it) cuts the encoder to ~0.05-0.09 s for a sentence, with
the same words on our test set. This is the "audio context" trick of
whisper.cpp. Audio near the window's length falls back to faster-whisper's
own loop (None from :func:`decode_short`).

Blocking: call it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

#: 10 ms hop: features per second of audio.
FRAMES_PER_SECOND: Final = 100
#: Zero padding after the audio, in frames; Whisper expects some silence after speech.
PAD_FRAMES: Final = 200
#: Windows are rounded up to a multiple of this, so few distinct shapes occur.
STEP_FRAMES: Final = 100
#: The shortest window. Much shorter contexts make the decoder loop on short
#: phrases ("Thank you. Thank you. ..." for 0.8 s of speech in a 3 s window).
MIN_FRAMES: Final = 1000
#: Tokens allowed per second of audio (speech runs 3-4 tokens a second), plus
#: a floor: a cap on any loop that slips through.
TOKENS_PER_SECOND: Final = 12
MIN_TOKENS: Final = 24
#: Longer audio than this goes through faster-whisper's full-window loop.
MAX_AUDIO_FRAMES: Final = 2800
FULL_WINDOW: Final = 3000


@dataclass(frozen=True, slots=True)
class ShortSegment:
    """The fields :func:`voicetrio.engines.whisper.clean_text` reads."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


def window_frames(audio_frames: int) -> int:
    """Encoder input length for ``audio_frames`` of features."""
    padded = max(MIN_FRAMES, audio_frames + PAD_FRAMES)
    return min(FULL_WINDOW, -(-padded // STEP_FRAMES) * STEP_FRAMES)


def decode_short(
    model: Any, samples: npt.NDArray[np.float32], *, language: str, beam_size: int
) -> list[ShortSegment] | None:
    """One segment for ``samples``, or None when the audio is too long for it."""
    from faster_whisper.audio import pad_or_trim  # type: ignore[import-untyped]
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
    from faster_whisper.transcribe import (  # type: ignore[import-untyped]
        get_compression_ratio,
        get_suppressed_tokens,
    )

    features = model.feature_extractor(samples)
    frames = features.shape[-1]
    if frames > MAX_AUDIO_FRAMES:
        return None
    features = pad_or_trim(features, window_frames(frames))
    encoder_output = model.encode(features)
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    max_tokens = MIN_TOKENS + TOKENS_PER_SECOND * frames // FRAMES_PER_SECOND
    result = model.model.generate(
        encoder_output,
        [prompt],
        beam_size=beam_size,
        max_length=min(model.max_length, len(prompt) + max_tokens),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
    )[0]
    tokens = result.sequences_ids[0]
    # As faster-whisper recovers it: scores are length-normalized (penalty 1).
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    text = tokenizer.decode(tokens).strip()
    return [
        ShortSegment(
            text=text,
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(avg_logprob),
            compression_ratio=get_compression_ratio(text) if text else 0.0,
        )
    ]
