"""Whisper on a shortened window: the decode for utterances, not for files.

Whisper's encoder is trained on 30 s windows, and faster-whisper always pads
the log-mel features to 3000 frames, so a one-second partial costs as much as
a 30 s window: on tiny.en here, 0.36 s of a 0.5 s decode is the encoder
working on padding. CTranslate2's encoder accepts a shorter input; feeding it
the utterance plus a margin of silence cuts the encoder to ~0.05-0.09 s for a
sentence. This is the "audio context" trick of whisper.cpp. Audio near the
window's length falls back to faster-whisper's own loop (None from
:func:`decode_short`).

The margin is *silence*, not zeros. Whisper was trained on audio padded with
zero samples before the log-mel (openai-whisper's ``log_mel_spectrogram(...,
padding=N_SAMPLES)``), so after speech it expects the log-mel floor: the
loudest frame minus 80 dB, about -0.6..-1.0 once normalized. faster-whisper
instead pads the *features* with 0.0, which is 40 dB above that floor: a
flat, loud band no training window ended with. In a 30 s window the decoder
copes; in a 10 s window that band is a larger share of what it attends to,
and the words can change with the library versions (tiny.en heard "look at
table" for "book a table" with ctranslate2 4.8.5 and numpy 2.4). Computing
the features of the audio padded with zero samples gives the encoder the
padding it was trained on, and the short window then agrees with the full
one on the test sentences at every window length from 10 s to 30 s.

Blocking: call it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

#: 10 ms hop: features per second of audio.
FRAMES_PER_SECOND: Final = 100
#: Samples per feature frame at 16 kHz.
HOP_SAMPLES: Final = 160
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
    """The fields :func:`voicetrio.engines.asr.whisper.clean_text` reads."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


def window_frames(audio_frames: int) -> int:
    """Encoder input length for ``audio_frames`` of features."""
    padded = max(MIN_FRAMES, audio_frames + PAD_FRAMES)
    return min(FULL_WINDOW, -(-padded // STEP_FRAMES) * STEP_FRAMES)


def silence_padded_features(
    model: Any, samples: npt.NDArray[np.float32], window: int
) -> npt.NDArray[np.float32]:
    """Log-mel features of ``samples`` followed by silence, ``window`` frames long."""
    padded = np.pad(samples, (0, max(0, window * HOP_SAMPLES - samples.size)))
    features: npt.NDArray[np.float32] = model.feature_extractor(padded)[:, :window]
    return features


def decode_short(
    model: Any,
    samples: npt.NDArray[np.float32],
    *,
    language: str,
    beam_size: int,
    full_window: bool = False,
) -> list[ShortSegment] | None:
    """One segment for ``samples``, or None when the audio is too long for it.

    ``full_window`` encodes the whole 30 s window (four to five times slower
    on tiny.en): a second opinion when the short window's result looks wrong.
    """
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
    from faster_whisper.transcribe import (  # type: ignore[import-untyped]
        get_compression_ratio,
        get_suppressed_tokens,
    )

    # As many frames as faster-whisper's extractor makes (it appends one hop).
    frames = samples.size // HOP_SAMPLES + 1
    if frames > MAX_AUDIO_FRAMES:
        return None
    window = FULL_WINDOW if full_window else window_frames(frames)
    encoder_output = model.encode(silence_padded_features(model, samples, window))
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
