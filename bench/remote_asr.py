"""Remote ASR against local ASR (issue 14): one run, the same spoken
questions, a front with Whisper in its process beside a front whose speech
recognition is another voicetrio on this box.

Three servers, each its own process, all started before anything is
measured: the **local** front (``voicetrio serve --lean``: Whisper tiny.en
in process), the **remote** (the same, serving the remote front's
transcription sessions at ``/v1/realtime?intent=transcription``) and the
**remote front** (``--lean`` with ``STREAM_ASR_URL`` at the remote: no model
in its process). Lean sessions (transcripts only) keep the fronts' work to
what differs: sessions, VAD, endpointing, and the decodes (in process, or
sent away); an LLM and a TTS would cost both fronts the same.

For each N of ``--sessions``, the local front and then the remote front get
N talkers (bench.capacity's microphone: 100 ms pcm16 frames at real-time
pace, espeak-ng questions, the same plan for both fronts), each warmed up by
one question first. Per phase:

* **front CPU per session-second**: the front's CPU seconds (user + system,
  its whole process tree, from /proc) over the phase, divided by the
  talkers' connected seconds; its inverse is the talking sessions one core
  could hold at 100 % (the server's admission aims at
  ``STREAM_TARGET_UTILIZATION``, 0.6 of that). The remote's CPU per
  session-second is shown for the remote phase: where the decodes went.
* **end of speech to final**, p50/p95 (the capacity bench's clock: the
  moment the frame holding the end of speech was sent, less the audio after
  it); the remote's added latency is the difference.

Usage::

    .venv/bin/python -m bench.remote_asr [--sessions 1,3] [--turns 4]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import httpx
import trio

from bench.capacity import (
    QUESTIONS,
    Options,
    Question,
    TalkerResult,
    pct,
    process_tree,
    question,
    talker,
    tree_cpu_s,
)
from bench.common import server_process
from bench.soak import server_pids


@dataclass
class Phase:
    front: str
    n: int
    talkers: list[TalkerResult] = field(default_factory=list)
    session_s: float = 0.0
    front_cpu_s: float = 0.0
    remote_cpu_s: float | None = None
    wall_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def finals(self) -> list[float]:
        return [t.final_s for x in self.talkers for t in x.turns if t.final_s is not None]

    @property
    def turns(self) -> int:
        return sum(len(x.turns) for x in self.talkers)

    @property
    def errors(self) -> int:
        return sum(len(t.errors) for x in self.talkers for t in x.turns)

    def error_codes(self) -> Counter[str]:
        return Counter(e for x in self.talkers for t in x.turns for e in t.errors)

    @property
    def admitted(self) -> int:
        return sum(x.admitted for x in self.talkers)

    @property
    def cpu_per_session_s(self) -> float:
        return self.front_cpu_s / self.session_s if self.session_s else float("nan")

    def row(self) -> str:
        p50, p95 = pct(self.finals, 0.5), pct(self.finals, 0.95)
        remote = (
            "      -" if self.remote_cpu_s is None else f"{self.remote_cpu_s / self.session_s:7.3f}"
        )
        per_core = 1 / self.cpu_per_session_s if self.cpu_per_session_s else float("inf")
        return (
            f"{self.front:>6} {self.n:3d} {self.admitted:3d} {self.turns:5d} "
            f"{len(self.finals):6d} {self.errors:4d} {self.session_s:7.1f} "
            f"{self.front_cpu_s:7.2f} {self.cpu_per_session_s:7.3f} {per_core:8.1f} {remote} "
            f"{_ms(p50)} {_ms(p95)}   {self.load[0]:.2f}/{self.load[1]:.2f}"
        )


HEADER = (
    " front   N adm turns finals errs  sess_s  cpu_s  cpu/ss  ss/core remote/ss"
    "  p50 ms  p95 ms   load start/end"
)


def _ms(value: float | None) -> str:
    return "    n/a" if value is None else f"{value * 1000:7.0f}"


async def timed_talker(
    url: str,
    index: int,
    plan: list[Question],
    options: Options,
    out: TalkerResult,
    seconds: list[float],
) -> None:
    start = time.monotonic()
    try:
        await talker(url, index, plan, options, out)
    finally:
        if out.admitted:
            seconds.append(time.monotonic() - start)


async def run_phase(
    front: str,
    port: int,
    n: int,
    plans: list[list[Question]],
    options: Options,
    remote_port: int | None,
) -> Phase:
    url = f"ws://127.0.0.1:{port}/ws"
    phase = Phase(front, n, [TalkerResult() for _ in range(n)])
    warm = Options(**{**options.__dict__, "turns": 1})
    await talker(url, -1, [question(QUESTIONS[-1], options.frame_ms)], warm, TalkerResult())
    pids = process_tree(server_pids(port))
    remote_pids = [] if remote_port is None else process_tree(server_pids(remote_port))
    cpu0, rcpu0 = tree_cpu_s(pids), tree_cpu_s(remote_pids)
    load0 = os.getloadavg()[0]
    wall0 = time.monotonic()
    seconds: list[float] = []
    async with trio.open_nursery() as nursery:
        for i, plan in enumerate(plans):
            nursery.start_soon(
                partial(timed_talker, url, i, plan, options, phase.talkers[i], seconds)
            )
            await trio.sleep(options.spread_s / len(plans))
    phase.wall_s = time.monotonic() - wall0
    cpu1, rcpu1 = tree_cpu_s(pids), tree_cpu_s(remote_pids)
    phase.front_cpu_s = sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0)
    if remote_port is not None:
        phase.remote_cpu_s = sum(rcpu1[p] - rcpu0[p] for p in rcpu1 if p in rcpu0)
    phase.session_s = sum(seconds)
    phase.load = (load0, os.getloadavg()[0])
    return phase


async def main(args: argparse.Namespace) -> None:
    options = Options(
        turns=args.turns,
        frame_ms=100,
        audio_format="pcm16",
        spread_s=args.spread_s,
        turn_timeout_s=20.0,
        connect_timeout_s=30.0,
        refuse_within_s=1.0,
        seed=args.seed,
        verbose=args.verbose,
    )
    counts = [int(x) for x in args.sessions.split(",")]
    for text in QUESTIONS:  # every question synthesized before any server starts
        question(text, options.frame_ms)
    base = {
        "STREAM_LOG_LEVEL": "WARNING",
        "STREAM_LEAN": "true",
        "STREAM_MAX_SESSIONS": "64",
    }
    la = os.getloadavg()
    print(
        f"remote_asr: sessions {counts}, turns {options.turns}, lean fronts, Whisper tiny.en; "
        f"load average at start {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} ({os.cpu_count()} cores)",
        flush=True,
    )
    phases: list[Phase] = []
    async with (
        server_process([], env=base) as local_port,
        server_process([], env=base) as remote_port,
        server_process(
            [], env={**base, "STREAM_ASR_URL": f"http://127.0.0.1:{remote_port}/v1"}
        ) as front_port,
    ):
        print(HEADER, flush=True)
        for n in counts:
            plans = [
                [
                    question(QUESTIONS[(i * 5 + j) % len(QUESTIONS)], options.frame_ms)
                    for j in range(options.turns)
                ]
                for i in range(n)
            ]
            for name, port, behind in (
                ("local", local_port, None),
                ("remote", front_port, remote_port),
            ):
                phase = await run_phase(name, port, n, plans, options, behind)
                phases.append(phase)
                print(phase.row(), flush=True)
                if phase.errors:
                    print(f"        errors: {dict(phase.error_codes())}", flush=True)
        async with httpx.AsyncClient() as http:
            shown = (await http.get(f"http://127.0.0.1:{remote_port}/health")).json()
        print(
            f"the remote: capacity {shown.get('capacity')} talkers, "
            f"{shown.get('sessions_total')} sessions admitted in all (one per front connection)",
            flush=True,
        )
    la = os.getloadavg()
    print()
    print(
        "cpu/ss: the front's CPU seconds per talking session-second; ss/core: its inverse, "
        "talking sessions per core at 100 %; remote/ss: the remote's, for the remote front"
    )
    for n in counts:
        local = next(p for p in phases if p.front == "local" and p.n == n)
        remote = next(p for p in phases if p.front == "remote" and p.n == n)
        lp50, lp95 = pct(local.finals, 0.5), pct(local.finals, 0.95)
        rp50, rp95 = pct(remote.finals, 0.5), pct(remote.finals, 0.95)
        if lp50 is None or lp95 is None or rp50 is None or rp95 is None:
            added = "n/a"
        else:
            added = f"{(rp50 - lp50) * 1000:+.0f} ms p50, {(rp95 - lp95) * 1000:+.0f} ms p95"
        ratio = local.cpu_per_session_s / remote.cpu_per_session_s
        print(
            f"N={n}: front CPU per session-second {local.cpu_per_session_s:.3f} (local ASR) -> "
            f"{remote.cpu_per_session_s:.3f} (remote ASR), {ratio:.1f}x the sessions per core; "
            f"added latency end of speech to final {added}"
        )
    print(f"load average at end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", default="1,3", help="talker counts, comma separated")
    parser.add_argument("--turns", type=int, default=4, help="questions per talker")
    parser.add_argument("--spread-s", type=float, default=1.5, help="talkers arrive over this")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse())
