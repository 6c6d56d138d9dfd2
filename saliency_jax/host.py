"""The process's memory on its host: how glibc's malloc serves XLA:CPU, and handing memory back.

XLA:CPU allocates each jitted call's temporary buffers afresh, as one block (about 2.9 GB for the
10-crop top-5 maps of 8 images on MobileNet). glibc's default serves a block that large with a new
mmap and unmaps it when freed, so every call faults in and zeroes every page of it again. `TUNABLES`
make malloc take every block from one heap and keep what is freed, so the next call reuses the same
pages: the maps run faster (docs/results/speed.md) and the numbers stay bit-identical. The cost:
the heap fragments, and the peak memory of a long job creeps up with the number of chunks
(docs/results/speed.md, Memory). So it is opt-in: `SALIENCY_JAX_KEEP_FREED_MEMORY=1` before an entry point.
Light on purpose (no JAX, no numpy): the entry points call `keep_freed_memory` before they import
anything heavy.
"""

import ctypes
import gc
import os
import platform
import sys

SWITCH = 'SALIENCY_JAX_KEEP_FREED_MEMORY'
# One arena, no mmap for large blocks (they come from the heap), and a trim threshold (1 TiB) that
# never returns the heap's top to the system on free (`release_memory` still does, when asked).
TUNABLES = 'glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776'


def glibc() -> bool:
  """Whether this process runs on glibc 2.26 or later (the first with GLIBC_TUNABLES).

  Returns:
    A bool.
  """
  name, version = platform.libc_ver()
  if name != 'glibc' or not version:
    return False
  return tuple(int(v) for v in version.split('.')[:2]) >= (2, 26)


def keep_freed_memory() -> None:
  """Re-executes this process once under `TUNABLES` when SALIENCY_JAX_KEEP_FREED_MEMORY=1.

  glibc reads its tunables only at start-up, so the process re-executes itself with the same command
  line. Does nothing otherwise, off Linux / glibc, or when GLIBC_TUNABLES is already set (the user's own
  settings win). Processes this one starts inherit the setting. Call it first thing in an entry point.
  """
  if os.environ.get(SWITCH) != '1':
    return
  if sys.platform != 'linux' or 'GLIBC_TUNABLES' in os.environ or not glibc():
    return
  os.environ['GLIBC_TUNABLES'] = TUNABLES
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def reuse_freed_blocks(limit: int = 1 << 26) -> bool:
  """Has glibc's malloc serve blocks under `limit` bytes from its heap and keep freed ones.

  From now on in this process, up to 2 x limit freed bytes stay at the heap's top, instead of fresh pages
  being mapped for the larger blocks and freed ones handed straight back (the defaults adapt to that only
  after a few frees). For long-lived worker processes that allocate and free the same few-megabyte arrays
  task after task (the graph cuts). The process holds about its peak memory.

  Args:
    limit: the block size, in bytes, under which blocks come from the heap.

  Returns:
    Whether the settings took (False off glibc).
  """
  if sys.platform != 'linux' or not glibc():
    return False
  libc = ctypes.CDLL('libc.so.6')
  return bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * limit))


def release_memory() -> None:
  """Hands what was freed back to the system: a garbage collection, then glibc's malloc_trim.

  So that the peak memory does not creep up with the number of chunks of a job.
  """
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass
