"""The text turn judge: SmolLM2-135M reads the words so far and says whether
they end the user's turn (see :mod:`voicetrio.core.text_turn` for why and how).

It runs its own llama.cpp worker (:class:`EmbeddedLlmServer`), whatever model
answers the user: the judge needs the probability of one next token of a
ChatML prompt, which the smallest model gives in about 20 ms on one thread,
and a worker of its own never waits behind a reply being streamed. The worker
takes about 150 MB of memory and one slot per concurrent judgement.

A judgement that fails or takes longer than ``timeout_s`` raises
TurnJudgeError: the turn then ends by the audio judge or the fixed window,
as if there were no text judge.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

import httpx
import trio

from voicetrio.core import text_turn
from voicetrio.engines.base import TurnJudgeError
from voicetrio.engines.llm.embedded import EmbeddedLlmServer, find_smollm2_gguf

#: A judgement later than this is useless: the fixed window (700 ms) would
#: have ended the turn by then, or nearly.
TIMEOUT_S: Final = 0.4
#: Judgements at once: a couple of sessions falling silent together.
PARALLEL: Final = 2
#: Tokens of context per slot: a system line and one transcript.
CTX_PER_SLOT: Final = 256


class LlmTextJudge:
    """A :class:`~voicetrio.engines.base.TextTurnJudge` on a llama.cpp worker."""

    def __init__(self, *, model_path: Path | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self._model_path = model_path
        self.timeout_s = timeout_s
        self._server: EmbeddedLlmServer | None = None
        self._client: httpx.AsyncClient | None = None
        #: Duration of the latest judgement, in seconds (for the log and benches).
        self.last_s = 0.0

    @property
    def ready(self) -> bool:
        return self._server is not None and self._server.ready and self._client is not None

    async def start(self, services: trio.Nursery) -> None:
        path = self._model_path or find_smollm2_gguf()
        server = EmbeddedLlmServer(
            model_path=path, ctx_size=CTX_PER_SLOT * PARALLEL, threads=1, parallel=PARALLEL
        )
        base_url: str = await services.start(server.run)
        client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=httpx.Timeout(self.timeout_s),
        )
        services.start_soon(_close_on_cancel, client)
        self._server, self._client = server, client

    async def end_probability(self, text: str) -> float:
        client = self._client
        if client is None or not self.ready:
            raise TurnJudgeError("the text turn judge is not running")
        prompt = text_turn.prompt(text)
        if prompt is None:
            return 0.0  # no words: nothing has been said that could end a turn
        started = trio.current_time()
        body = {
            "prompt": prompt,
            "max_tokens": 1,
            "logprobs": text_turn.TOP_LOGPROBS,
            "temperature": 0.0,
        }
        try:
            with trio.fail_after(self.timeout_s):
                # base_url is the API root (".../v1").
                response = await client.post("completions", json=body)
            response.raise_for_status()
            top = response.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            probability = text_turn.end_probability(top)
        except trio.TooSlowError as exc:
            raise TurnJudgeError(f"the text turn judge took over {self.timeout_s} s") from exc
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise TurnJudgeError(f"the text turn judge failed: {exc!r}") from exc
        finally:
            self.last_s = trio.current_time() - started
        if math.isnan(probability):
            raise TurnJudgeError("the text turn judge gave no probability")
        return probability


async def _close_on_cancel(client: httpx.AsyncClient) -> None:
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


__all__ = ["PARALLEL", "TIMEOUT_S", "LlmTextJudge"]
