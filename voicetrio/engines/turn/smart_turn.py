"""Smart Turn v3.2: whether a turn sounds complete, from its last 8 s of audio.

The model (``smart-turn-v3.2-cpu.onnx``, BSD-2-Clause, by Daily) ships inside
the ``pipecat-ai`` wheel, which the lock installs without its dependencies. It
is found with :func:`importlib.util.find_spec`, never imported: Pipecat's
``__init__`` imports packages we do not have. This is our own code for the
model's input contract, read from Pipecat's analyzer and from the ONNX graph:

* **Input** ``input_features``, float32 ``[batch, 80, 800]``: Whisper-style
  log-mel features (80 mel bins, 25 ms windows, 10 ms hops) of exactly 8 s of
  16 kHz audio. Longer audio keeps its *last* 8 s; shorter audio is padded
  with zeros at the *start*, so the end of speech is always at the end of
  the window. The 8 s window is normalized to zero mean and unit variance
  (padding included) before the spectrogram, as Whisper's feature extractor
  does with ``do_normalize``; the features are then Whisper's: log10 of the
  mel power, floored 8 (log10 units) below the peak, scaled by ``(x + 4) / 4``.
* **Output** ``logits``, float32 ``[batch, 1]``: despite the name, already a
  sigmoid, the probability that the turn is complete. Pipecat calls the
  turn complete above 0.5.

faster-whisper's own numpy :class:`FeatureExtractor` (80 bins, ``chunk_length``
8, no extra padding) computes the features: they match the reference
implementation to within 1e-5. One run costs about 20 ms of features and
95 ms of inference on one thread (x86, 2 cores; ``bench/turn_judge.py``).

The ONNX session runs on one intra-op thread, and one run at a time across
all sessions: multi-threaded inference beside the LLM and TTS stalls on two
cores (threads wait for each other at every operator), as Whisper's did.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio

from voicetrio.core.turn_policy import TurnVerdict
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, ModelLoadError, TurnJudgeError
from voicetrio.engines.models import PackageLocator, find_package

Samples = npt.NDArray[np.float32]

MODEL_FILE: Final = "smart-turn-v3.2-cpu.onnx"
#: The installed package that holds the model, and the folder inside it.
MODEL_PACKAGE: Final = "pipecat"
MODEL_DIR: Final = ("audio", "turn", "smart_turn", "data")
#: What the model hears: the last 8 s, at the engines' 16 kHz.
WINDOW_S: Final = 8
WINDOW_SAMPLES: Final = WINDOW_S * ENGINE_SAMPLE_RATE
N_MELS: Final = 80
#: 10 ms hops over 8 s (Whisper drops the frame past the end).
N_FRAMES: Final = 800
INPUT_NAME: Final = "input_features"
#: The model's own cut between complete and incomplete.
DEFAULT_THRESHOLD: Final = 0.5
#: Whisper's waveform normalization guards a silent window with this.
_NORM_EPSILON: Final = 1e-7


def model_path(locate: PackageLocator = find_package) -> Path:
    """Where the installed ``pipecat-ai`` wheel keeps the model; ModelLoadError if it does not."""
    package = locate(MODEL_PACKAGE)
    if package is None:
        raise ModelLoadError(
            f"the Smart Turn model ships in the pipecat-ai wheel, which is not installed "
            f"(pip install --no-deps pipecat-ai): no package {MODEL_PACKAGE!r}"
        )
    path = package.joinpath(*MODEL_DIR, MODEL_FILE)
    if not path.is_file():
        raise ModelLoadError(f"the installed pipecat-ai has no {MODEL_FILE} (looked at {path})")
    return path


def window(pcm: bytes) -> Samples:
    """The last 8 s of ``pcm`` (16 kHz 16-bit mono) as float32 in [-1, 1),
    zero-padded at the start to exactly :data:`WINDOW_SAMPLES`."""
    if len(pcm) % 2:
        raise TurnJudgeError(f"{len(pcm)} bytes of PCM is not whole 16-bit samples")
    tail = np.frombuffer(pcm, "<i2")[-WINDOW_SAMPLES:]
    out = np.zeros(WINDOW_SAMPLES, np.float32)
    if len(tail):
        out[-len(tail) :] = tail.astype(np.float32) / np.float32(32768.0)
    return out


def normalize(samples: Samples) -> Samples:
    """Zero mean, unit variance over the whole window (padding included)."""
    centred = samples - samples.mean(dtype=np.float32)
    scale = np.sqrt(samples.var(dtype=np.float32) + np.float32(_NORM_EPSILON))
    out: Samples = (centred / scale).astype(np.float32)
    return out


class SmartTurnJudge:
    """The :class:`~voicetrio.engines.base.TurnJudge` on Smart Turn v3.2.

    ``ready`` is False until :meth:`load` (or :meth:`load_sync`) has
    succeeded. :meth:`judge` blocks (about 0.1 s); :meth:`judge_async` runs it
    in a worker thread under ``limiter`` (by default the engine's own, one
    run at a time). ``last_judge_s`` is the duration of the latest run,
    features included; ``runs`` counts them.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:  # also rejects NaN
            raise ValueError(f"threshold must be within (0, 1), got {threshold}")
        self.path = path
        self.threshold = threshold
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(1)
        self.ready = False
        self.last_judge_s = 0.0
        self.runs = 0
        self._session: Any = None
        self._extractor: Any = None
        self._loading = trio.Lock()

    # --- loading ------------------------------------------------------------

    def load_sync(self) -> None:
        """Blocking: find and open the model, check its input and output, and
        run it once (the first run allocates). Raises ModelLoadError."""
        if self._session is not None:
            return
        path = self.path if self.path is not None else model_path()
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
            from faster_whisper.feature_extractor import (  # type: ignore[import-untyped]
                FeatureExtractor,
            )
        except ImportError as exc:
            raise ModelLoadError(
                f"Smart Turn needs onnxruntime and faster-whisper, which are not installed: {exc}"
            ) from exc
        options = ort.SessionOptions()
        # One thread for the operators and none between them: see the module docstring.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot open the Smart Turn model {path}: {exc}") from exc
        _check_contract(session, path)
        self.path = path
        self._extractor = FeatureExtractor(feature_size=N_MELS, chunk_length=WINDOW_S)
        self._session = session
        try:
            self._run(np.zeros(WINDOW_SAMPLES, np.float32))
        except TurnJudgeError as exc:
            self._session = None
            raise ModelLoadError(f"the Smart Turn model {path} failed its first run: {exc}") from exc
        self.ready = True

    async def load(self) -> None:
        """:meth:`load_sync` in a worker thread; raises ModelLoadError. Idempotent."""
        # Concurrent callers wait for one load rather than each loading a copy.
        async with self._loading:
            if not self.ready:
                # Not abandoned on cancel: a process that exits while
                # onnxruntime is still opening the model in a thread aborts
                # (SIGABRT), e.g. when another engine failed to load. The
                # load takes about a second; the cancel waits for it.
                await trio.to_thread.run_sync(self.load_sync)

    # --- judging ------------------------------------------------------------

    def features(self, pcm: bytes) -> Samples:
        """The model's input for ``pcm``: ``[80, 800]`` log-mel features of its last 8 s."""
        if self._extractor is None:
            raise TurnJudgeError("the Smart Turn model is not loaded")
        return self._features(window(pcm))

    def judge(self, pcm: bytes) -> TurnVerdict:
        """Blocking: the verdict on the end of ``pcm`` (16 kHz 16-bit mono)."""
        if self._session is None:
            raise TurnJudgeError("the Smart Turn model is not loaded")
        return self._run(window(pcm))

    async def judge_async(self, pcm: bytes) -> TurnVerdict:
        if not self.ready:
            raise TurnJudgeError("the Smart Turn model is not loaded")
        # An abandoned run keeps its limiter token until its thread ends, so
        # cancelled runs never pile up on the cores.
        return await trio.to_thread.run_sync(
            self.judge, pcm, limiter=self.limiter, abandon_on_cancel=True
        )

    def _features(self, samples: Samples) -> Samples:
        # No extra padding: the window is already exactly 8 s, and Whisper's
        # extractor drops the frame past its end, leaving 800.
        mel = self._extractor(normalize(samples), padding=0)
        return np.asarray(mel, dtype=np.float32)

    def _run(self, samples: Samples) -> TurnVerdict:
        started = time.perf_counter()
        try:
            features = self._features(samples)
            outputs = self._session.run(None, {INPUT_NAME: features[np.newaxis]})
            probability = float(np.asarray(outputs[0]).reshape(-1)[0])
        except Exception as exc:
            raise TurnJudgeError(f"Smart Turn failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.last_judge_s = time.perf_counter() - started
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise TurnJudgeError(f"Smart Turn gave {probability}, not a probability")
        self.runs += 1
        return TurnVerdict.of(probability, self.threshold)


def _check_contract(session: Any, path: Path) -> None:
    """The model must take ``[batch, 80, 800]`` features and give ``[batch, 1]``:
    another model under the same name would be read wrongly, not fail."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}"
        )
    given, answer = inputs[0], outputs[0]
    if given.name != INPUT_NAME or list(given.shape)[1:] != [N_MELS, N_FRAMES]:
        raise ModelLoadError(
            f"{path}: expected input {INPUT_NAME} [batch, {N_MELS}, {N_FRAMES}], "
            f"got {given.name} {given.shape}"
        )
    if list(answer.shape)[1:] != [1]:
        raise ModelLoadError(f"{path}: expected output [batch, 1], got {answer.shape}")


__all__ = [
    "DEFAULT_THRESHOLD",
    "MODEL_FILE",
    "N_FRAMES",
    "N_MELS",
    "WINDOW_SAMPLES",
    "SmartTurnJudge",
    "model_path",
    "normalize",
    "window",
]
