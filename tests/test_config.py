"""Config: environment names, bounds, one clear line for a bad setting."""

from __future__ import annotations

import pytest

from voicetrio.cli import main
from voicetrio.config import Config, ConfigError, from_env


def test_defaults_are_valid_and_match_the_seed_names() -> None:
    c = from_env({})
    assert c == Config()
    assert (c.vad_silence_ms, c.max_utterance_ms, c.max_pending_phrases) == (700, 30_000, 5)
    assert c.llm_first_token_timeout_s == 5.0


def test_environment_is_read_with_types() -> None:
    c = from_env(
        {
            "STREAM_VAD_SILENCE_MS": "900",
            "STREAM_PARTIAL_INTERVAL_MS": "250",
            "STREAM_LEAN": "true",
            "STREAM_BARGE_IN": "off",
            "STREAM_LLM_TIMEOUT_S": "8",
            "OPENAI_API_KEY": "sk-secret",
            "OPENAI_TEMPERATURE": "0.2",
            "OPENAI_MODEL": "m",
            "UNRELATED": "x",
        }
    )
    assert (c.vad_silence_ms, c.partial_interval_ms, c.lean, c.barge_in) == (900, 250, True, False)
    assert (c.llm_timeout_s, c.llm_first_token_timeout_s) == (8.0, 4.0)
    assert (c.openai_api_key, c.openai_temperature, c.openai_model) == ("sk-secret", 0.2, "m")


def test_overrides_win_and_none_means_unset() -> None:
    c = from_env({"STREAM_PORT": "9000", "STREAM_LEAN": "1"}, port=0, lean=None)
    assert (c.port, c.lean) == (0, True)


@pytest.mark.parametrize(
    ("env", "setting", "problem"),
    [
        ({"STREAM_PARTIAL_INTERVAL_MS": "249"}, "STREAM_PARTIAL_INTERVAL_MS", "249 is outside 250..3000"),
        ({"STREAM_PARTIAL_INTERVAL_MS": "3001"}, "STREAM_PARTIAL_INTERVAL_MS", "3001 is outside 250..3000"),
        ({"STREAM_VAD_SILENCE_MS": "200"}, "STREAM_VAD_SILENCE_MS", "200 is outside 300..2000"),
        ({"STREAM_MAX_UTTERANCE_MS": "120001"}, "STREAM_MAX_UTTERANCE_MS", "120001 is outside 1000..120000"),
        ({"STREAM_VAD_SILENCE_MS": "soon"}, "STREAM_VAD_SILENCE_MS", "expected an integer, got 'soon'"),
        ({"STREAM_LEAN": "maybe"}, "STREAM_LEAN", "expected true or false, got 'maybe'"),
        ({"OPENAI_TEMPERATURE": "nan"}, "OPENAI_TEMPERATURE", "expected a finite number, got 'nan'"),
        ({"STREAM_ENGINES": "gpu"}, "STREAM_ENGINES", "'gpu' is not one of fake, real"),
        ({"OPENAI_BASE_URL": "localhost:8080"}, "OPENAI_BASE_URL", "must start with http:// or https://"),
    ],
)
def test_invalid_settings_name_themselves(env: dict[str, str], setting: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    assert info.value.setting == setting
    assert str(info.value) == f"invalid setting {setting}: {problem}"


def test_public_dict_leaves_secrets_out() -> None:
    c = from_env({"OPENAI_API_KEY": "sk-secret-123"})
    public = c.public_dict()
    assert "openai_api_key" not in public
    assert "sk-secret-123" not in repr(public) and "sk-secret-123" not in repr(c)
    assert public["vad_silence_ms"] == 700 and public["enabled"] is True


def test_cli_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_VAD_SILENCE_MS", "5")
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err == "voicetrio: invalid setting STREAM_VAD_SILENCE_MS: 5 is outside 300..2000\n"
