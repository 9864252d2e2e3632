"""A safe arithmetic evaluator for the calculator tool, sans-IO.

The expression comes from a language model, so it is untrusted text. It is
parsed with :mod:`ast` (never ``eval``) and only these nodes are walked:
numbers (int and float literals, not bool or complex), ``+ - * / // % **``
and unary ``+ -``; parentheses are the parser's. A name, a call, an
attribute, a subscript, a string, a comparison: each is refused by name.

Every step is bounded before it is computed, so no input can make it spend
long or grow large: the text (:data:`MAX_EXPRESSION_CHARS`), the nodes
(:data:`MAX_NODES`), the size of an integer result in bits
(:data:`MAX_INT_BITS`, checked from the operands' sizes *before* a
multiplication or a power) and the exponent (:data:`MAX_EXPONENT`). A float
that overflows, and a division by zero, are errors too.

Spoken conveniences: ``x`` and the multiplication sign multiply, ``÷`` divides, ``^`` is a
power (a model means that, not Python's exclusive or), and thousands
separators (``1,234``) are read as one number.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Final

MAX_EXPRESSION_CHARS: Final = 200
MAX_NODES: Final = 64
#: An integer result (or operand) larger than this many bits is refused:
#: about 1200 decimal digits, more than anyone listens to.
MAX_INT_BITS: Final = 4096
#: Larger exponents are refused whatever the base (``1 ** 10**9`` is
#: harmless, but a bound that depends on nothing is easier to trust).
MAX_EXPONENT: Final = 10_000

_THOUSANDS: Final = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TIMES: Final = re.compile("(?<=[\\d)\\s])[x\u00d7](?=[\\s\\d(])")


class CalculationError(ValueError):
    """The expression is not plain arithmetic, too large, or undefined (1/0)."""


Number = int | float


def normalize(expression: str) -> str:
    """The expression with its spoken conveniences turned into Python's operators."""
    text = expression.strip().replace("÷", "/").replace("^", "**").replace("\u2212", "-")
    text = _TIMES.sub("*", text)
    return _THOUSANDS.sub("", text)


def evaluate(expression: str) -> Number:
    """The value of ``expression``; raises :class:`CalculationError`."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = normalize(expression)
    if not text:
        raise CalculationError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise CalculationError(f"the expression has more than {MAX_NODES} parts")
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is too large")
    return value


def format_number(value: Number) -> str:
    """A result as a model should read it: integers exact, floats to 12 digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


def calculate(expression: str) -> str:
    """:func:`evaluate`, formatted by :func:`format_number`."""
    return format_number(evaluate(expression))


def _check_int(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculationError("the result is too large")
    return value


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass: True is not a number a model should send.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalculationError(f"{type(value).__name__} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise CalculationError("the number is too large")  # 1e999 parses as inf
        return _check_int(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        operand = _eval(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _binary(node.op, _eval(node.left), _eval(node.right))
    raise CalculationError(
        f"{type(node).__name__} is not allowed (numbers and + - * / // % ** only)"
    )


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Add):
        return _check_int(left + right)
    if isinstance(op, ast.Sub):
        return _check_int(left - right)
    if isinstance(op, ast.Mult):
        # The product has at most the sum of the operands' bits: refuse first.
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1
        ):
            raise CalculationError("the result is too large")
        return _check_int(left * right)
    if isinstance(op, ast.Div):
        return left / right
    if isinstance(op, ast.FloorDiv):
        return left // right
    if isinstance(op, ast.Mod):
        return left % right
    if isinstance(op, ast.Pow):
        return _power(left, right)
    raise CalculationError(f"{type(op).__name__} is not allowed (numbers and + - * / // % ** only)")


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculationError(f"exponents above {MAX_EXPONENT} are not allowed")
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise CalculationError("the result is too large")
    if base == 0 and exponent < 0:
        raise ZeroDivisionError
    result = base**exponent
    if isinstance(result, complex):  # (-8) ** (1/3)
        raise CalculationError("the result is not a real number")
    return _check_int(result)


__all__ = [
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "MAX_INT_BITS",
    "MAX_NODES",
    "CalculationError",
    "calculate",
    "evaluate",
    "format_number",
]
