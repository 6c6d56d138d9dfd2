"""Evaluation of saliency maps against object masks."""

import numpy as np
from scipy import ndimage


def pointing_hits(maps, masks, *, tolerance: float = 0.0) -> np.ndarray:
  """Pointing game (Zhang et al. 2016): is each map's maximum on the object?

  maps [N, H, W]; masks bool [N, H, W]. A hit when the maximum lies within `tolerance` pixels
  (Euclidean) of a mask pixel (TorchRay uses 15 px at ~224 px). Returns bool [N].
  """
  maps, masks = np.asarray(maps), np.asarray(masks, bool)
  if maps.shape != masks.shape or maps.ndim != 3:
    raise ValueError(f'maps {maps.shape} and masks {masks.shape} must both be [N, H, W]')
  hits = np.zeros(len(maps), bool)
  for i, (m, mask) in enumerate(zip(maps, masks)):
    if not mask.any():
      continue
    r, c = np.unravel_index(np.argmax(m), m.shape)
    hits[i] = ndimage.distance_transform_edt(~mask)[r, c] <= tolerance
  return hits


def mass_inside(maps, masks) -> np.ndarray:
  """Fraction of each map's total (non-negative) mass that falls on the object mask, [N]."""
  maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
  total = maps.sum(axis=(1, 2))
  inside = np.where(masks, maps, 0).sum(axis=(1, 2))
  return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
