"""Independent pieces of CPU work run at once, one Python thread each.

torch's operators release the GIL, so such threads run in parallel. The pose search's
operators scale poorly over a CPU's threads (one start of round 1's EM on blobs10, 2,000
particles: 37 s on one thread of a 2-core EPYC, 21 s on both), so two starts side by side, one
thread each, end sooner than one after the other on both threads.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")
Report = Callable[..., None]


class _Stopped(Exception):
    """Raised in a helper thread at its next report once another piece has failed."""


def side_by_side(
    work: Callable[[int, Report | None], T], count: int, device: torch.device, report: Report | None
) -> list[T]:
    """[work(i, report) for i in range(count)]: the same results, in the same order.

    On a CPU where torch has at least two threads the pieces run at once, each on an equal
    share of them: piece 0 in the calling thread with `report` itself, the others in helper
    threads whose reports are kept (each argument copied shallowly, as it was when reported)
    and passed to `report` in order once every piece is done, so that reports leave from the
    calling thread alone. Elsewhere (a GPU, a single thread) one after another. When a piece
    fails, the helpers stop at their next report, and the first failure is raised once they
    have.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or count < 2:
        return [work(i, report) for i in range(count)]
    results: list = [None] * count
    kept: list[list[tuple]] = [[] for _ in range(count)]
    failures: list[BaseException] = []
    stop = threading.Event()

    def keeper(i: int) -> Report:
        def keep(*args) -> None:
            if stop.is_set():
                raise _Stopped
            kept[i].append(tuple(copy.copy(arg) for arg in args))

        return keep

    def helper(i: int) -> None:
        try:
            results[i] = work(i, keeper(i))
        except _Stopped:
            pass
        except BaseException as error:  # raised in the calling thread once every piece is done
            failures.append(error)

    helpers = [threading.Thread(target=helper, args=(i,), daemon=True) for i in range(1, count)]
    torch.set_num_threads(max(1, threads // count))
    try:
        for thread in helpers:
            thread.start()
        try:
            results[0] = work(0, report)
        except BaseException:
            stop.set()
            raise
        finally:
            for thread in helpers:
                thread.join()
    finally:
        torch.set_num_threads(threads)
    if failures:
        raise failures[0]
    if report is not None:
        for i in range(1, count):
            for args in kept[i]:
                report(*args)
    return results
