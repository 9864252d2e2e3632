"""The Hypercorn internals voicetrio uses (voicetrio.server.hypercorn_internals) are
still there, in the shape we use them.

When Hypercorn is upgraded, a failure here names the internal that changed,
what voicetrio uses it for, and the version found: adapt voicetrio.server.front
(or voicetrio.server.app) and the list before lifting the version pin. What
Hypercorn does with them (the shielded writes, the close inside the last
send) is checked by behaviour: tests/test_keepalive.py and
tests/reliability/test_slow_reader.py.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from typing import Any

import pytest
from hypercorn.config import Config as HyperConfig

from voicetrio.server.hypercorn_internals import (
    HYPERCORN_CONFIG_OPTIONS,
    HYPERCORN_INTERNALS,
    Internal,
)

HYPERCORN = version("hypercorn")


def broken(internal: Internal, problem: str) -> str:
    return (
        f"Hypercorn {HYPERCORN}: {internal.path} {problem}. voicetrio relies on it: "
        f"{internal.used_for}. See voicetrio/server/hypercorn_internals.py."
    )


def resolve(internal: Internal) -> Any:
    try:
        found: Any = importlib.import_module(internal.module)
    except ImportError as exc:
        pytest.fail(broken(internal, f"cannot be imported ({exc})"))
    for part in internal.name.split("."):
        if not hasattr(found, part):
            pytest.fail(broken(internal, "no longer exists"))
        found = getattr(found, part)
    return found


def parameters(obj: Any) -> list[str]:
    names = list(inspect.signature(obj).parameters)
    # A method looked up on its class still lists self.
    return names[1:] if names[:1] == ["self"] else names


@pytest.mark.parametrize("internal", HYPERCORN_INTERNALS, ids=lambda i: i.path)
def test_each_internal_we_use_is_still_there(internal: Internal) -> None:
    obj = resolve(internal)
    if internal.parameters:
        target = getattr(obj, internal.call) if internal.call else obj
        found = parameters(target)
        if found[: len(internal.parameters)] != list(internal.parameters):
            expected = ", ".join(internal.parameters)
            pytest.fail(broken(internal, f"now takes ({', '.join(found)}), not ({expected})"))
    for name in internal.attributes:
        if not hasattr(obj, name):
            pytest.fail(broken(internal, f"has no attribute {name!r} any more"))
    if internal.instance_attributes:
        # Each of these is made from plain values (None for every parameter).
        required = [
            p
            for p in inspect.signature(obj).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        instance = obj(*[None] * len(required))
        for name in internal.instance_attributes:
            if not hasattr(instance, name):
                pytest.fail(broken(internal, f"makes objects without {name!r}"))
    if internal.exception and not (inspect.isclass(obj) and issubclass(obj, Exception)):
        pytest.fail(broken(internal, "is no longer an Exception class"))


def test_the_worker_context_still_signals_termination_as_front_does() -> None:
    internal = next(i for i in HYPERCORN_INTERNALS if i.name == "WorkerContext")
    context = resolve(internal)(None)
    # front.serve_app: `await context.terminated.set()` at shutdown.
    if not inspect.iscoroutinefunction(context.terminated.set):
        pytest.fail(broken(internal, "has a terminated event whose set() is not awaitable"))


def test_the_tcp_server_is_still_awaited_to_serve_a_connection() -> None:
    internal = next(i for i in HYPERCORN_INTERNALS if i.name == "TCPServer")
    server = resolve(internal)
    if not inspect.iscoroutinefunction(server.run):
        pytest.fail(broken(internal, "has no coroutine run() that its __await__ awaits"))


@pytest.mark.parametrize("option", HYPERCORN_CONFIG_OPTIONS)
def test_each_config_option_we_set_is_still_an_option(option: str) -> None:
    # Setting a renamed option would silently add a plain attribute: read it
    # off a fresh Config, where only real options have a value.
    if not hasattr(HyperConfig(), option):
        pytest.fail(
            f"Hypercorn {HYPERCORN}: Config has no option {option!r} any more, which "
            "voicetrio.server.app or voicetrio.server.front sets or reads. "
            "See voicetrio/server/hypercorn_internals.py."
        )


def test_the_list_is_the_whole_list() -> None:
    """Outside voicetrio.server.hypercorn_internals, voicetrio imports from Hypercorn
    only its config, its ASGI types and (in server.py) what the list names."""
    import ast
    from pathlib import Path

    import voicetrio

    allowed = {"hypercorn.config", "hypercorn.typing"}
    listed = {(i.module, i.name.split(".")[0]) for i in HYPERCORN_INTERNALS}
    root = Path(voicetrio.__file__).parent
    stray = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "hypercorn_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hypercorn"):
                module = node.module or ""
                for alias in node.names:
                    if module not in allowed and (module, alias.name) not in listed:
                        stray.append(f"{path.relative_to(root)}: {module}.{alias.name}")
            elif isinstance(node, ast.Import):
                stray += [
                    f"{path.relative_to(root)}: {a.name}"
                    for a in node.names
                    if a.name.startswith("hypercorn") and a.name not in allowed
                ]
    assert not stray, (
        "Hypercorn internals used outside voicetrio/server/hypercorn_internals.py's list "
        "(add them there, with what we rely on): " + ", ".join(stray)
    )
