"""How many talkers a server can serve, and whether it can take one more.

Sans-IO: figures in, decisions out. Every admitted session is a person who
may speak at any moment, so admission is not "is the box busy now?" (a burst
of quiet connections would all get in) but "would one more talker push the
ones we have past their latency target?". Two figures answer it:

- **Capacity in talkers**, from what a turn costs on this machine's engines,
  measured at start-up by a probe turn (:mod:`voicetrio.engines.probe`): the
  CPU its decodes, reply and speech took, over the seconds of conversation
  it makes (the question, the spoken answer and a pause). A long answer costs
  more CPU and keeps its listener busy longer too, so the ratio is steadier
  than either. The engines are kept at ``utilization`` of the cores so that
  queues stay short: ``capacity = cores * utilization / cpu_per_second``.
- **Live headroom**: how long urgent work waits now for the decoder and for
  the LLM. Past a limit the box is behind whatever the estimate says (a
  slower machine, a neighbour's load), and it refuses until it catches up.

:func:`load` folds both into one number for a balancer: 1.0 is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: Urgent decodes waiting longer than this mean the decoder is behind.
MAX_DECODE_WAIT_S: Final = 0.5
#: Confirmed replies waiting longer than this for the LLM mean it is behind.
MAX_LLM_WAIT_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class TurnCost:
    """One measured turn: CPU seconds, and the seconds of conversation it made."""

    cpu_s: float
    question_s: float
    answer_s: float

    def cpu_per_second(self, pause_s: float) -> float:
        """CPU a talker costs per second of conversation."""
        return self.cpu_s / (self.question_s + self.answer_s + pause_s)


@dataclass(frozen=True, slots=True)
class CapacityModel:
    cores: float
    #: Share of the cores the engines may be kept busy.
    utilization: float = 0.4
    #: Silence around a turn: before the question, and before the next one.
    pause_s: float = 1.5

    def __post_init__(self) -> None:
        if not self.cores > 0 or not 0 < self.utilization <= 1 or self.pause_s < 0:
            raise ValueError(f"invalid capacity model {self}")

    def talkers(self, cost: TurnCost) -> int:
        """Talkers the cores serve when turns cost like ``cost``; at least 1."""
        per_second = cost.cpu_per_second(self.pause_s)
        if not per_second > 0:
            raise ValueError(f"a turn must cost some CPU: {cost}")
        return max(1, math.floor(self.cores * self.utilization / per_second))


@dataclass(frozen=True, slots=True)
class Load:
    sessions: int
    capacity: int
    decode_wait_s: float
    llm_wait_s: float


def refusal(load: Load) -> str | None:
    """Why one more session would be refused now, or None to admit it."""
    if load.sessions >= load.capacity:
        return f"the server is at capacity ({load.capacity} talkers)"
    if load.decode_wait_s > MAX_DECODE_WAIT_S:
        return f"speech recognition is behind ({load.decode_wait_s:.1f} s queue)"
    if load.llm_wait_s > MAX_LLM_WAIT_S:
        return f"the language model is behind ({load.llm_wait_s:.1f} s queue)"
    return None


def load(figures: Load) -> float:
    """One number for a balancer: the fullest of sessions over capacity and
    the two queues over their limits; 1.0 or more means it refuses."""
    return max(
        figures.sessions / figures.capacity,
        figures.decode_wait_s / MAX_DECODE_WAIT_S,
        figures.llm_wait_s / MAX_LLM_WAIT_S,
    )


__all__ = [
    "MAX_DECODE_WAIT_S",
    "MAX_LLM_WAIT_S",
    "CapacityModel",
    "Load",
    "TurnCost",
    "load",
    "refusal",
]
