"""Turn judges: Smart Turn v3.2 on its real model (input contract, verdicts on
spoken audio, one run at a time) and the scripted judge of exact tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trio
import trio.testing

from tests.speech import say
from voicetrio.core.audio import silence, tone
from voicetrio.core.turn_policy import TurnVerdict
from voicetrio.engines.base import ModelLoadError, TurnJudge, TurnJudgeError
from voicetrio.engines.turn import smart_turn
from voicetrio.engines.turn.scripted import ScriptedTurnJudge, always, by_words
from voicetrio.engines.turn.smart_turn import (
    N_FRAMES,
    N_MELS,
    WINDOW_SAMPLES,
    SmartTurnJudge,
    model_path,
    normalize,
    window,
)

# mypy checks each class against the Protocol the stages will use.
JUDGES: tuple[type[TurnJudge], ...] = (SmartTurnJudge, ScriptedTurnJudge)


@pytest.fixture(scope="module")
def judge() -> SmartTurnJudge:
    try:
        path = model_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    loaded = SmartTurnJudge(path)
    loaded.load_sync()
    return loaded


# ------------------------------------------------------------ finding the model


def test_the_model_is_found_in_the_pipecat_wheel_without_importing_it(tmp_path: Path) -> None:
    data = tmp_path / "pipecat" / "audio" / "turn" / "smart_turn" / "data"
    data.mkdir(parents=True)
    (data / smart_turn.MODEL_FILE).write_bytes(b"onnx")
    assert model_path(lambda name: tmp_path / name) == data / smart_turn.MODEL_FILE
    with pytest.raises(ModelLoadError, match="pip install --no-deps pipecat-ai"):
        model_path(lambda name: None)
    with pytest.raises(ModelLoadError, match=r"has no smart-turn-v3\.2-cpu\.onnx"):
        model_path(lambda name: tmp_path / "elsewhere")


def test_a_model_that_is_not_an_onnx_graph_fails_to_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot open the Smart Turn model"):
        SmartTurnJudge(bad).load_sync()


def test_a_model_with_another_contract_is_refused() -> None:
    def session(inputs: list[tuple[str, list[object]]], outputs: list[list[object]]) -> object:
        return SimpleNamespace(
            get_inputs=lambda: [SimpleNamespace(name=n, shape=s) for n, s in inputs],
            get_outputs=lambda: [SimpleNamespace(name="logits", shape=s) for s in outputs],
        )

    path = Path("m.onnx")
    smart_turn._check_contract(session([("input_features", ["b", 80, 800])], [["b", 1]]), path)
    for inputs, outputs, message in [
        ([("input_features", ["b", 128, 800])], [["b", 1]], "expected input"),
        ([("audio", ["b", 80, 800])], [["b", 1]], "expected input"),
        ([("input_features", ["b", 80, 800])], [["b", 2]], "expected output"),
        ([], [["b", 1]], "one input and one output"),
    ]:
        with pytest.raises(ModelLoadError, match=message):
            smart_turn._check_contract(session(inputs, outputs), path)


def test_the_threshold_is_a_probability_strictly_inside_0_1() -> None:
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            SmartTurnJudge(threshold=bad)


# ------------------------------------------------------------- the input side


def test_the_window_is_the_last_8_s_padded_at_the_start() -> None:
    short = window(tone(500, 300.0))
    assert short.shape == (WINDOW_SAMPLES,) and short.dtype == np.float32
    assert not short[: WINDOW_SAMPLES - 8000].any()  # the padding comes first
    assert short[-8000:].any()
    # 10 s of audio: the first 2 s are not heard.
    marked = silence(2000) + tone(8000, 300.0)
    assert np.array_equal(window(marked), window(tone(8000, 300.0)))
    assert not window(b"").any()
    with pytest.raises(TurnJudgeError, match="whole 16-bit samples"):
        window(b"\x00\x01\x02")


def test_normalization_is_over_the_whole_window() -> None:
    samples = window(tone(3000, 300.0))
    scaled = normalize(samples)
    assert abs(float(scaled.mean())) < 1e-5
    assert abs(float(scaled.std()) - 1.0) < 1e-3
    # A silent window stays silence, not noise blown up by the variance guard.
    assert not normalize(window(b"")).any()


def test_features_are_80_mel_bins_by_800_hops_in_whisper_scale(judge: SmartTurnJudge) -> None:
    features = judge.features(say("What is the capital of France?"))
    assert features.shape == (N_MELS, N_FRAMES) and features.dtype == np.float32
    # Whisper's scale: (log10 + 4) / 4, floored 8 log10 units under the peak.
    assert float(features.max() - features.min()) <= 2.0 + 1e-6


def test_one_run_uses_one_thread(judge: SmartTurnJudge) -> None:
    options = judge._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


# ------------------------------------------------------------------ verdicts


def test_a_finished_question_sounds_complete_and_a_cut_phrase_does_not(
    judge: SmartTurnJudge,
) -> None:
    # espeak-ng is deterministic: these are the same audio on every run.
    complete = judge.judge(say("What is the capital of France?") + silence(200))
    cut = judge.judge(say("I would like to") + silence(200))
    assert complete.complete and complete.probability > 0.8
    assert not cut.complete and cut.probability < 0.2
    assert judge.runs >= 2 and 0 < judge.last_judge_s < 5


def test_the_verdict_follows_the_threshold(judge: SmartTurnJudge) -> None:
    strict = SmartTurnJudge(judge.path, threshold=0.999)
    strict.load_sync()
    verdict = strict.judge(say("What is the capital of France?"))
    assert verdict == TurnVerdict(verdict.probability, False)


def test_a_judge_not_loaded_says_so() -> None:
    unloaded = SmartTurnJudge()
    assert not unloaded.ready
    with pytest.raises(TurnJudgeError, match="not loaded"):
        unloaded.judge(b"")
    with pytest.raises(TurnJudgeError, match="not loaded"):
        unloaded.features(b"")

    async def main() -> None:
        with pytest.raises(TurnJudgeError, match="not loaded"):
            await unloaded.judge_async(b"")

    trio.run(main)


def test_runs_from_trio_go_to_a_thread_one_at_a_time(
    judge: SmartTurnJudge, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = 0
    most = 0
    real = SmartTurnJudge.judge

    def counted(self: SmartTurnJudge, pcm: bytes) -> TurnVerdict:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            return real(self, pcm)
        finally:
            inside -= 1

    monkeypatch.setattr(SmartTurnJudge, "judge", counted)
    pcm = say("Please turn off the lights in the kitchen before you go to bed.")
    verdicts: list[TurnVerdict] = []

    async def main() -> None:
        async def one() -> None:
            verdicts.append(await judge.judge_async(pcm))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)

    trio.run(main)
    assert len(verdicts) == 3 and len(set(verdicts)) == 1
    assert most == 1


def test_load_is_idempotent_and_async(judge: SmartTurnJudge) -> None:
    fresh = SmartTurnJudge(judge.path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fresh.load)
            nursery.start_soon(fresh.load)

    trio.run(main)
    assert fresh.ready and fresh.runs == 1  # one warm-up run: loaded once


# ------------------------------------------------------------ scripted judge


def test_the_scripted_judge_answers_its_script_then_its_rule() -> None:
    scripted = ScriptedTurnJudge([0.9, TurnVerdict(0.3, True), 0.2, None], rule=always(0.6))
    assert scripted.judge(b"\x00\x00") == TurnVerdict(0.9, True)
    assert scripted.judge(b"") == TurnVerdict(0.3, True)  # a verdict is taken as it is
    assert scripted.judge(b"") == TurnVerdict(0.2, False)
    with pytest.raises(TurnJudgeError, match="scripted failure"):
        scripted.judge(b"")
    assert scripted.judge(b"") == TurnVerdict(0.6, True)
    assert scripted.calls == [2, 0, 0, 0, 0]
    assert ScriptedTurnJudge().judge(b"") == TurnVerdict(1.0, True)


def test_the_scripted_judge_can_read_the_words() -> None:
    def transcribe(pcm: bytes) -> str:
        return "take me to the" if len(pcm) < 100 else "take me home"

    scripted = ScriptedTurnJudge(rule=by_words(transcribe, lambda text: text.endswith("home")))
    assert not scripted.judge(bytes(10)).complete
    assert scripted.judge(bytes(200)).complete


def test_the_scripted_judge_takes_exactly_its_delay() -> None:
    scripted = ScriptedTurnJudge([0.1], delay_s=0.12)
    landed: list[float] = []

    async def main() -> None:
        verdict = await scripted.judge_async(b"")
        landed.append(trio.current_time())
        assert verdict == TurnVerdict(0.1, False)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert landed == [pytest.approx(0.12, abs=1e-9)]


def test_the_scripted_judge_plays_a_judge_not_ready_or_not_loadable() -> None:
    scripted = ScriptedTurnJudge(ready=False)
    with pytest.raises(TurnJudgeError, match="not ready"):
        scripted.judge(b"")
    broken = ScriptedTurnJudge(ready=False, load_error="no model here")

    async def main() -> None:
        await scripted.load()
        with pytest.raises(ModelLoadError, match="no model here"):
            await broken.load()

    trio.run(main)
    assert scripted.ready and not broken.ready
    with pytest.raises(ValueError, match="delay_s"):
        ScriptedTurnJudge(delay_s=-1)
