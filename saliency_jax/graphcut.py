"""Grid graph cut with PyMaxflow (paper Sect. 3.2), and the host-side end of localisation.

The cuts of an image's maps go as one task (`cut_image`), run in a pool of worker processes (`start`).

The energy is GrabCut's (Rother et al. 2004; Boykov & Jolly 2001):
  E(L) = sum_p D_p(L_p) + sum_{p~q} [L_p != L_q] * pairwise_weight / dist(p, q) * exp(-beta ||z_p - z_q||^2)
with D_p(fg) = -log p_fg(z_p), D_p(bg) = -log p_bg(z_p) from the two colour models, z_p the pixel's
RGB colour (0-255), beta = 1 / (2 <||z_p - z_q||^2>) averaged over all neighbour pairs of the image,
and dist 1 for horizontal / vertical neighbours, sqrt(2) for diagonal ones (8-connectivity).
Hard seeds keep their label: the cut runs on the other pixels, with their edges to the seeds as
terminal capacities (the same minimum as infinite costs for the other label, on fewer nodes).

This module is numpy + PyMaxflow + scipy only (no JAX), so that worker processes that run the cuts
start quickly: they import this module and the program's main script (Python's 'spawn' start method),
so scripts that start the pool keep their own top-level imports light.
"""

import atexit
import concurrent.futures
import functools
import multiprocessing
import os
import signal
import threading
import time

import maxflow
import numpy as np
from scipy import ndimage

from saliency_jax import host

# Half of the 4 or 8 neighbour offsets (dy, dx): each unordered pair of neighbours once.
OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}


def _pair_slices(shape, offset) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
  """The slices of the pixels p and of their neighbours p + offset, for every p whose neighbour is inside."""
  (h, w), (dy, dx) = shape[:2], offset
  return ((slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))),
          (slice(dy, h), slice(max(0, dx), w - max(0, -dx))))


def _shifted_pairs(image: np.ndarray, offset) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Squared colour differences of each pixel p and its neighbour p + offset, and the slice of p."""
  src, dst = _pair_slices(image.shape, offset)
  diff = image[src] - image[dst]
  return np.sum(diff * diff, axis=-1), src


def pairwise_weights(image, *, pairwise_weight: float = 50.0, connectivity: int = 8) -> list:
  """GrabCut's contrast-sensitive edge weights of an image.

  Args:
    image: [H, W, 3], uint8 or float on the 0-255 scale.
    pairwise_weight: GrabCut's gamma.
    connectivity: 4 or 8.

  Returns:
    [(offset, weights [H, W])], weights[p] for the edge p -> p + offset (0 where it leaves the image).

  Raises:
    ValueError: connectivity other than 4 or 8.
  """
  if connectivity not in OFFSETS:
    raise ValueError(f'connectivity must be 4 or 8, got {connectivity}')
  image = np.asarray(image, np.float64)
  pairs = [(offset, *_shifted_pairs(image, offset)) for offset in OFFSETS[connectivity]]
  total = sum(float(d.sum()) for _, d, _ in pairs)
  count = sum(d.size for _, d, _ in pairs)
  mean = total / max(count, 1)
  beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0  # a uniform image: every edge gets the full weight
  out = []
  for offset, d, src in pairs:
    w = np.zeros(image.shape[:2])
    w[src] = pairwise_weight / np.hypot(*offset) * np.exp(-beta * d)
    out.append((offset, w))
  return out


def segment(fg_cost, bg_cost, image=None, *, pairwise_weight: float = 50.0, connectivity: int = 8,
            fg_seeds=None, bg_seeds=None, edges=None) -> np.ndarray:
  """Minimum cut of the GrabCut energy (PyMaxflow).

  A cut with hard seeds cuts a graph of the other pixels only, each edge to a seed folded into the free
  pixel's terminal capacity: the same minimum as prohibitive seed costs, less work.

  Args:
    fg_cost: [H, W] unary cost of labelling each pixel foreground (a negative log-likelihood; only the
      difference to `bg_cost` per pixel matters).
    bg_cost: [H, W] unary cost of labelling each pixel background.
    image: [H, W, 3] colours for the pairwise term (0-255 scale); None with `edges` given.
    pairwise_weight: GrabCut's gamma (50 in the GrabCut paper); 0 gives a pixelwise decision.
    connectivity: 4 or 8.
    fg_seeds: optional bool [H, W] pixels that must be foreground.
    bg_seeds: optional bool [H, W] pixels that must be background.
    edges: precomputed `pairwise_weights(image, ...)` (to reuse across cuts of one image).

  Returns:
    bool [H, W], the foreground.

  Raises:
    ValueError: costs of different shapes or not finite, no image or edges, or an image of another size.
  """
  fg_cost, bg_cost = np.asarray(fg_cost, np.float64), np.asarray(bg_cost, np.float64)
  if fg_cost.shape != bg_cost.shape or fg_cost.ndim != 2:
    raise ValueError(f'fg_cost {fg_cost.shape} and bg_cost {bg_cost.shape} must both be [H, W]')
  if not (np.all(np.isfinite(fg_cost)) and np.all(np.isfinite(bg_cost))):
    raise ValueError('unary costs hold NaN or infinite values')
  if edges is None:
    if image is None:
      raise ValueError('segment needs the image (or precomputed edges) for the pairwise term')
    if np.shape(image)[:2] != fg_cost.shape:
      raise ValueError(f'image {np.shape(image)} does not match the costs {fg_cost.shape}')
    edges = pairwise_weights(image, pairwise_weight=pairwise_weight, connectivity=connectivity)
  # Only the difference matters: shift so that the cheaper label costs 0 (capacities >= 0).
  low = np.minimum(fg_cost, bg_cost)
  fg_cost, bg_cost = fg_cost - low, bg_cost - low
  if fg_seeds is None and bg_seeds is None:
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(fg_cost.shape)
    for (dy, dx), w in edges:
      structure = np.zeros((3, 3))
      structure[1 + dy, 1 + dx] = 1
      graph.add_grid_edges(nodes, weights=w, structure=structure, symmetric=True)
    # Source side = foreground: a pixel left on the sink side cuts its source edge, so the source
    # capacity is the cost of labelling it background.
    graph.add_grid_tedges(nodes, bg_cost, fg_cost)
    graph.maxflow()
    return ~graph.get_grid_segments(nodes)
  bg = np.zeros(fg_cost.shape, bool) if bg_seeds is None else np.asarray(bg_seeds, bool)
  fg = np.zeros(fg_cost.shape, bool) if fg_seeds is None else np.asarray(fg_seeds, bool) & ~bg
  return _seeded_cut(fg_cost, bg_cost, edges, fg, bg)


def _seeded_cut(fg_cost, bg_cost, edges, fg, bg) -> np.ndarray:
  """The minimum cut with the seed pixels' labels fixed, on a graph of the other pixels only.

  fg, bg: disjoint bool [H, W]. An edge from a free pixel to a seed becomes a terminal capacity of the
  free pixel (its cost if the pixel takes the other label), an edge between two seeds is a constant.
  The same minimum as with infinite terminal capacities on the seeds, on fewer nodes (the hard seeds
  of the paper's quantile seeds are a third of the image or more).
  """
  free = ~(fg | bg)
  source, sink = bg_cost.copy(), fg_cost.copy()  # the costs of labelling a pixel background / foreground
  ids = np.full(free.shape, -1, np.int64)
  ids[free] = np.arange(np.count_nonzero(free))  # the graph's node of each free pixel
  tails, heads, weights = [], [], []
  for offset, w in edges:
    p, q = _pair_slices(free.shape, offset)
    wp = w[p]
    for a, b in ((p, q), (q, p)):  # a free pixel next to a seed
      source[a] += np.where(free[a] & fg[b], wp, 0.0)
      sink[a] += np.where(free[a] & bg[b], wp, 0.0)
    both = free[p] & free[q]
    tails.append(ids[p][both])
    heads.append(ids[q][both])
    weights.append(wp[both])
  mask = fg.copy()
  n = np.count_nonzero(free)
  if n:
    graph = maxflow.Graph[float]()
    graph.add_nodes(n)
    nodes = np.arange(n)
    weights = np.concatenate(weights)
    graph.add_edges(np.concatenate(tails), np.concatenate(heads), weights, weights)
    graph.add_grid_tedges(nodes, source[free], sink[free])
    graph.maxflow()
    mask[free] = ~graph.get_grid_segments(nodes)
  return mask


def largest_component(mask, *, connectivity: int = 8) -> np.ndarray:
  """The largest connected component of a mask; an empty mask stays empty.

  Args:
    mask: bool [H, W].
    connectivity: 4 or 8.

  Returns:
    bool [H, W].
  """
  mask = np.asarray(mask, bool)
  structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
  labels, n = ndimage.label(mask, structure=structure)
  if n <= 1:
    return mask.copy()
  sizes = np.bincount(labels.ravel())[1:]
  return labels == 1 + int(np.argmax(sizes))


def cut_image(task) -> list[np.ndarray]:
  """The graph cuts of one image's maps (a worker task: no JAX in this module).

  The pairwise term depends on the image alone, so its maps (e.g. of its top-k classes) share it. Soft
  seeds only fitted the colour models: the cut leaves them free.

  Args:
    task: (image uint8 [H, W, 3], settings {'seeds': 'hard' or 'soft', 'pairwise_weight',
      'connectivity', ...}, [(costs [2, H, W]: foreground and background, fg seeds, bg seeds)]).

  Returns:
    The raw foreground masks, bool [H, W] each.
  """
  image, s, cuts = task
  hard = s['seeds'] == 'hard'
  edges = pairwise_weights(image, pairwise_weight=s['pairwise_weight'], connectivity=s['connectivity'])
  return [segment(costs[0], costs[1], edges=edges, fg_seeds=fg if hard else None,
                  bg_seeds=bg if hard else None) for costs, fg, bg in cuts]


def _exit_with(parent: int) -> None:
  """Ends this process once `parent` is gone (this process then has another parent)."""
  while os.getppid() == parent:
    time.sleep(0.5)
  os._exit(1)


def _worker_init(parent: int) -> None:
  """Runs first in each worker process: signals, a watchdog on the parent, malloc.

  Ctrl-C goes to the whole process group: the parent stops the pool, so the workers ignore it. A
  parent that dies without shutting the pool down (SIGKILL, the out-of-memory killer) leaves its
  workers waiting for tasks: a watchdog thread ends them. (Linux's PR_SET_PDEATHSIG would fire when
  the parent *thread* that started a worker ends, and the pool starts workers from whichever thread
  submits.) Freed arrays are kept for the next task (`host.reuse_freed_blocks`).
  """
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  host.reuse_freed_blocks()
  threading.Thread(target=_exit_with, args=(parent,), daemon=True, name='exit-with-parent').start()


@functools.cache
def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """A process pool kept for the life of the program; its workers end with this process.

  Starting one costs about a second; the workers end however this process ends.
  """
  # 'spawn': the parent runs JAX threads, which a fork would copy in an undefined state.
  pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                                                initializer=_worker_init, initargs=(os.getpid(),))
  atexit.register(pool.shutdown, cancel_futures=True)
  return pool


def start_pool(workers: int) -> None:
  """Starts the pool's worker processes now, without waiting for them.

  Otherwise they start with the first tasks, which then wait for them.

  Args:
    workers: the number of processes (under 2: no pool).
  """
  pool = _pool(workers)
  for _ in range(workers):
    pool.submit(int)


def start(fn, task, workers: int) -> concurrent.futures.Future:
  """fn(task) in a pool of worker processes, or here and now; either way a future of its result.

  Args:
    fn: a module-level function of a module without JAX (e.g. `cut_image`).
    task: its argument.
    workers: the pool's processes; under 2, fn runs here.

  Returns:
    A `concurrent.futures.Future` of fn(task).
  """
  if workers > 1:
    return _pool(workers).submit(fn, task)
  done = concurrent.futures.Future()
  done.set_result(fn(task))
  return done
