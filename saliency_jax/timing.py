"""Timing two implementations of the same work on one machine, for the benchmarks.

Rounds call every function in turn, so that the load of other processes falls on all alike; medians are
taken over the rounds.
"""

import time


def interleaved(fns: dict, *, warmup: int = 1, repeats: int, settle: int = 0) -> dict:
  """Seconds of each function over `repeats` rounds, each round calling every function in turn.

  Each timed call follows `settle` untimed calls of the same function: right after the other framework
  ran, its idle worker threads still spin (PyTorch's OpenMP) and can double a millisecond call, while a
  user's loop over batches runs in the steady state.

  Args:
    fns: {name: a function of no argument that blocks until its result is ready}.
    warmup: untimed calls of each first (the first compiles).
    repeats: the rounds.
    settle: untimed calls of the same function before each timed one.

  Returns:
    {name: [seconds of each round]}.
  """
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      for _ in range(settle):
        fn()
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times
