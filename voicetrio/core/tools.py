"""Tools the assistant can call: definitions, argument checks, dispatch; sans-IO.

A tool is a :class:`Tool`: a name, a description for the model, the JSON
schema of its parameters, and a function (sync or async) called with the
checked arguments as keyword arguments, returning text (or anything JSON can
encode) for the model to read. A :class:`Toolbox` holds a session's tools,
gives the OpenAI ``tools`` array (:meth:`Toolbox.definitions`) and runs a
call the model made (:meth:`Toolbox.run`).

Adding a tool::

    def weather(city: str) -> str:
        return f"It is sunny in {city}."

    WEATHER = Tool(
        name="get_weather",
        description="The weather now in a city.",
        parameters=object_schema({"city": {"type": "string"}}, required=["city"]),
        function=weather,
    )
    toolbox = Toolbox([*builtin_tools(...), WEATHER])

The schema is a JSON-schema *subset*, checked when the tool is made and
enforced on every call, so a function never sees arguments of the wrong
shape: an object whose properties are ``string``, ``number``, ``integer`` or
``boolean``, each with optional ``description``, ``enum``, ``minimum``,
``maximum``, ``maxLength``; ``required``; no other properties allowed.

A call never raises for the model's or the tool's mistakes: a bad name, bad
JSON, arguments out of schema, a :class:`ToolError` or any ``Exception`` from
the function become an ``{"error": ...}`` result, which the model reads and
can speak about ("I could not compute that"). Only cancellation (and
``BaseException``) goes through: a tool round is cancelled with its turn.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: What a model may name a tool (OpenAI's rule).
_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A tool's result longer than this is cut: it goes back into the prompt.
MAX_RESULT_CHARS: Final = 2000
#: Arguments longer than this are refused before they are parsed.
MAX_ARGUMENTS_CHARS: Final = 4000

_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}
_PROPERTY_KEYS: Final = frozenset(
    {"type", "description", "enum", "minimum", "maximum", "maxLength"}
)

ToolResult = str | int | float | bool | None | Mapping[str, Any] | Sequence[Any]
ToolFunction = Callable[..., ToolResult | Awaitable[ToolResult]]


class ToolError(Exception):
    """A tool's own refusal ("no such time zone"); its message goes to the model."""


class ToolSchemaError(ValueError):
    """A tool definition the registry cannot enforce (a programming error)."""


def object_schema(
    properties: Mapping[str, Mapping[str, Any]], *, required: Sequence[str] = ()
) -> dict[str, Any]:
    """The parameters schema of a tool: an object with these properties."""
    return {
        "type": "object",
        "properties": {name: dict(spec) for name, spec in properties.items()},
        "required": list(required),
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]
    function: ToolFunction = field(repr=False)
    #: Offered only when the user's words match (searched, any case); None:
    #: always. A small model offered tools answers worse and slower even
    #: where none is needed (bench/answers.py: Qwen2.5 1.5B 94 % right
    #: without tools, 78 % with; each call is another round), so the
    #: built-in tools come only with words that may need them.
    offered_when: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ToolSchemaError(f"tool name {self.name!r} must match {_NAME.pattern}")
        _check_schema(self.name, self.parameters)

    def definition(self) -> dict[str, Any]:
        """The entry of the OpenAI ``tools`` array."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: ``arguments`` is its raw JSON text."""

    id: str
    name: str
    arguments: str


class Toolbox:
    """A session's tools, by name."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ToolSchemaError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def for_words(self, words: str) -> Toolbox:
        """The tools to offer a reply to ``words`` (see :attr:`Tool.offered_when`)."""
        return Toolbox(
            tool
            for tool in self._tools.values()
            if tool.offered_when is None or tool.offered_when.search(words)
        )

    def definitions(self) -> list[dict[str, Any]]:
        return [tool.definition() for tool in self._tools.values()]

    def arguments(self, call: ToolCall) -> dict[str, Any]:
        """The call's arguments, checked against its tool's schema; raises ToolError."""
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            raise ToolError(f"there is no tool named {call.name!r} (tools: {known})")
        return check_arguments(tool.parameters, call.arguments)

    async def run(self, call: ToolCall) -> str:
        """The text the model reads back for ``call``: the tool's result, or
        ``{"error": ...}``. Never raises an ``Exception``."""
        try:
            arguments = self.arguments(call)
            result = self._tools[call.name].function(**arguments)
            if inspect.isawaitable(result):
                result = await result
        except ToolError as exc:
            return _error(str(exc))
        except Exception as exc:
            # A bug in a tool costs its answer, not the session.
            return _error(f"the tool failed: {type(exc).__name__}: {exc}")
        return result_text(result)


def result_text(result: ToolResult) -> str:
    """A tool's return value as the text of a ``tool`` message, bounded."""
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        text = text[: MAX_RESULT_CHARS - 3] + "..."
    return text


def _error(message: str) -> str:
    return json.dumps({"error": message[:MAX_RESULT_CHARS]}, ensure_ascii=False)


def check_arguments(schema: Mapping[str, Any], raw: str) -> dict[str, Any]:
    """``raw`` (JSON text from the model) checked against ``schema``; raises ToolError."""
    if len(raw) > MAX_ARGUMENTS_CHARS:
        raise ToolError(f"the arguments are longer than {MAX_ARGUMENTS_CHARS} characters")
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ToolError(f"the arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolError("the arguments must be a JSON object")
    properties: Mapping[str, Mapping[str, Any]] = schema.get("properties", {})
    for name in value:
        if name not in properties:
            raise ToolError(f"unknown argument {name!r} (arguments: {', '.join(properties)})")
    for name in schema.get("required", ()):
        if name not in value:
            raise ToolError(f"the argument {name!r} is required")
    return {name: _check_value(name, properties[name], arg) for name, arg in value.items()}


def _coerce(kind: str, value: object) -> object:
    # Small models write numbers as strings ("300") and 300.0 for integers:
    # taken as meant, since the schema says which was wanted.
    if kind in ("number", "integer") and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return value
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "number" and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _check_value(name: str, spec: Mapping[str, Any], value: object) -> object:
    kind = spec["type"]
    value = _coerce(kind, value)
    # bool is an int subclass: true is not a number of seconds.
    if isinstance(value, bool) and kind != "boolean":
        raise ToolError(f"the argument {name!r} must be a {kind}, not a boolean")
    if not isinstance(value, _TYPES[kind]):
        raise ToolError(f"the argument {name!r} must be a {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"the argument {name!r} is not a finite number")
    if "enum" in spec and value not in spec["enum"]:
        choices = ", ".join(str(c) for c in spec["enum"])
        raise ToolError(f"the argument {name!r} must be one of: {choices}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            raise ToolError(f"the argument {name!r} must be at least {spec['minimum']}")
        if "maximum" in spec and value > spec["maximum"]:
            raise ToolError(f"the argument {name!r} must be at most {spec['maximum']}")
    if isinstance(value, str) and "maxLength" in spec and len(value) > spec["maxLength"]:
        raise ToolError(f"the argument {name!r} is longer than {spec['maxLength']} characters")
    return value


def _check_schema(tool: str, schema: Mapping[str, Any]) -> None:
    def fail(why: str) -> ToolSchemaError:
        return ToolSchemaError(f"tool {tool!r}: {why}")

    if schema.get("type") != "object":
        raise fail("parameters must be a JSON schema of type 'object'")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise fail("'properties' must be an object")
    for name, spec in properties.items():
        if not isinstance(spec, Mapping) or spec.get("type") not in _TYPES:
            raise fail(f"property {name!r} needs a type among {', '.join(_TYPES)}")
        unknown = set(spec) - _PROPERTY_KEYS
        if unknown:
            raise fail(f"property {name!r} uses {', '.join(sorted(unknown))}, not supported")
    for name in schema.get("required", ()):
        if name not in properties:
            raise fail(f"required {name!r} is not a property")
    if schema.get("additionalProperties", False) is not False:
        raise fail("additionalProperties must be false")


__all__ = [
    "MAX_ARGUMENTS_CHARS",
    "MAX_RESULT_CHARS",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolFunction",
    "ToolResult",
    "ToolSchemaError",
    "Toolbox",
    "check_arguments",
    "object_schema",
    "result_text",
]
