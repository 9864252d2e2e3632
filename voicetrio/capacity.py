"""How many talkers a server can serve, and whether it can take one more.

Sans-IO: figures in, decisions out. Every admitted session is a person who
may speak at any moment, so admission is not "is the box busy now?" (a burst
of quiet connections would all get in) but "would one more talker push the
ones we have past their latency target?". Two figures answer it:

- **Capacity in talkers**, from the CPU one turn costs on this machine's
  engines (decodes, the reply, its speech: measured at start-up by a probe
  turn, then by the live turns, :class:`TurnCost`). A talker asks a question
  about every ``cycle_s`` (speaking, listening to the answer, pausing), and
  the engines are kept at ``utilization`` of the cores so that queues stay
  short: ``capacity = cores * utilization * cycle_s / cpu_s_per_turn``.
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
#: Weight of a new measurement in :class:`TurnCost`.
COST_EWMA_ALPHA: Final = 0.1


@dataclass(frozen=True, slots=True)
class CapacityModel:
    cores: float
    #: One question and its answer, with the pauses around them, in seconds.
    cycle_s: float = 10.0
    #: Share of the cores the engines may be kept busy.
    utilization: float = 0.6

    def __post_init__(self) -> None:
        if not self.cores > 0 or not self.cycle_s > 0 or not 0 < self.utilization <= 1:
            raise ValueError(f"invalid capacity model {self}")

    def talkers(self, cpu_s_per_turn: float) -> int:
        """Talkers the cores serve when a turn costs ``cpu_s_per_turn``; at least 1."""
        if cpu_s_per_turn <= 0:
            raise ValueError(f"cpu_s_per_turn must be > 0, got {cpu_s_per_turn}")
        return max(1, math.floor(self.cores * self.utilization * self.cycle_s / cpu_s_per_turn))


class TurnCost:
    """CPU seconds a turn costs: the probe's figure, then a moving average of
    live ones (CPU used over a window / turns finished in it)."""

    def __init__(self, probe_cpu_s: float) -> None:
        if probe_cpu_s <= 0:
            raise ValueError(f"probe_cpu_s must be > 0, got {probe_cpu_s}")
        self.probe_cpu_s = probe_cpu_s
        self.cpu_s = probe_cpu_s

    def observe(self, cpu_s: float, turns: int) -> None:
        """``cpu_s`` of CPU went into ``turns`` finished turns (and the listening between)."""
        if turns <= 0:
            return
        self.cpu_s += COST_EWMA_ALPHA * (cpu_s / turns - self.cpu_s)


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
    "COST_EWMA_ALPHA",
    "MAX_DECODE_WAIT_S",
    "MAX_LLM_WAIT_S",
    "CapacityModel",
    "Load",
    "TurnCost",
    "load",
    "refusal",
]
