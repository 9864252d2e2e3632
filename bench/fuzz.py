"""The protocol fuzzer at length: the CI fuzzer's scenarios, thousands of them.

Same server (one, in a thread, for the whole run), same scenarios, same
oracle and checks as ``tests/reliability/test_fuzz.py`` (see
``tests/reliability/fuzzing.py``), but random rather than derandomized
examples and as many as asked. After every example the session must have left
the hub, nothing unhandled may have reached the log, and a fresh session must
complete a whole turn; at the end the server must hold no task more than at
the start. A failure is shrunk by Hypothesis and printed as the minimal
scenario; ``--seed`` replays a run. Usage::

    .venv/bin/python -m bench.fuzz [--examples 2000] [--seed N]
"""

from __future__ import annotations

import argparse
import collections
import time

import trio
from hypothesis import HealthCheck, given, seed, settings

from tests.reliability.conftest import LogWatch
from tests.reliability.fuzzing import (
    Scenario,
    ServerThread,
    drained,
    full_turn,
    run_scenario,
    scenarios,
)


def main(examples: int, seed_value: int | None) -> None:
    watch = LogWatch()
    watch.attach()
    server = ServerThread()
    server.start()
    tasks_before = server.call_sync(drained)
    totals: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()

    async def one(scenario: Scenario) -> None:
        mark = len(watch.records)
        seen = await run_scenario(server.url, scenario)
        await server.call(drained)
        problems = watch.problems(mark)
        assert not problems, watch.describe(problems)
        await full_turn(server.url)
        totals.update(e["type"] for e in seen.events)
        totals["examples"] += 1
        totals["frames refused"] += len(seen.refusals)
        totals["violations (1008)"] += seen.closed == 1008
        totals["cancelled turns"] += sum(e.get("code") == "CANCELLED" for e in seen.events)
        totals["barge-ins"] += sum(e.get("event") == "barge_in" for e in seen.events)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(scenario=scenarios)
    def fuzz(scenario: Scenario) -> None:
        trio.run(one, scenario)

    if seed_value is not None:
        fuzz = seed(seed_value)(fuzz)
    try:
        fuzz()
        tasks_after = server.call_sync(drained)
        assert tasks_after == tasks_before, f"server tasks {tasks_before} -> {tasks_after}"
    finally:
        server.stop()
        watch.detach()
    elapsed = time.perf_counter() - started
    print(f"fuzz: {totals['examples']} examples in {elapsed:.0f} s, no failure")
    for name, count in sorted(totals.items()):
        print(f"  {name:<22} {count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    main(args.examples, args.seed)
