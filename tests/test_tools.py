"""The tool registry, the calculator, the clock and timers, and the assembly
of streamed tool calls, all sans-IO (issue 15, item 5)."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicetrio.core import calculator
from voicetrio.core.builtin_tools import (
    NoTimers,
    builtin_toolbox,
    calculator_tool,
    clock_tool,
    describe_time,
    timer_tools,
)
from voicetrio.core.calculator import CalculationError, calculate, evaluate
from voicetrio.core.timers import TimerBook, TimerEntry, say_duration
from voicetrio.core.tools import (
    Tool,
    Toolbox,
    ToolCall,
    ToolError,
    ToolSchemaError,
    check_arguments,
    object_schema,
)
from voicetrio.engines.llm.openai_compat import results_note
from voicetrio.engines.llm.sse import ChatChunk, SseParser, ToolCallDelta, parse_chat_chunk
from voicetrio.engines.llm.tool_calls import RoundAssembler, written_calls

DATA = Path(__file__).parent / "data"

# -- the calculator ------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1234 * 5678", "7006652"),
        ("1,234 x 5,678", "7006652"),
        ("3 \u00d7 4", "12"),
        ("8 \u00f7 2", "4"),
        ("2^10", "1024"),
        ("(3 + 4) * 2", "14"),
        ("10 / 4", "2.5"),
        ("7 // 2", "3"),
        ("17 % 5", "2"),
        ("-3 ** 2", "-9"),
        ("0.1 + 0.2", "0.3"),
        ("2 ** -1", "0.5"),
        ("15 / 100 * 80", "12"),
        ("1 / 3", "0.333333333333"),
    ],
)
def test_calculates(expression: str, value: str) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("__import__('os').system('true')", "Call is not allowed"),
        ("(1).__class__", "Attribute is not allowed"),
        ("x", "Name is not allowed"),
        ("[1, 2][0]", "Subscript is not allowed"),
        ("'a' * 3", "str is not a number"),
        ("True + 1", "bool is not a number"),
        ("1j * 2", "complex is not a number"),
        ("1 < 2", "Compare is not allowed"),
        ("1 if 1 else 2", "IfExp is not allowed"),
        ("1 << 100", "LShift is not allowed"),
        ("~1", "UnaryOp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("9 ** 9 ** 9", "exponents above"),
        ("2 ** 5000", "too large"),
        ("10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000", "too large"),
        ("1e999", "too large"),
        ("10.0 ** 400", "too large"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("", "empty"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 201, "longer than"),
        ("15% of 80", "not an arithmetic expression"),
    ],
)
def test_refuses(expression: str, why: str) -> None:
    with pytest.raises(CalculationError, match=why):
        evaluate(expression)


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("0123456789+-*/%().,^ x_abcdeijlmnoprstuv'\"[]<>=~|&:")),
        max_size=60,
    )
)
def test_any_text_is_a_number_or_a_calculation_error(text: str) -> None:
    """Fuzz: whatever the text, the evaluator returns a finite number or
    refuses with its own error, never runs a name, attribute or call."""
    try:
        value = evaluate(text)
    except CalculationError:
        return
    assert isinstance(value, int | float) and not isinstance(value, bool)
    # It evaluated, so the (normalized) text held only arithmetic nodes.
    tree = ast.parse(calculator.normalize(text), mode="eval")
    assert all(isinstance(node, _ALLOWED) for node in ast.walk(tree))


_numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
)
_ops = st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_ops, _numbers), min_size=1, max_size=6), _numbers)
def test_results_stay_bounded(steps: list[tuple[str, int | float]], first: int | float) -> None:
    """Chains of huge operands and powers: the result is within the bounds or refused."""
    text = f"({first!r})"
    for op, number in steps:
        text = f"({text} {op} ({number!r}))"
    if len(text) > calculator.MAX_EXPRESSION_CHARS:
        with pytest.raises(CalculationError):
            evaluate(text)
        return
    try:
        value = evaluate(text)
    except CalculationError:
        return
    if isinstance(value, int):
        assert value.bit_length() <= calculator.MAX_INT_BITS
    else:
        assert value == value and abs(value) != float("inf")


# -- the registry --------------------------------------------------------------


def _echo(**kwargs: object) -> str:
    return json.dumps(kwargs, sort_keys=True)


ECHO = Tool(
    name="echo",
    description="Says its arguments back.",
    parameters=object_schema(
        {
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "unit": {"type": "string", "enum": ["s", "min"]},
            "x": {"type": "number"},
            "flag": {"type": "boolean"},
        },
        required=["n"],
    ),
    function=_echo,
)


def test_definitions_are_openai_function_tools() -> None:
    box = Toolbox([ECHO])
    (definition,) = box.definitions()
    assert definition["type"] == "function"
    assert definition["function"]["name"] == "echo"
    assert definition["function"]["parameters"]["required"] == ["n"]
    assert definition["function"]["parameters"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ("{}", "'n' is required"),
        ('{"n": 0}', "at least 1"),
        ('{"n": 11}', "at most 10"),
        ('{"n": true}', "not a boolean"),
        ('{"n": 2.5}', "must be a integer"),
        ('{"n": 2, "unit": "h"}', "one of: s, min"),
        ('{"n": 2, "shell": "rm"}', "unknown argument 'shell'"),
        ('{"n": 2, "x": "NaN"}', "not a finite number"),
        ('{"n": 2, "flag": "yes"}', "must be a boolean"),
    ],
)
def test_arguments_out_of_schema_are_refused(raw: str, why: str) -> None:
    with pytest.raises(ToolError, match=why):
        check_arguments(ECHO.parameters, raw)


def test_numbers_written_as_strings_are_taken_as_meant() -> None:
    assert check_arguments(ECHO.parameters, '{"n": "3", "x": "2.5"}') == {"n": 3, "x": 2.5}
    assert check_arguments(ECHO.parameters, '{"n": 3.0}') == {"n": 3}


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "array"},
        {"type": "object", "properties": {"a": {"type": "object"}}},
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}},
        {"type": "object", "properties": {}, "required": ["a"]},
        {"type": "object", "properties": {}, "additionalProperties": True},
    ],
)
def test_schemas_the_registry_cannot_enforce_are_refused(parameters: dict[str, object]) -> None:
    with pytest.raises(ToolSchemaError):
        Tool(name="t", description="", parameters=parameters, function=_echo)


def test_bad_names_and_duplicates_are_refused() -> None:
    with pytest.raises(ToolSchemaError):
        Tool(name="has space", description="", parameters=object_schema({}), function=_echo)
    with pytest.raises(ToolSchemaError, match="two tools"):
        Toolbox([ECHO, ECHO])


async def test_run_returns_results_and_errors_never_raises() -> None:
    async def slow(n: int) -> dict[str, int]:
        return {"double": 2 * n}

    def broken(n: int) -> str:
        raise RuntimeError("disk on fire")

    box = Toolbox(
        [
            ECHO,
            Tool("double", "", object_schema({"n": {"type": "integer"}}), slow),
            Tool("broken", "", object_schema({"n": {"type": "integer"}}), broken),
        ]
    )
    assert await box.run(ToolCall("1", "echo", '{"n": 2}')) == '{"n": 2}'
    assert await box.run(ToolCall("2", "double", '{"n": 21}')) == '{"double": 42}'
    assert json.loads(await box.run(ToolCall("3", "nope", "{}"))) == {
        "error": "there is no tool named 'nope' (tools: echo, double, broken)"
    }
    assert json.loads(await box.run(ToolCall("4", "broken", '{"n": 1}'))) == {
        "error": "the tool failed: RuntimeError: disk on fire"
    }
    assert "at least 1" in await box.run(ToolCall("5", "echo", '{"n": -1}'))


# -- the built-in tools ----------------------------------------------------------

MOMENT = datetime(2026, 12, 2, 4, 30, 15, tzinfo=UTC)


def test_clock_says_the_time_in_the_local_zone_and_in_another() -> None:
    tool = clock_tool(lambda: MOMENT, ZoneInfo("Europe/Paris"), "Europe/Paris")
    assert tool.function() == "05:30 on Wednesday 2 December 2026 (Europe/Paris, UTC+01:00)"
    assert (
        tool.function(timezone="Asia/Tokyo")
        == "13:30 on Wednesday 2 December 2026 (Asia/Tokyo, UTC+09:00)"
    )
    with pytest.raises(ToolError, match="unknown time zone 'Mars/Olympus'"):
        tool.function(timezone="Mars/Olympus")
    with pytest.raises(ToolError, match="unknown time zone"):
        tool.function(timezone="../../etc/passwd")


def test_describe_time_in_utc() -> None:
    assert describe_time(MOMENT, "UTC") == "04:30 on Wednesday 2 December 2026 (UTC, UTC+00:00)"


async def test_calculator_tool_errors_are_results() -> None:
    box = Toolbox([calculator_tool()])
    assert await box.run(ToolCall("1", "calculate", '{"expression": "1234 * 5678"}')) == "7006652"
    assert json.loads(await box.run(ToolCall("2", "calculate", '{"expression": "1/0"}'))) == {
        "error": "division by zero"
    }


def test_timer_book() -> None:
    book = TimerBook(max_timers=2, max_duration_s=3600)
    first = book.add(5, "minutes", " tea ", now=100.0)
    assert first == TimerEntry(1, 300.0, "tea", 400.0)
    assert first.spoken() == "Your 5 minutes timer for tea is done."
    second = book.add(90, "seconds", "", now=100.0)
    assert second.spoken() == "Your 1 minute 30 seconds timer is done."
    with pytest.raises(ToolError, match="2 timers are already set"):
        book.add(1, "seconds", "", now=0)
    assert [t.id for t in book.pending] == [2, 1]
    assert book.remove(1) == first
    with pytest.raises(ToolError, match="there is no timer 1"):
        book.remove(1)
    for duration, unit in ((0.5, "seconds"), (2, "hours"), (1, "days")):
        with pytest.raises(ToolError):
            book.add(duration, unit, "", now=0)
    assert say_duration(3725) == "1 hour 2 minutes 5 seconds"


async def test_builtin_toolbox_without_a_session_refuses_timers() -> None:
    box = builtin_toolbox(lambda: MOMENT, NoTimers())
    assert box.names == ["get_time", "set_timer", "cancel_timer", "calculate"]
    result = await box.run(ToolCall("1", "set_timer", '{"duration": 5, "unit": "minutes"}'))
    assert json.loads(result) == {"error": "timers are not available here"}


# -- streamed tool calls: parsing and assembly ----------------------------------


def _chunks(raw: bytes) -> list[ChatChunk]:
    return [parse_chat_chunk(p) for p in SseParser().feed(raw)]


def _assemble(chunks: list[ChatChunk], tools: list[str]) -> tuple[str, str, list[ToolCall]]:
    """(text passed on during the round, text released at its end, calls)."""
    assembler = RoundAssembler(tools)
    passed = ""
    for chunk in chunks:
        if chunk.done:
            break
        passed += assembler.feed(chunk)
    held, calls = assembler.finish()
    return passed, held, calls


def test_a_call_written_as_text_by_qwen_through_llama_cpp() -> None:
    """Recorded: Qwen2.5-Coder-0.5B on llama.cpp (xllamacpp) writes the call
    without its template's <tool_call> tags, so it streams as content."""
    chunks = _chunks((DATA / "llamacpp_qwen05_written_call.sse").read_bytes())
    assert all(not c.tool_calls for c in chunks)
    passed, held, calls = _assemble(chunks, ["calculate", "get_time"])
    assert (passed, held) == ("", "")
    assert calls == [ToolCall("call_0", "calculate", '{"expression": "1234 * 5678"}')]
    # Without tools offered, the same stream is plain text passed on at once.
    passed, held, calls = _assemble(chunks, [])
    assert passed.startswith('{"name": "calculate"') and held == "" and calls == []


def _structured(index: int, **fields: str) -> bytes:
    function = {k: v for k, v in fields.items() if k in ("name", "arguments")}
    call: dict[str, object] = {"index": index, "type": "function", "function": function}
    if "id" in fields:
        call["id"] = fields["id"]
    payload = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


def test_structured_calls_are_joined_by_index_across_split_bytes() -> None:
    stream = b"".join(
        [
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}\n\n',
            _structured(0, id="call_a", name="get_time", arguments=""),
            _structured(1, id="call_b", name="calculate", arguments='{"expr'),
            _structured(0, arguments='{"timezone": "Asia/Tokyo"}'),
            _structured(1, arguments='ession": "2 + 2"}'),
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    parser = SseParser()
    chunks = [
        parse_chat_chunk(p) for i in range(len(stream)) for p in parser.feed(stream[i : i + 1])
    ]
    assert chunks[1].tool_calls == (ToolCallDelta(0, "call_a", "get_time", ""),)
    passed, held, calls = _assemble(chunks, ["get_time", "calculate"])
    assert (passed, held) == ("", "")
    assert calls == [
        ToolCall("call_a", "get_time", '{"timezone": "Asia/Tokyo"}'),
        ToolCall("call_b", "calculate", '{"expression": "2 + 2"}'),
    ]


def test_spoken_text_passes_at_once_and_json_like_text_is_released_whole() -> None:
    text = [ChatChunk(delta=d) for d in (" ", "It is", " five", " o'clock.")]
    passed, held, calls = _assemble(text, ["calculate"])
    assert (passed, held, calls) == (" It is five o'clock.", "", [])
    braces = [ChatChunk(delta=d) for d in ("{", "not a call}", " really")]
    passed, held, calls = _assemble(braces, ["calculate"])
    assert (passed, held, calls) == ("", "{not a call} really", [])


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('{"name": "calculate", "arguments": {"expression": "2*3"}}', 1),
        ('{{"name": "calculate", "arguments": {"expression": "2*3"}}}', 1),  # Qwen 1.5B's
        ('<tool_call>\n{"name": "calculate", "arguments": {"expression": "1"}}\n</tool_call>', 1),
        ('```json\n{"name": "calculate", "arguments": "{\\"expression\\": \\"1\\"}"}\n```', 1),
        ('{"name": "calculate", "arguments": {}} {"name": "get_time", "arguments": {}}', 2),
        ('{"name": "rm_rf", "arguments": {}}', None),  # not an offered tool
        ('{"name": "calculate", "arguments": {}} and then I said hello', None),
        ('{"name": "calculate", "arguments": [1]}', None),
        ('{"name": "calculate", "arguments": {', 1),  # closed: its arguments fail the schema
        ('{"name": "calculate", "arguments": {"expr', None),
        # Qwen 0.5B's: the last brace left out
        ('{"name": "calculate", "arguments": {"expression": "1"}', 1),
        ('{"name": "calculate", "arguments": {"expression": "1"', 1),
        ('{"name": "calculate", "arguments": {"expression": "1"} and so', None),
    ],
)
def test_written_calls(text: str, calls: int | None) -> None:
    found = written_calls(text, ["calculate", "get_time"])
    assert (None if found is None else len(found)) == calls


def test_too_many_calls_or_arguments_are_a_bad_stream() -> None:
    assembler = RoundAssembler(["calculate"])
    with pytest.raises(ValueError, match="more than 8 tool calls"):
        for index in range(9):
            assembler.feed(ChatChunk(tool_calls=(ToolCallDelta(index, f"c{index}", "calculate"),)))
    assembler = RoundAssembler(["calculate"])
    with pytest.raises(ValueError, match="longer than"):
        assembler.feed(ChatChunk(tool_calls=(ToolCallDelta(0, "c", "calculate", "x" * 9000),)))


@pytest.mark.parametrize(
    "payload",
    [
        '{"choices":[{"delta":{"tool_calls":{}}}]}',
        '{"choices":[{"delta":{"tool_calls":[1]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":5}}]}}]}',
    ],
)
def test_malformed_tool_call_chunks(payload: str) -> None:
    with pytest.raises(ValueError, match=r"tool.call"):
        parse_chat_chunk(payload)


def test_results_note_says_results_and_failures() -> None:
    calls = [
        ToolCall("a", "get_time", ""),
        ToolCall("b", "calculate", '{"expression": "1/0"}'),
    ]
    note = results_note(calls, ["05:30 on Wednesday", '{"error": "division by zero"}'])
    assert note == (
        "Tool results for the user's last message: get_time() gave: 05:30 on Wednesday; "
        'calculate(expression="1/0") failed: division by zero. '
        "Answer the user now in plain spoken words, using these results; no JSON."
    )


def test_a_call_after_spoken_words_is_held_from_its_first_character() -> None:
    """Qwen 1.5B (bench/tools.py): words, then a fenced call."""
    pieces = [
        "Here is the time",
        ".\n\n```",
        'json\n{"name": "get_time", ',
        '"arguments": {}}\n```',
    ]
    passed, held, calls = _assemble([ChatChunk(delta=d) for d in pieces], ["get_time"])
    assert (passed, held) == ("Here is the time.\n\n", "")
    assert calls == [ToolCall("call_0", "get_time", "{}")]
    # a brace in a sentence that is no call comes out at the end, whole
    pieces = ["It costs {about", " ten} euros."]
    assert _assemble([ChatChunk(delta=d) for d in pieces], ["get_time"]) == (
        "It costs ",
        "{about ten} euros.",
        [],
    )


# -- which tools a reply is offered ------------------------------------------------


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        ("What is 1234 times 5678?", ["calculate"]),
        ("what's 15 % of 80", ["calculate"]),
        ("What is the square root of 144?", ["calculate"]),
        ("What time is it in Tokyo?", ["get_time"]),
        ("What's the date?", ["get_time"]),
        ("Set a timer for five minutes.", ["set_timer", "cancel_timer"]),
        ("Cancel my timers", ["set_timer", "cancel_timer"]),
        ("Who wrote Romeo and Juliet?", []),
        ("Hello, how are you today?", []),
        ("How many times have you been to Paris?", []),
    ],
)
def test_a_reply_is_offered_the_tools_its_words_may_need(words: str, offered: list[str]) -> None:
    box = Toolbox(
        [clock_tool(lambda: datetime.now(UTC)), *timer_tools(NoTimers()), calculator_tool()]
    )
    assert box.for_words(words).names == offered


def test_a_tool_without_words_is_always_offered() -> None:
    always = Tool("weather", "The weather.", object_schema({}), lambda: "sunny")
    assert Toolbox([always]).for_words("anything at all").names == ["weather"]
