"""Grid graph cut with PyMaxflow (paper Sect. 3.2), and the host-side end of localisation.

The energy is GrabCut's (Rother et al. 2004; Boykov & Jolly 2001):
  E(L) = sum_p D_p(L_p) + sum_{p~q} [L_p != L_q] * pairwise_weight / dist(p, q) * exp(-beta ||z_p - z_q||^2)
with D_p(fg) = -log p_fg(z_p), D_p(bg) = -log p_bg(z_p) from the two colour models, z_p the pixel's
RGB colour (0-255), beta = 1 / (2 <||z_p - z_q||^2>) averaged over all neighbour pairs of the image,
and dist 1 for horizontal / vertical neighbours, sqrt(2) for diagonal ones (8-connectivity).
Hard seeds get an infinite-like cost for the other label.

This module is numpy + PyMaxflow + scipy only (no JAX), so that worker processes that run the cuts
start quickly.
"""

import maxflow
import numpy as np
from scipy import ndimage

# Half of the 4 or 8 neighbour offsets (dy, dx): each unordered pair of neighbours once.
OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}
HARD = 1e9  # the cost of violating a hard seed: larger than any cut through the pairwise terms


def _shifted_pairs(image: np.ndarray, offset) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Squared colour differences of each pixel p and its neighbour p + offset, and the slice of p."""
  dy, dx = offset
  h, w = image.shape[:2]
  src = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
  dst = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
  diff = image[src] - image[dst]
  return np.sum(diff * diff, axis=-1), src


def pairwise_weights(image, *, pairwise_weight: float = 50.0, connectivity: int = 8) -> list:
  """Contrast-sensitive edge weights: [(offset, weights [H, W])], weights[p] for the edge p -> p + offset.

  image [H, W, 3] (uint8 or float on the 0-255 scale). Weights are 0 where p + offset leaves the image.
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
  """Minimum cut of the GrabCut energy: bool [H, W] foreground mask.

  Args:
    fg_cost, bg_cost: [H, W] unary costs of labelling each pixel foreground / background
      (negative log-likelihoods; only their difference per pixel matters).
    image: [H, W, 3] colours for the pairwise term (0-255 scale); None with `edges` given.
    pairwise_weight: GrabCut's gamma (50 in the GrabCut paper); 0 gives a pixelwise decision.
    connectivity: 4 or 8.
    fg_seeds, bg_seeds: optional bool [H, W] hard constraints.
    edges: precomputed `pairwise_weights(image, ...)` (to reuse across GrabCut iterations).
  """
  fg_cost, bg_cost = np.asarray(fg_cost, np.float64), np.asarray(bg_cost, np.float64)
  if fg_cost.shape != bg_cost.shape or fg_cost.ndim != 2:
    raise ValueError(f'fg_cost {fg_cost.shape} and bg_cost {bg_cost.shape} must both be [H, W]')
  if not (np.all(np.isfinite(fg_cost)) and np.all(np.isfinite(bg_cost))):
    raise ValueError('unary costs hold NaN or infinite values')
  # Only the difference matters: shift so that the cheaper label costs 0 (capacities >= 0).
  low = np.minimum(fg_cost, bg_cost)
  fg_cost, bg_cost = fg_cost - low, bg_cost - low
  if fg_seeds is not None:
    fg_seeds = np.asarray(fg_seeds, bool)
    fg_cost, bg_cost = np.where(fg_seeds, 0.0, fg_cost), np.where(fg_seeds, HARD, bg_cost)
  if bg_seeds is not None:
    bg_seeds = np.asarray(bg_seeds, bool)
    fg_cost, bg_cost = np.where(bg_seeds, HARD, fg_cost), np.where(bg_seeds, 0.0, bg_cost)
  if edges is None:
    if image is None:
      raise ValueError('segment needs the image (or precomputed edges) for the pairwise term')
    if np.shape(image)[:2] != fg_cost.shape:
      raise ValueError(f'image {np.shape(image)} does not match the costs {fg_cost.shape}')
    edges = pairwise_weights(image, pairwise_weight=pairwise_weight, connectivity=connectivity)

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


def largest_component(mask, *, connectivity: int = 8) -> np.ndarray:
  """The largest connected component of a bool mask (4- or 8-connected); empty stays empty."""
  mask = np.asarray(mask, bool)
  structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
  labels, n = ndimage.label(mask, structure=structure)
  if n <= 1:
    return mask.copy()
  sizes = np.bincount(labels.ravel())[1:]
  return labels == 1 + int(np.argmax(sizes))
