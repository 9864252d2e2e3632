"""voicetrio.server.front's own parts around Hypercorn: the app's ASGI lifespan and
the addresses it reports, over a real socket on port 0."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HyperConfig
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart_trio import QuartTrio

from voicetrio.server.front import Connections, LifespanError, serve_app

GUARD_S = 10


def hyper_config() -> HyperConfig:
    config = HyperConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    return config


async def test_the_app_starts_before_it_serves_and_stops_after(nursery: trio.Nursery) -> None:
    app = QuartTrio(__name__)
    seen: list[str] = []

    @app.before_serving
    async def starting() -> None:
        seen.append("startup")

    @app.after_serving
    async def stopping() -> None:
        seen.append("shutdown")

    @app.get("/")
    async def index() -> str:
        # Quart-Trio's app.nursery exists only inside the lifespan.
        return "nursery" if app.nursery is not None else "none"

    stop = trio.Event()
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_app(
            app, hyper_config(), Connections(), shutdown_trigger=stop.wait, task_status=task_status
        )
        done.set()

    binds: list[str] = await nursery.start(run)
    assert seen == ["startup"]
    assert binds[0].startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=binds[0], timeout=GUARD_S) as http:
        assert (await http.get("/")).text == "nursery"
    stop.set()
    with trio.fail_after(GUARD_S):
        await done.wait()
    assert seen == ["startup", "shutdown"]


async def test_a_failed_startup_stops_the_server_with_the_apps_reason() -> None:
    app = QuartTrio(__name__)

    @app.before_serving
    async def broken() -> None:
        raise RuntimeError("no engines today")

    with (
        pytest.RaisesGroup(
            pytest.RaisesExc(LifespanError, match="startup failed: no engines today"),
            flatten_subgroups=True,
        ),
        trio.fail_after(GUARD_S),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_app,
                    app,
                    hyper_config(),
                    Connections(),
                    shutdown_trigger=trio.sleep_forever,
                )
            )


async def test_an_app_whose_lifespan_raises_is_served_without_it(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("lifespan is not for me")  # what the ASGI spec allows
        assert scope["type"] == "http"
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    stop = trio.Event()
    with caplog.at_level(logging.ERROR, logger="voicetrio"):
        binds: list[str] = await nursery.start(
            partial(serve_app, app, hyper_config(), Connections(), shutdown_trigger=stop.wait)
        )
    async with httpx.AsyncClient(base_url=binds[0], timeout=GUARD_S) as http:
        assert (await http.get("/")).text == "ok"
    assert [r.getMessage() for r in caplog.records] == ["lifespan_error"]
    stop.set()


async def test_a_startup_that_does_not_answer_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await trio.sleep_forever()

    config = hyper_config()
    config.startup_timeout = 5
    with pytest.RaisesGroup(
        pytest.RaisesExc(LifespanError, match="startup took longer than 5 s"),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_app, app, config, Connections(), shutdown_trigger=trio.sleep_forever)
            )
