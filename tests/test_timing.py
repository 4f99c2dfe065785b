"""The plan's stage clock (`prbot.timing`): stages are counted exclusively per thread, work handed
to another thread with `carry` counts on the same clock, and a plan reports its stages."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prbot.timing import STAGES, StageClock, carry, measuring, timed


def test_a_nested_stage_pauses_the_outer_one() -> None:
    clock = StageClock()
    with measuring(clock):
        with timed("diff"):
            time.sleep(0.02)
            with timed("validation"):
                time.sleep(0.3)
                with timed("validation"):          # the same stage again: one more entry, no double count
                    pass
    assert clock.counts["diff"] == 1 and clock.counts["validation"] == 2
    assert clock.seconds["validation"] >= 0.3
    assert clock.seconds["diff"] < clock.seconds["validation"]     # its 0.3 s inside are not its own
    assert clock.own() == clock.seconds["diff"] + clock.seconds["validation"]


def test_work_carried_to_a_pool_thread_counts_on_the_plan_clock() -> None:
    clock = StageClock()
    seen: list[str] = []

    def work() -> None:
        seen.append(threading.current_thread().name)
        with timed("render"):
            time.sleep(0.01)

    with measuring(clock), ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: f(), [carry(work), carry(work)]))
        pool.submit(work).result()                      # not carried: counts nowhere
    assert clock.counts["render"] == 2 and len(seen) == 3
    with timed("render"):                               # no clock measuring: nothing happens
        pass
    assert clock.counts["render"] == 2
    assert set(clock.as_dict()) == set(STAGES)
    assert "own/render" in clock.table()
