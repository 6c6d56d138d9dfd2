"""Weakly supervised localisation from a saliency map (paper Sect. 3.2), and its baselines.

The paper's pipeline, for an image and its class saliency map:
  1. seeds: pixels above the `fg_quantile` (95%) quantile of the map are foreground seeds, pixels
     below the `bg_quantile` (30%) quantile background seeds;
  2. colour models: a Gaussian mixture (`gmm`, fitted on device, all images and both models in one
     vmapped call) on the foreground seeds' colours, another on the background seeds';
  3. GraphCut (`graphcut.segment`, PyMaxflow, on the host) of the GrabCut energy with those models;
  4. the largest connected component of the foreground, and its bounding box.
The paper leaves open every setting below; each is a field of `Settings`, with its default:
  num_components 5 (GrabCut's), gmm_iters 10, covariance_floor 1e-4 (colours scaled to [0, 1]),
  pairwise_weight 50 (GrabCut's gamma), connectivity 8, seeds 'hard' (seed pixels keep their
  label in the cut) or 'soft' (seeds only fit the colour models), iterations 0 (GrabCut-style
  re-estimation rounds: refit both models on the cut's labels and cut again).
Baselines in the same API (`method`): 'threshold' (pixels >= `threshold` x the map's maximum,
largest component's box: the CAM / Grad-CAM protocol, 0.2 and 0.15), 'full' (the whole image),
'centre' (a centred box, `centre_fraction` of each side).

A map that is NaN / infinite somewhere, or flat (nothing above its background quantile), and a
segmentation that comes out empty, give the full-image box, flagged by the returned `status`
('invalid_saliency', 'flat_saliency', 'empty_segment'; else 'ok'): never a crash, never a silent box.
"""

import concurrent.futures
import dataclasses
import functools
import multiprocessing
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import gmm, graphcut

METHODS = ('graphcut', 'threshold', 'full', 'centre')


@dataclasses.dataclass(frozen=True)
class Settings:
  method: str = 'graphcut'
  fg_quantile: float = 0.95
  bg_quantile: float = 0.30
  num_components: int = 5
  gmm_iters: int = 10
  covariance_floor: float = 1e-4
  pairwise_weight: float = 50.0
  connectivity: int = 8
  seeds: str = 'hard'
  iterations: int = 0
  threshold: float = 0.2
  centre_fraction: float = 0.5
  seed: int = 0

  def __post_init__(self):
    checks = [
        (self.method in METHODS, f'method must be one of {METHODS}, got {self.method!r}'),
        (0 <= self.bg_quantile < self.fg_quantile <= 1,
         f'need 0 <= bg_quantile < fg_quantile <= 1, got {self.bg_quantile} and {self.fg_quantile}'),
        (self.num_components >= 1, f'num_components must be >= 1, got {self.num_components}'),
        (self.connectivity in (4, 8), f'connectivity must be 4 or 8, got {self.connectivity}'),
        (self.seeds in ('hard', 'soft'), f"seeds must be 'hard' or 'soft', got {self.seeds!r}"),
        (self.iterations >= 0, f'iterations must be >= 0, got {self.iterations}'),
        (0 < self.threshold <= 1, f'threshold must lie in (0, 1], got {self.threshold}'),
        (0 < self.centre_fraction <= 1, f'centre_fraction must lie in (0, 1], got {self.centre_fraction}'),
        (self.pairwise_weight >= 0, f'pairwise_weight must be >= 0, got {self.pairwise_weight}'),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f'localise settings: {message}')


def settings(config=None, **overrides) -> Settings:
  """Settings from None (the defaults), a Settings, a dict or an ml_collections ConfigDict."""
  if isinstance(config, Settings):
    base = dataclasses.asdict(config)
  elif config is None:
    base = {}
  else:
    base = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
  base.update(overrides)
  known = {f.name for f in dataclasses.fields(Settings)}
  if set(base) - known:
    raise ValueError(f'unknown localise settings {sorted(set(base) - known)}; known: {sorted(known)}')
  return Settings(**base)


class Result(NamedTuple):
  mask: np.ndarray  # bool [H, W]
  box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 / y1 exclusive
  status: str  # 'ok', 'invalid_saliency', 'flat_saliency' or 'empty_segment'


# ----------------------------------------------------------------------------- checks and seeds


def _check(image, saliency) -> tuple[np.ndarray, np.ndarray]:
  image, saliency = np.asarray(image), np.asarray(saliency)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'image must be [H, W, 3], got shape {image.shape}')
  if image.dtype != np.uint8:
    raise ValueError(f'image must be uint8 RGB, got {image.dtype}')
  if saliency.shape != image.shape[:2]:
    raise ValueError(f'saliency {saliency.shape} must match the image {image.shape[:2]} '
                     '(upsample it first: localise.resize_map)')
  return image, saliency.astype(np.float64)


def resize_map(saliency, shape) -> np.ndarray:
  """Bilinear resize of a map [h, w] to `shape` (H, W), e.g. a 32 px net's map onto the photo."""
  from skimage import transform
  return transform.resize(np.asarray(saliency, np.float64), tuple(shape), order=1, mode='edge',
                          anti_aliasing=False)


def seeds(saliency, fg_quantile: float = 0.95, bg_quantile: float = 0.30):
  """(fg bool [H, W], bg bool [H, W], status): the paper's quantile seeds of a saliency map."""
  saliency = np.asarray(saliency, np.float64)
  if not np.all(np.isfinite(saliency)):
    return None, None, 'invalid_saliency'
  lo, hi = np.quantile(saliency, [bg_quantile, fg_quantile])
  if hi <= lo:  # ties across both quantiles: no ranking to seed from
    return None, None, 'flat_saliency'
  return saliency >= hi, saliency <= lo, 'ok'


def _full(shape, status: str) -> Result:
  h, w = shape
  return Result(np.ones((h, w), bool), (0, 0, w, h), status)


def _from_mask(mask, connectivity: int) -> Result:
  mask = graphcut.largest_component(mask, connectivity=connectivity)
  box = graphcut.bounding_box(mask)
  if box is None:
    return _full(mask.shape, 'empty_segment')
  return Result(mask, box, 'ok')


# ----------------------------------------------------------------------------- baselines


def threshold_box(saliency, fraction: float, *, connectivity: int = 8) -> Result:
  """CAM / Grad-CAM: pixels >= fraction x max, largest connected component, its box."""
  saliency = np.asarray(saliency, np.float64)
  if not np.all(np.isfinite(saliency)):
    return _full(saliency.shape, 'invalid_saliency')
  if saliency.max() <= saliency.min():
    return _full(saliency.shape, 'flat_saliency')
  return _from_mask(saliency >= fraction * saliency.max(), connectivity)


def centre_box(shape, fraction: float) -> Result:
  """A centred box covering `fraction` of each side."""
  h, w = shape
  bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
  y0, x0 = (h - bh) // 2, (w - bw) // 2
  mask = np.zeros((h, w), bool)
  mask[y0:y0 + bh, x0:x0 + bw] = True
  return Result(mask, (x0, y0, x0 + bw, y0 + bh), 'ok')


# ----------------------------------------------------------------------------- colour models (device)


@functools.partial(jax.jit, static_argnames=('num_components', 'num_iters'))
def _colour_costs(keys, pixels, fg_weights, bg_weights, *, num_components, num_iters, covariance_floor):
  """Negative log-likelihoods [B, 2, N] of every pixel under its image's fg and bg colour models.

  keys [B] PRNG keys; pixels [B, N, 3] in [0, 1]; fg_weights / bg_weights [B, N] 0/1 masks. The two
  models of every image are fitted in one vmapped program (fixed shapes, masks as weights).
  """
  fit = functools.partial(gmm.fit_core, num_components=num_components, num_iters=num_iters,
                          covariance_floor=covariance_floor)

  def one_image(key, x, fg_w, bg_w):
    k_fg, k_bg = jax.random.split(key)
    params = jax.vmap(fit, in_axes=(0, None, 0))(jnp.stack([k_fg, k_bg]), x, jnp.stack([fg_w, bg_w]))
    return -jax.vmap(gmm.log_prob, in_axes=(0, None))(params, x)

  return jax.vmap(one_image)(keys, pixels, fg_weights, bg_weights)


def colour_costs(images, fg_masks, bg_masks, keys, s: Settings, chunk_size: int = 8) -> np.ndarray:
  """Host wrapper: images uint8 [B, H, W, 3], masks bool [B, H, W] -> costs [B, 2, H, W] (numpy).

  `chunk_size` images per device call (memory ~ chunk x pixels x components); the last chunk is
  padded by repeating its first image, so that one compiled program serves every chunk.
  """
  b, h, w, _ = images.shape
  out = []
  for start in range(0, b, chunk_size):
    idx = np.arange(start, min(start + chunk_size, b))
    idx = np.concatenate([idx, np.full(chunk_size - len(idx), idx[0])]) if b > chunk_size else idx
    pixels = jnp.asarray(images[idx].reshape(len(idx), h * w, 3), jnp.float32) / 255.0
    costs = _colour_costs(keys[idx], pixels, jnp.asarray(fg_masks[idx].reshape(len(idx), -1), jnp.float32),
                          jnp.asarray(bg_masks[idx].reshape(len(idx), -1), jnp.float32),
                          num_components=s.num_components, num_iters=s.gmm_iters,
                          covariance_floor=s.covariance_floor)
    out.append(np.asarray(jax.device_get(costs))[:min(chunk_size, b - start)])
  return np.concatenate(out).reshape(b, 2, h, w)


# ----------------------------------------------------------------------------- the cut (host, pool)


def _cut(task) -> np.ndarray:
  """One image's graph cut (runs in a worker process): the raw foreground mask."""
  costs, image, fg, bg, s = task
  hard = s['seeds'] == 'hard'
  return graphcut.segment(costs[0], costs[1], image, pairwise_weight=s['pairwise_weight'],
                          connectivity=s['connectivity'], fg_seeds=fg if hard else None,
                          bg_seeds=bg if hard else None)


def _map(fn, tasks, workers: int):
  if workers <= 1 or len(tasks) <= 1:
    return [fn(t) for t in tasks]
  # 'spawn': the parent runs JAX threads, which a fork would copy in an undefined state.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
    return list(pool.map(fn, tasks, chunksize=max(1, len(tasks) // (4 * workers))))


# ----------------------------------------------------------------------------- public API


def localise_batch(images, maps, config=None, *, workers: int = 0, indices=None) -> list[Result]:
  """Localises every image from its map: a list of `Result(mask, box, status)`.

  images: uint8 [H, W, 3] each (a list, or an array [B, H, W, 3]); maps: [H, W] each, same sizes.
  GraphCut: the colour models of all images of one size are fitted in one device call; the cuts
  run in `workers` processes (0 or 1: in this process). Results do not depend on `workers` or on
  the batch: image i's random key is `fold_in(key(seed), indices[i])` (indices default 0..B-1).
  """
  s = settings(config)
  if len(images) != len(maps):
    raise ValueError(f'{len(images)} images but {len(maps)} maps')
  pairs = [_check(image, m) for image, m in zip(images, maps)]
  indices = list(range(len(pairs))) if indices is None else list(indices)
  results: list[Result | None] = [None] * len(pairs)

  if s.method != 'graphcut':
    for i, (_, m) in enumerate(pairs):
      if s.method == 'full':
        results[i] = _full(m.shape, 'ok')
      elif s.method == 'centre':
        results[i] = centre_box(m.shape, s.centre_fraction)
      else:
        results[i] = threshold_box(m, s.threshold, connectivity=s.connectivity)
    return results

  todo, seed_masks = [], {}
  for i, (_, m) in enumerate(pairs):
    fg, bg, status = seeds(m, s.fg_quantile, s.bg_quantile)
    if status != 'ok':
      results[i] = _full(m.shape, status)
    else:
      todo.append(i)
      seed_masks[i] = (fg, bg)
  by_size: dict[tuple, list[int]] = {}
  for i in todo:
    by_size.setdefault(pairs[i][0].shape, []).append(i)

  raw = {}
  for group in by_size.values():
    images_g = np.stack([pairs[i][0] for i in group])
    fg_g = np.stack([seed_masks[i][0] for i in group])
    bg_g = np.stack([seed_masks[i][1] for i in group])
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(s.seed), j))(
        jnp.asarray([indices[i] for i in group]))
    fit_fg, fit_bg = fg_g, bg_g
    for round_ in range(s.iterations + 1):
      costs = colour_costs(images_g, fit_fg, fit_bg, keys, s)
      tasks = [(costs[j], images_g[j], fg_g[j], bg_g[j], dataclasses.asdict(s)) for j in range(len(group))]
      masks = np.stack(_map(_cut, tasks, workers))
      if round_ < s.iterations:  # GrabCut: refit both models on the current labelling
        fit_fg, fit_bg = masks, ~masks
        keys = jax.vmap(lambda k, r=round_: jax.random.fold_in(k, r + 1))(keys)
    for j, i in enumerate(group):
      raw[i] = masks[j]
  for i in todo:
    results[i] = _from_mask(raw[i], s.connectivity)
  return results


def localise(image, saliency, config=None, *, return_status: bool = False):
  """One image uint8 [H, W, 3] and its saliency [H, W] -> (mask bool [H, W], box (x0, y0, x1, y1)).

  x1 / y1 exclusive. `config`: a `Settings`, dict or ConfigDict (default: the paper's pipeline).
  With return_status, also the status string ('ok' or why the full-image box was returned).
  """
  result = localise_batch([image], [saliency], config)[0]
  return tuple(result) if return_status else (result.mask, result.box)
