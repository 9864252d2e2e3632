"""Typed reads of a client event's JSON, refusing with the offending path.

Every read names the parameter by its full path (``session.audio.input.format``),
which is what the API's ``error.param`` says, and the refusal carries the
client's event id. Unknown keys are not refused: a client that sends a field
voicetrio does not know (a newer API's) keeps working, and ``docs/realtime.md``
lists what is accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from voicetrio.wire.realtime.errors import INVALID_TYPE, INVALID_VALUE, MISSING_PARAMETER, Refusal

JsonDict = dict[str, Any]


class Fields:
    """One JSON object of a client event, read field by field."""

    def __init__(self, value: JsonDict, path: str, event_id: str | None) -> None:
        self.value = value
        self.path = path
        self.event_id = event_id

    def param(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def __contains__(self, name: str) -> bool:
        return name in self.value

    def refuse(self, name: str, message: str, code: str = INVALID_VALUE) -> Refusal:
        return Refusal(code, message, param=self.param(name), event_id=self.event_id)

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.value:
            if required:
                raise Refusal(
                    MISSING_PARAMETER,
                    f"Missing required parameter: '{self.param(name)}'.",
                    param=self.param(name),
                    event_id=self.event_id,
                )
            return None
        return self.value[name]

    def _wrong(self, name: str, expected: str, got: Any) -> Refusal:
        return self.refuse(
            name,
            f"Invalid type for '{self.param(name)}': expected {expected}, "
            f"but got {type(got).__name__} instead.",
            INVALID_TYPE,
        )

    def text(self, name: str, *, required: bool = False, nullable: bool = False) -> str | None:
        value = self._get(name, required)
        if value is None and (nullable or not required):
            return None
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        return value

    def need_text(self, name: str) -> str:
        """A required string."""
        value = self.text(name, required=True)
        assert value is not None
        return value

    def need_integer(self, name: str, *, minimum: int | None = None) -> int:
        """A required integer."""
        value = self.integer(name, required=True, minimum=minimum)
        assert value is not None
        return value

    def integer(
        self, name: str, *, required: bool = False, minimum: int | None = None
    ) -> int | None:
        value = self._get(name, required)
        if value is None and not required:
            return None
        # bool is an int subclass; true is not a number of milliseconds.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(name, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.refuse(name, f"'{self.param(name)}' must be at least {minimum}.")
        return value

    def number(self, name: str, *, low: float, high: float) -> float | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong(name, "a number", value)
        if not low <= value <= high:
            raise self.refuse(name, f"'{self.param(name)}' must be between {low:g} and {high:g}.")
        return float(value)

    def flag(self, name: str) -> bool | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._wrong(name, "a boolean", value)
        return value

    def obj(self, name: str, *, required: bool = False) -> Fields | None:
        """The nested object ``name``; None when absent or null."""
        value = self._get(name, required)
        if value is None:
            if required:
                raise self._wrong(name, "an object", value)
            return None
        if not isinstance(value, dict):
            raise self._wrong(name, "an object", value)
        return Fields(value, self.param(name), self.event_id)

    def objects(self, name: str) -> list[Fields]:
        """The list of objects ``name``; empty when absent."""
        value = self._get(name, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(name, "an array", value)
        out = []
        for i, element in enumerate(value):
            if not isinstance(element, dict):
                raise self._wrong(f"{name}[{i}]", "an object", element)
            out.append(Fields(element, f"{self.param(name)}[{i}]", self.event_id))
        return out

    def strings(self, name: str) -> list[str] | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, "an array of strings", value)
        return list(value)

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is not None and value not in choices:
            raise self.refuse(
                name,
                f"Invalid value: '{value[:60]}'. Supported values are: "
                + ", ".join(f"'{c}'" for c in choices)
                + ".",
            )
        return value


__all__ = ["Fields", "JsonDict"]
