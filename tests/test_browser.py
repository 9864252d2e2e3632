"""The page in a real browser: headless Chromium, a spoken WAV as its microphone.

Chromium's fake capture device plays a WAV into getUserMedia, once
(``%noloop``), and the WAV ends in 6 s of silence: nothing is said again
while the reply plays, so no barge-in can happen (the barge-in test loops
its file on purpose). The page's AudioWorklet resamples the context's
44.1/48 kHz to 16 kHz, the real server (Whisper tiny.en, webrtcvad and the
real set's reply engines) answers, and the page plays the reply's speech.
The socket and barge-in tests run on the deterministic engines. The tests
wait on ``window.voicetrio`` with ``wait_for_function``; they never sleep.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.browser_helpers import (
    ServerThread,
    chromium_page,
    require_browser,
    running_server,
    save_screenshot,
)
from tests.speech import SENTENCES, normalize, say
from voicetrio.config import Config
from voicetrio.core.audio import silence, write_wav

if TYPE_CHECKING:
    from playwright.sync_api import Page

SENTENCE: Final = SENTENCES[1]  # "What is the weather going to be like in London tomorrow morning?"
KEY_WORDS: Final = {"weather", "london", "tomorrow"}
TURN_TIMEOUT_MS: Final = 40_000


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.5 s of silence, the question, 6 s of silence: 16 kHz mono."""
    pcm = silence(500) + say(SENTENCE) + silence(6000)
    path = tmp_path_factory.mktemp("microphone") / "question.wav"
    write_wav(path, pcm, 16000)
    return path


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short utterance for the deterministic engines, which hear any speech."""
    path = tmp_path_factory.mktemp("microphone") / "hello.wav"
    write_wav(path, silence(300) + say("Hello there.") + silence(6000), 16000)
    return path


@pytest.fixture(scope="module")
def full_server() -> Iterator[ServerThread]:
    require_browser()
    with running_server(Config(port=0, engines="real")) as server:
        yield server


@pytest.fixture(scope="module")
def lean_server() -> Iterator[ServerThread]:
    require_browser()
    with running_server(Config(port=0, engines="real", lean=True)) as server:
        yield server


def wait(page: Page, condition: str, timeout_ms: float = 20_000) -> None:
    """Waits until ``condition`` (JS, with ``v`` bound to window.voicetrio) holds."""
    page.wait_for_function(
        f"() => {{ const v = window.voicetrio; return Boolean(v && ({condition})); }}",
        timeout=timeout_ms,
    )


def state(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = page.evaluate(
        """() => {
            const v = window.voicetrio;
            return {state: v.state, lean: v.lean, playing: v.playing, queued: v.queued,
                    chunksPlayed: v.chunksPlayed, chunksReceived: v.chunksReceived,
                    inputRate: v.inputRate, framesSent: v.framesSent, errors: v.errors,
                    partials: v.partials, silenced: v.silenced,
                    notices: v.notices, reconnects: v.reconnects,
                    turns: v.turns.map(({t0, ...turn}) => turn)};
        }"""
    )
    return value


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    wait(page, "v.state === 'ready'")


def speak_and_wait_for_final(page: Page) -> dict[str, Any]:
    page.click("#start")
    wait(page, "v.state === 'listening'")
    wait(page, "v.turns.length >= 1", TURN_TIMEOUT_MS)
    final = page.inner_text("#final")
    assert set(normalize(final)) >= KEY_WORDS, final
    return state(page)


def assert_no_page_errors(errors: list[str]) -> None:
    assert errors == [], errors


def assert_one_timeline(schedule: list[dict[str, Any]], chunks: int) -> None:
    """Every chunk played in seq order; none overlaps the one before it, and
    one that arrived while the previous was still playing starts at its end."""
    assert len(schedule) == chunks
    for before, after in itertools.pairwise(schedule):
        assert after["seq"] >= before["seq"] or after["seq"] == 1  # 1: the next turn
        assert after["at"] >= before["end"] - 1e-9
        if after["queuedAt"] < before["end"] - 0.05:
            assert abs(after["at"] - before["end"]) < 1e-9, (before, after)


def test_a_spoken_question_gets_a_written_and_spoken_reply(
    full_server: ServerThread, spoken_wav: Path, tmp_path: Path
) -> None:
    with chromium_page(spoken_wav, tmp_path / "profile") as (page, errors):
        open_page(page, f"{full_server.base_url}/?audio=wav")
        assert page.inner_text("#mode") == "Voice assistant"
        assert page.is_visible("#reply")

        first = speak_and_wait_for_final(page)
        # The worklet did resample: the context runs at the device's rate.
        assert first["inputRate"] in (44100, 48000)
        assert first["framesSent"] > 0
        # Partials streamed while the question was spoken; the final replaced them.
        assert first["partials"] >= 1 and page.is_hidden("#partial")
        assert page.get_attribute("#meter", "data-live") == "true"
        wait(page, "v.chunksPlayed >= 1")
        page.click("#stop")
        wait(page, "v.turns[0].done", TURN_TIMEOUT_MS)

        final = state(page)
        (turn,) = final["turns"]
        assert turn["status"] == "done"
        assert turn["reply"].strip() and page.text_content("#reply") == turn["reply"]
        assert turn["chunks"] >= 1 and final["chunksPlayed"] >= 1
        assert page.text_content("#final") == turn["user"]
        # Both clocks in the latency panel: the page's and the server's metrics.
        for key in ("final_ms", "first_token_ms", "first_audio_ms", "heard_ms"):
            assert turn["client"][key] is not None and turn["client"][key] > 0, key
        for key in ("final_ms", "first_token_ms", "first_audio_ms"):
            assert turn["server"][key] is not None and turn["server"][key] > 0, key
        assert page.locator("#latency tbody tr").count() == 1
        assert_one_timeline(page.evaluate("window.voicetrio.schedule"), turn["chunks"])
        assert "barge_in" not in final["notices"]
        assert final["errors"] == []
        # The conversation lists the turn: the user's words and the reply.
        assert page.locator("#turns .turn").count() == 1
        assert page.text_content("#turns .bubble.user .text") == turn["user"]

        save_screenshot(page, tmp_path, "browser-full-turn.png")
        assert_no_page_errors(errors)


def test_the_player_keeps_seq_order_on_one_timeline(
    full_server: ServerThread, spoken_wav: Path, tmp_path: Path
) -> None:
    """The page's Player module alone, on a real AudioContext (whose clock
    stands still: nobody clicked, so autoplay keeps it suspended)."""
    with chromium_page(spoken_wav, tmp_path / "profile") as (page, errors):
        open_page(page, full_server.base_url)
        result: dict[str, Any] = page.evaluate(
            """async () => {
                const { Player } = await import('/static/player.js');
                const context = new AudioContext();
                const player = new Player(() => context);
                const audio = (ms, rate) => new Float32Array(Math.round(rate * ms / 1000)).fill(0.05);
                player.push(1, audio(200, 16000), 16000);
                player.push(2, audio(100, 16000), 16000); // before phrase 1 is done: waits
                const waiting = player.queued - player.active.size;
                player.push(1, audio(300, 22050), 22050);
                player.phraseDone(1);
                player.push(2, audio(100, 24000), 24000);
                player.phraseDone(2);
                player.newTurn(); // the next reply numbers its phrases from 1 again
                player.push(1, audio(50, 16000), 16000);
                const queued = player.queued;
                player.stop();
                return {waiting, queued, history: player.history, after: player.queued,
                        playing: player.playing};
            }"""
        )
        assert result["waiting"] == 1 and result["queued"] == 5
        assert result["after"] == 0 and result["playing"] is False
        history = result["history"]
        assert [h["seq"] for h in history] == [1, 1, 2, 2, 1]
        durations = [h["end"] - h["at"] for h in history]
        assert durations == pytest.approx([0.2, 0.3, 0.1, 0.1, 0.05], abs=1e-3)
        assert_one_timeline(history, 5)
        assert all(after["at"] == before["end"] for before, after in itertools.pairwise(history))
        assert_no_page_errors(errors)


def test_cancel_mid_reply_stops_playback_at_once(
    full_server: ServerThread, spoken_wav: Path, tmp_path: Path
) -> None:
    # Reply audio as binary pcm16 frames (the page's default).
    with chromium_page(spoken_wav, tmp_path / "profile") as (page, errors):
        open_page(page, full_server.base_url)
        speak_and_wait_for_final(page)
        wait(page, "v.chunksPlayed >= 1 && v.playing")

        page.click("#cancel")
        after = state(page)
        assert after["playing"] is False and after["queued"] == 0
        played = after["chunksPlayed"]
        # The server answers: the turn was cancelled, or it had already been
        # fully sent (then only playback had anything left to stop).
        wait(
            page,
            "v.errors.some((e) => e.code === 'CANCELLED') || v.notices.includes('nothing_to_cancel')",
        )
        page.click("#stop")
        wait(page, "v.state === 'ready'")
        settled = state(page)
        assert settled["playing"] is False and settled["queued"] == 0
        assert settled["chunksPlayed"] == played
        assert page.inner_text("#activity") != "Speaking…"
        assert_no_page_errors(errors)


def test_talking_over_the_reply_silences_it_at_once(tmp_path: Path) -> None:
    """Barge-in: the microphone file loops, so the question comes again while
    the reply is still being spoken; the server cancels the turn
    (``info barge_in``) and the page cuts the speech and drops its queue."""
    require_browser()
    pcm = silence(500) + say(SENTENCE) + silence(4000)
    wav = tmp_path / "question-again.wav"
    write_wav(wav, pcm, 16000)
    # The deterministic engines, with a reply slow enough to be talked over.
    config = Config(port=0, engines="fake", fake_llm_token_ms=200)
    with (
        running_server(config) as server,
        chromium_page(wav, tmp_path / "profile", loop_audio=True) as (page, errors),
    ):
        open_page(page, server.base_url)
        page.click("#start")
        wait(page, "v.chunksPlayed >= 1", TURN_TIMEOUT_MS)
        wait(page, "v.notices.includes('barge_in')", TURN_TIMEOUT_MS)
        cut = state(page)
        page.click("#stop")
        # The reply was playing when the server said barge_in, and it stopped.
        (silenced, *_) = cut["silenced"]
        assert silenced["reason"] == "barge_in" and silenced["wasPlaying"] is True
        assert cut["playing"] is False and cut["queued"] == 0
        assert cut["turns"][0]["status"] == "interrupted"
        assert_no_page_errors(errors)


def test_lean_mode_shows_transcripts_only(
    lean_server: ServerThread, spoken_wav: Path, tmp_path: Path
) -> None:
    with chromium_page(spoken_wav, tmp_path / "profile") as (page, errors):
        open_page(page, lean_server.base_url)
        wait(page, "v.lean === true")
        assert page.inner_text("#mode") == "Transcription only"
        assert not page.is_visible("#reply")

        speak_and_wait_for_final(page)
        wait(page, "v.turns[0].done", TURN_TIMEOUT_MS)
        page.click("#stop")
        wait(page, "v.state === 'ready'")

        final = state(page)
        (turn,) = final["turns"]
        assert turn["status"] == "transcribed" and turn["reply"] == ""
        assert turn["server"]["final_ms"] is not None
        assert final["chunksReceived"] == 0 and final["chunksPlayed"] == 0
        assert not page.is_visible("#reply")
        assert not page.is_visible("#turns .bubble.assistant")

        save_screenshot(page, tmp_path, "browser-lean-turn.png")
        assert_no_page_errors(errors)


def test_a_dropped_socket_silences_the_page_and_it_reconnects(
    short_wav: Path, tmp_path: Path
) -> None:
    require_browser()
    # The deterministic engines: this is about the socket, not the speech.
    config = Config(port=0, engines="fake", shutdown_grace_s=0.5)
    server = ServerThread(config).start()
    try:
        with chromium_page(short_wav, tmp_path / "profile") as (page, errors):
            open_page(page, server.base_url)
            page.click("#start")
            wait(page, "v.chunksPlayed >= 1 && v.playing", TURN_TIMEOUT_MS)

            port = server.port
            server.stop()
            wait(page, "v.state === 'reconnecting'")
            dropped = state(page)
            assert dropped["playing"] is False and dropped["queued"] == 0
            # The reply was still playing (about 5 s of speech) when the socket closed.
            (silenced,) = dropped["silenced"]
            assert silenced["reason"] == "disconnected" and silenced["wasPlaying"] is True
            assert "retrying" in page.inner_text("#status")
            assert page.is_disabled("#start")

            server = ServerThread(config.replace(port=port)).start()
            wait(page, "v.state === 'ready' && v.reconnects >= 1")
            assert page.is_enabled("#start")
            assert state(page)["playing"] is False
            # Push to talk on the new connection: hold Space, let go.
            page.keyboard.down("Space")
            wait(page, "v.state === 'listening'")
            page.keyboard.up("Space")
            wait(page, "v.state === 'ready' && v.notices.includes('no_speech')")
            # The browser reports each refused reconnect attempt itself.
            assert_no_page_errors([e for e in errors if "WebSocket connection" not in e])
    finally:
        server.stop()


def test_the_page_takes_a_token_for_a_guarded_server(short_wav: Path, tmp_path: Path) -> None:
    """With STREAM_AUTH_TOKENS set, the page opened as /?token=... reads the
    config with the header and opens the socket with the token in its query;
    the token is remembered for the next visit."""
    require_browser()
    config = Config(port=0, engines="fake", lean=True, auth_tokens="page-secret")
    with (
        running_server(config) as server,
        chromium_page(short_wav, tmp_path / "profile") as (page, errors),
    ):
        open_page(page, server.base_url + "/?token=page-secret")
        # Before any `start`, only the guarded /api/stream_config says "lean";
        # the page is ready when its socket opens, which may come first.
        wait(page, "v.lean === true")
        open_page(page, server.base_url + "/")  # remembered in this browser
        assert page.evaluate("() => localStorage.getItem('voicetrio.token')") == "page-secret"
        assert_no_page_errors(errors)
