"""Weakly supervised localisation from a saliency map (paper Sect. 3.2), and its baselines.

The paper's pipeline, for an image and its class saliency map:
  1. seeds: pixels above the `fg_quantile` (95%) quantile of the map are foreground seeds, pixels
     below the `bg_quantile` (30%) quantile background seeds;
  2. colour models: a Gaussian mixture (`gmm`, fitted on device, all images and both models in one
     vmapped call) on the foreground seeds' colours, another on the background seeds';
  3. GraphCut (`graphcut.segment`, PyMaxflow, on the host) of the GrabCut energy with those models;
  4. the largest connected component of the foreground, and its bounding box.
The paper leaves open every setting below; each is a field of `Settings`, with its default:
  num_components 5 (GrabCut's), gmm_iters 10, covariance_floor 1e-4 (colours scaled to [0, 1]), gmm_samples
  2048 (each model is fitted to that many pixels drawn from its seeds: the fit's cost no longer grows with
  the image; 0 fits all seed pixels), pairwise_weight 10 (GrabCut uses 50), connectivity 8, seeds 'hard'
  (seed pixels keep their label in the cut) or 'soft' (seeds only fit the colour models), iterations 0 (the
  paper's single cut; n > 0 adds n GrabCut-style rounds: refit both models on the cut's labels, hard seeds
  still clamped, and cut again), fg_floor 0 (foreground seeds must also reach this fraction of the map's
  maximum; not in the paper).
  Two more: smoothing 0 (blur the map by a Gaussian of that fraction of the shorter side before
  seeding: a region of evidence then outweighs isolated strong pixels) and component 'largest'
  (the paper's; 'all' boxes every foreground region, for objects the cut splits).
  What each setting gives on each set: docs/results/localisation.md and imagenet.md.
Baselines in the same API (`method`): 'threshold' (pixels >= `threshold` x the map's maximum,
largest component's box: the CAM / Grad-CAM protocol, 0.2 and 0.15), 'full' (the whole image),
'centre' (a centred box, `centre_fraction` of each side).

A map that is NaN / infinite somewhere, or flat (constant: a sparse map, mostly exactly 0, is not
flat and is localised from its non-zero pixels, see `seeds`), and a segmentation that comes out empty,
give the full-image box, flagged by the returned `status` ('invalid_saliency', 'flat_saliency',
'empty_segment'; else 'ok'): never a crash, never a silent box. Such a fallback box is a guess like
any other, so every table of results counts them per method (`fallbacks`).
"""

import concurrent.futures
import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import defaults, gmm, graphcut, metrics, xla

METHODS = ('graphcut', 'threshold', 'full', 'centre')


@dataclasses.dataclass(frozen=True)
class Settings:
  """Every setting of a localisation method, with the paper's pipeline as the default.

  The module docstring says what each one does; `__post_init__` refuses settings out of range.

  Attributes:
    method: 'graphcut', 'threshold', 'full' or 'centre'.
    fg_quantile: foreground seeds: pixels at or above this quantile of the map.
    bg_quantile: background seeds: pixels at or below this quantile.
    fg_floor: foreground seeds must also reach this fraction of the map's maximum (not in the paper).
    num_components: components of each colour model.
    gmm_iters: EM iterations.
    covariance_floor: added to the covariances (colours scaled to [0, 1]).
    gmm_samples: seed pixels drawn to fit each model (0: all).
    pairwise_weight: the cut's pairwise weight.
    connectivity: 4 or 8, of the cut and of the components.
    seeds: 'hard' (seed pixels keep their label in the cut) or 'soft' (seeds only fit the models).
    iterations: GrabCut rounds after the paper's single cut.
    threshold: the threshold method's fraction of the maximum.
    centre_fraction: the centre method's fraction of each side.
    smoothing: a Gaussian blur of the map of this fraction of its shorter side before seeding.
    component: 'largest' (the paper's) or 'all': the box of every foreground region.
    seed: the seed of the colour models' pixel sampling.
  """
  method: str = 'graphcut'
  fg_quantile: float = 0.95
  bg_quantile: float = 0.30
  fg_floor: float = 0.0
  num_components: int = 5
  gmm_iters: int = 10
  covariance_floor: float = 1e-4
  gmm_samples: int = 2048
  pairwise_weight: float = 10.0
  connectivity: int = 8
  seeds: str = 'hard'
  iterations: int = 0
  threshold: float = 0.2
  centre_fraction: float = 0.5
  smoothing: float = 0.0
  component: str = 'largest'
  seed: int = 0

  def __post_init__(self):
    integers = ('num_components', 'gmm_iters', 'gmm_samples', 'connectivity', 'iterations', 'seed')
    for name in integers:
      value = getattr(self, name)
      if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ValueError(f'localise settings: {name} must be an integer, got {value!r}')
    checks = [
        (self.method in METHODS, f'method must be one of {METHODS}, got {self.method!r}'),
        (0 <= self.bg_quantile < self.fg_quantile <= 1,
         f'need 0 <= bg_quantile < fg_quantile <= 1, got {self.bg_quantile} and {self.fg_quantile}'),
        (0 <= self.fg_floor < 1, f'fg_floor must lie in [0, 1), got {self.fg_floor}'),
        (self.num_components >= 1, f'num_components must be >= 1, got {self.num_components}'),
        (self.gmm_iters >= 1, f'gmm_iters must be >= 1, got {self.gmm_iters}'),
        (self.covariance_floor > 0, f'covariance_floor must be > 0, got {self.covariance_floor}'),
        (self.gmm_samples >= 0, f'gmm_samples must be >= 0, got {self.gmm_samples}'),
        (self.connectivity in (4, 8), f'connectivity must be 4 or 8, got {self.connectivity}'),
        (self.seeds in ('hard', 'soft'), f"seeds must be 'hard' or 'soft', got {self.seeds!r}"),
        (self.iterations >= 0, f'iterations must be >= 0, got {self.iterations}'),
        (0 < self.threshold <= 1, f'threshold must lie in (0, 1], got {self.threshold}'),
        (0 < self.centre_fraction <= 1, f'centre_fraction must lie in (0, 1], got {self.centre_fraction}'),
        (self.pairwise_weight >= 0, f'pairwise_weight must be >= 0, got {self.pairwise_weight}'),
        (0 <= self.smoothing < 1,
         f'smoothing must lie in [0, 1) (a fraction of the image side), got {self.smoothing}'),
        (self.component in ('largest', 'all'),
         f"component must be 'largest' or 'all', got {self.component!r}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f'localise settings: {message}')


def standard_methods() -> dict[str, dict]:
  """The methods an experiment compares (`defaults.localise_methods`).

  Returns:
    {name: settings dict}.
  """
  return defaults.localise_methods()


def settings(config=None, **overrides) -> Settings:
  """`Settings` from None (the defaults), a Settings, a dict or an ml_collections ConfigDict.

  Args:
    config: the base settings.
    **overrides: fields of `Settings` to change.

  Returns:
    The `Settings`.

  Raises:
    ValueError: unknown fields, naming the known ones, or values out of range.
  """
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
  """A localisation: the mask, its box and how it was obtained.

  Attributes:
    mask: bool [H, W].
    box: (x0, y0, x1, y1), x1 / y1 exclusive.
    status: 'ok', or why the full-image box was returned: 'invalid_saliency', 'flat_saliency' or
      'empty_segment'.
  """
  mask: np.ndarray  # bool [H, W]
  box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 / y1 exclusive
  status: str  # 'ok', 'invalid_saliency', 'flat_saliency' or 'empty_segment'


def fallbacks(statuses) -> int:
  """How many of the statuses are fallback boxes (any status but 'ok').

  Args:
    statuses: `Result.status` strings, or Results.

  Returns:
    The count.
  """
  return sum((s.status if isinstance(s, Result) else str(s)) != 'ok' for s in statuses)


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
  """Bilinear resize of a map, e.g. a 32 px net's map onto the photo.

  Args:
    saliency: [h, w].
    shape: (H, W).

  Returns:
    float64 [H, W].
  """
  from skimage import transform
  return transform.resize(np.asarray(saliency, np.float64), tuple(shape), order=1, mode='edge',
                          anti_aliasing=False)


def seeds(saliency, fg_quantile: float = 0.95, bg_quantile: float = 0.30, fg_floor: float = 0.0):
  """The paper's quantile seeds of a saliency map.

  fg: pixels >= the fg_quantile quantile, bg: pixels <= the bg_quantile quantile. A sparse map (most
  pixels one value, e.g. exactly 0) ties both quantiles. Then every pixel above the tie is a foreground
  seed (fewer than 1 - fg_quantile of the image, all of them top ranked), and background seeds are the
  pixels below the tie plus the tied pixels farthest (Euclidean) from the foreground, bg_quantile of the
  image in all: the tie is broken by distance from the evidence, not by the map. When the tie is the
  map's maximum, the same with the roles swapped.

  Args:
    saliency: [H, W].
    fg_quantile: the foreground quantile.
    bg_quantile: the background quantile.
    fg_floor: > 0 also asks foreground seeds to reach fg_floor x the map's maximum (not in the paper):
      where the object covers less than 1 - fg_quantile of the image, the quantile alone seeds background.

  Returns:
    (fg bool [H, W], bg bool [H, W], status): status 'ok'; 'flat_saliency' for a constant map and
    'invalid_saliency' for one with NaN or infinity, both with fg and bg None.
  """
  saliency = np.asarray(saliency, np.float64)
  if not np.all(np.isfinite(saliency)):
    return None, None, 'invalid_saliency'
  if saliency.max() <= saliency.min():  # a constant map ranks no pixel above another
    return None, None, 'flat_saliency'
  lo, hi = np.quantile(saliency, [bg_quantile, fg_quantile])
  if hi > lo:  # the paper's seeds (every dense map)
    fg, bg = saliency >= hi, saliency <= lo
  else:
    # One value fills both quantiles: a sparse map (a ReLU'd CAM, a few strong pixels, the rest 0).
    # The map does not rank the tied pixels, their distance from the other pixels does.
    tie, n = saliency == hi, saliency.size
    if saliency.max() > hi:  # the tie is low: every pixel above it is in the top 1 - fg_quantile
      fg = saliency > hi
      bg = (saliency < hi) | _farthest(tie, fg, round(bg_quantile * n) - int(np.sum(saliency < hi)))
    else:  # the tie is the maximum (a map low on a few pixels)
      bg = saliency < hi
      fg = _farthest(tie, bg, round((1 - fg_quantile) * n))
  if fg_floor > 0:
    fg &= saliency >= fg_floor * saliency.max()
  return fg, bg, 'ok'


def _farthest(candidates: np.ndarray, others: np.ndarray, count: int) -> np.ndarray:
  """The `count` pixels of `candidates` (bool [H, W]) farthest from any pixel of `others` (more on ties)."""
  from scipy import ndimage
  if count <= 0 or not candidates.any():
    return np.zeros_like(candidates)
  distance = ndimage.distance_transform_edt(~others)
  ranked = np.sort(distance[candidates])[::-1]
  return candidates & (distance >= ranked[min(count, len(ranked)) - 1])


def _full(shape, status: str) -> Result:
  h, w = shape
  return Result(np.ones((h, w), bool), (0, 0, w, h), status)


def smooth(saliency, sigma: float) -> np.ndarray:
  """A map blurred by a Gaussian of `sigma` x its shorter side.

  Args:
    saliency: [H, W].
    sigma: the blur's std as a fraction of the shorter side (0: unchanged).

  Returns:
    [H, W].
  """
  if sigma <= 0:
    return saliency
  from scipy import ndimage
  return ndimage.gaussian_filter(saliency, sigma * min(saliency.shape), mode='nearest')


def _from_mask(mask, connectivity: int, component: str = 'largest') -> Result:
  if component == 'largest':
    mask = graphcut.largest_component(mask, connectivity=connectivity)
  box = metrics.boxes_from_mask(mask)
  if box is None:
    return _full(mask.shape, 'empty_segment')
  return Result(mask, box, 'ok')


# ----------------------------------------------------------------------------- baselines


def threshold_box(saliency, fraction: float, *, connectivity: int = 8, component: str = 'largest') -> Result:
  """The CAM / Grad-CAM box: pixels >= fraction x max, the largest connected component (or all), its box.

  Args:
    saliency: [H, W].
    fraction: of the map's maximum.
    connectivity: 4 or 8.
    component: 'largest' or 'all'.

  Returns:
    A `Result` (the full image, with its status, for a flat or invalid map).
  """
  saliency = np.asarray(saliency, np.float64)
  if not np.all(np.isfinite(saliency)):
    return _full(saliency.shape, 'invalid_saliency')
  if saliency.max() <= saliency.min():
    return _full(saliency.shape, 'flat_saliency')
  return _from_mask(saliency >= fraction * saliency.max(), connectivity, component)


def centre_box(shape, fraction: float) -> Result:
  """A centred box covering `fraction` of each side.

  Args:
    shape: (H, W).
    fraction: of each side.

  Returns:
    A `Result`.
  """
  h, w = shape
  bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
  y0, x0 = (h - bh) // 2, (w - bw) // 2
  mask = np.zeros((h, w), bool)
  mask[y0:y0 + bh, x0:x0 + bw] = True
  return Result(mask, (x0, y0, x0 + bw, y0 + bh), 'ok')


# ----------------------------------------------------------------------------- colour models (device)


# XLA:CPU's older fusion emitters (`xla.COMPILER_OPTIONS`).
@functools.partial(jax.jit, static_argnames=('num_components', 'num_iters', 'samples'),
                   compiler_options=xla.COMPILER_OPTIONS)
def _colour_costs(keys, pixels, fg_weights, bg_weights, *, num_components, num_iters, covariance_floor,
                  samples):
  """Negative log-likelihoods [B, 2, N] of every pixel under its image's fg and bg colour models.

  keys [B] PRNG keys; pixels [B, N, 3] in [0, 1]; fg_weights / bg_weights [B, N] 0/1 masks. The two
  models of every image are fitted in one vmapped program (fixed shapes). samples > 0: each model
  is fitted to that many pixels drawn (with replacement) from its mask, else to all pixels with
  the mask as weights.
  """
  fit = functools.partial(gmm.fit_core, num_components=num_components, num_iters=num_iters,
                          covariance_floor=covariance_floor)

  def model_points(key, x, w):
    if not samples:
      return x, w
    total = jnp.sum(w)
    p = jnp.where(total > 0, w / jnp.maximum(total, 1e-30), 1.0 / w.shape[0])  # empty mask: any pixel
    idx = jax.random.choice(key, x.shape[0], (samples,), p=p)
    return x[idx], jnp.ones(samples, x.dtype)

  def one_image(key, x, fg_w, bg_w):
    keys = jax.random.split(key, 4)
    points, weights = jax.vmap(model_points, in_axes=(0, None, 0))(keys[2:], x, jnp.stack([fg_w, bg_w]))
    params = jax.vmap(fit)(keys[:2], points, weights)
    return -jax.vmap(gmm.log_prob, in_axes=(0, None))(params, x)

  return jax.vmap(one_image)(keys, pixels, fg_weights, bg_weights)


PIXEL_BUCKET = 16384  # large images are padded to a multiple of this many pixels: few compiled shapes


def _padded_size(n: int) -> int:
  """Pixels an image of n pixels is padded to: a power of two up to PIXEL_BUCKET, then multiples."""
  if n <= PIXEL_BUCKET:
    return max(256, 1 << (n - 1).bit_length())
  return -(-n // PIXEL_BUCKET) * PIXEL_BUCKET


def _flatten(arrays, which, padded: int) -> np.ndarray:
  """[len(which), padded, ...]: arrays[i] ([H, W, ...]) flattened over pixels and zero-padded."""
  flat = [arrays[i].reshape(arrays[i].shape[0] * arrays[i].shape[1], *arrays[i].shape[2:]) for i in which]
  return np.stack([np.pad(f, ((0, padded - len(f)),) + ((0, 0),) * (f.ndim - 1)) for f in flat])


def _colour_calls(sizes, chunk_size: int) -> list[tuple[int, list[int], list[int]]]:
  """The device calls of `colour_cost_chunks` for images of `sizes` pixels.

  Each is (padded pixels, the images, the images with the batch padded: sizes 1, 2, 4, ..., chunk_size,
  by repeating its first image).
  """
  buckets: dict[int, list[int]] = {}
  for i, n in enumerate(sizes):
    buckets.setdefault(_padded_size(n), []).append(i)
  calls = []
  for padded, members in buckets.items():
    for start in range(0, len(members), chunk_size):
      part = members[start:start + chunk_size]
      batch = chunk_size if len(members) > chunk_size else 1 << (len(part) - 1).bit_length()
      calls.append((padded, part, part + [part[0]] * (batch - len(part))))
  return calls


def prepare(sizes, configs, *, workers: int = 0, chunk_size: int = 8) -> threading.Thread:
  """Gets GraphCut batches ready in a background thread: the worker pool and the compiled colour models.

  Starts the worker pool's processes (workers > 1) and compiles, ahead of time, the colour-model programs
  that batches of maps of `sizes` under `configs` will call (nothing runs). Join the thread before those
  batches, having done other work meanwhile (XLA compiles on one core).

  Args:
    sizes: (H, W) of each map of one batch.
    configs: localise settings (other methods than GraphCut are skipped).
    workers: the cuts' worker processes.
    chunk_size: images per colour-model call.

  Returns:
    The started thread.
  """
  cuts = {(s.num_components, s.gmm_iters, s.gmm_samples, s.covariance_floor): s
          for s in map(settings, configs) if s.method == 'graphcut'}
  shapes = {(padded, len(full)) for padded, _, full in _colour_calls([h * w for h, w in sizes], chunk_size)}

  def run():
    if workers > 1 and cuts:
      graphcut.start_pool(workers)
    for s in cuts.values():
      for padded, batch in sorted(shapes):
        keys = _image_keys(s.seed, jnp.arange(batch))
        pixels, mask = jnp.zeros((batch, padded, 3), jnp.float32), jnp.zeros((batch, padded), jnp.float32)
        _colour_costs.lower(keys, pixels, mask, mask, num_components=s.num_components, num_iters=s.gmm_iters,
                            covariance_floor=s.covariance_floor, samples=s.gmm_samples).compile()

  thread = threading.Thread(target=run, daemon=True, name='prepare-graphcuts')
  thread.start()
  return thread


def colour_cost_chunks(images, fg_masks, bg_masks, keys, s: Settings, chunk_size: int = 8):
  """`colour_costs` one device call at a time, each dispatched before the previous one's costs are read.

  So the host can use the costs (e.g. start their cuts) while the device computes the next.

  Args:
    images: uint8 [H, W, 3] each (any sizes).
    fg_masks: bool [H, W] each, the foreground seeds.
    bg_masks: bool [H, W] each, the background seeds.
    keys: [B] JAX random keys, one per image.
    s: the `Settings`.
    chunk_size: images per device call.

  Yields:
    {image index: costs float [2, H, W]} per call.
  """
  sizes = [im.shape[0] * im.shape[1] for im in images]
  calls = _colour_calls(sizes, chunk_size)

  def dispatch(padded, part, full):
    pixels = jnp.asarray(_flatten(images, full, padded), jnp.float32) / 255.0
    fg = jnp.asarray(_flatten(fg_masks, full, padded), jnp.float32)
    bg = jnp.asarray(_flatten(bg_masks, full, padded), jnp.float32)
    return part, _colour_costs(keys[np.asarray(full)], pixels, fg, bg, num_components=s.num_components,
                               num_iters=s.gmm_iters, covariance_floor=s.covariance_floor,
                               samples=s.gmm_samples)

  pending = dispatch(*calls[0]) if calls else None
  for c in range(len(calls)):
    part, costs = pending
    if c + 1 < len(calls):
      pending = dispatch(*calls[c + 1])
    costs = np.asarray(jax.device_get(costs))
    yield {i: costs[j, :, :sizes[i]].reshape(2, *images[i].shape[:2]) for j, i in enumerate(part)}


def colour_costs(images, fg_masks, bg_masks, keys, s: Settings, chunk_size: int = 8) -> list[np.ndarray]:
  """Each pixel's -log p under the foreground and the background colour model, fitted on the device.

  The pixels of every image are flattened and padded (zero weight) to a power of two (small images) or a
  multiple of PIXEL_BUCKET pixels, images of the same padded size go `chunk_size` at a time to the device
  (memory ~ chunk x pixels x components), and a short last chunk repeats its first image: images of many
  sizes (VOC) share a few compiled programs.

  Args:
    images: uint8 [H, W, 3] each (any sizes).
    fg_masks: bool [H, W] each, the foreground seeds.
    bg_masks: bool [H, W] each, the background seeds.
    keys: [B] JAX random keys, one per image.
    s: the `Settings`.
    chunk_size: images per device call.

  Returns:
    A list of NumPy costs [2, H, W] (foreground, background).
  """
  out: list[np.ndarray | None] = [None] * len(images)
  for done in colour_cost_chunks(images, fg_masks, bg_masks, keys, s, chunk_size):
    for i, costs in done.items():
      out[i] = costs
  return out


@jax.jit
def _fold_in(keys, data):
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


@jax.jit
def _image_keys(seed, indices):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(indices)


# ----------------------------------------------------------------------------- public API


def localise_batch(images, maps, config=None, *, workers: int = 0, indices=None) -> list[Result]:
  """Localises every image from its map.

  GraphCut: the colour models of up to 8 images are fitted in one device call; the cuts run in `workers`
  processes (0 or 1: in this process), the maps of one image (the same array object, e.g. its top-k
  classes' maps) in one task that computes the image's pairwise term once. Results do not depend on
  `workers` or on the batch: image i's random key is `fold_in(key(seed), indices[i])`.

  Args:
    images: uint8 [H, W, 3] each (a list, or an array [B, H, W, 3]).
    maps: [H, W] each, the images' sizes.
    config: a `Settings`, dict or ConfigDict (default: the paper's pipeline).
    workers: the cuts' worker processes.
    indices: each image's index for its random key (default 0..B-1).

  Returns:
    A list of `Result`.
  """
  return start_batch(images, maps, config, workers=workers, indices=indices)()


def start_batch(images, maps, config=None, *, workers: int = 0,
                indices=None) -> Callable[[], list[Result]]:
  """`localise_batch` in two halves: this process's share now, the cuts queued in the worker pool.

  Batches started one after another (e.g. several methods) keep the workers busy from one batch's cuts to
  the next's. With GrabCut rounds (`iterations`) this call waits for every round's cuts but the last.

  Args:
    images: as `localise_batch` takes them.
    maps: as `localise_batch` takes them.
    config: as `localise_batch` takes it.
    workers: as `localise_batch` takes it.
    indices: as `localise_batch` takes them.

  Returns:
    A function of no argument that waits for the cuts and returns the list of `Result`.

  Raises:
    ValueError: as many images as maps are needed.
  """
  s = settings(config)
  if len(images) != len(maps):
    raise ValueError(f'{len(images)} images but {len(maps)} maps')
  pairs = [_check(image, m) for image, m in zip(images, maps)]
  if s.smoothing:
    pairs = [(image, smooth(m, s.smoothing) if np.all(np.isfinite(m)) else m) for image, m in pairs]
  indices = list(range(len(pairs))) if indices is None else list(indices)
  results: list[Result | None] = [None] * len(pairs)

  if s.method != 'graphcut':
    for i, (_, m) in enumerate(pairs):
      if s.method == 'full':
        results[i] = _full(m.shape, 'ok')
      elif s.method == 'centre':
        results[i] = centre_box(m.shape, s.centre_fraction)
      else:
        results[i] = threshold_box(m, s.threshold, connectivity=s.connectivity, component=s.component)
    return lambda: results

  todo, seed_masks = [], {}
  for i, (_, m) in enumerate(pairs):
    fg, bg, status = seeds(m, s.fg_quantile, s.bg_quantile, s.fg_floor)
    if status != 'ok':
      results[i] = _full(m.shape, status)
    else:
      todo.append(i)
      seed_masks[i] = (fg, bg)
  if not todo:
    return lambda: results
  images_t = [pairs[i][0] for i in todo]
  fg_t, bg_t = [seed_masks[i][0] for i in todo], [seed_masks[i][1] for i in todo]
  groups: dict[int, list[int]] = {}  # the maps of one image (the same array) go to one task
  for j, im in enumerate(images_t):
    groups.setdefault(id(im), []).append(j)
  order = list(groups.values())
  group_of = {j: g for g, js in enumerate(order) for j in js}
  cut_settings = dataclasses.asdict(s)

  def cut(fit_fg, fit_bg, keys) -> list[concurrent.futures.Future]:
    """One round: per image (`order`), a future of its maps' cut masks.

    An image's cuts start as soon as the colour costs of its maps are back, while the device fits the next
    images' colour models.
    """
    costs, missing, cuts = {}, [len(js) for js in order], [None] * len(order)
    for done in colour_cost_chunks(images_t, fit_fg, fit_bg, keys, s):
      costs.update(done)
      for j in done:
        g = group_of[j]
        missing[g] -= 1
        if not missing[g]:
          task = [(costs[i], fg_t[i], bg_t[i]) for i in order[g]]
          cuts[g] = graphcut.start(graphcut.cut_image, (images_t[order[g][0]], cut_settings, task), workers)
    return cuts

  def masks_of(cuts) -> list[np.ndarray]:
    masks = [None] * len(todo)
    for js, future in zip(order, cuts):
      for j, mask in zip(js, future.result()):
        masks[j] = mask
    return masks

  keys = _image_keys(s.seed, jnp.asarray([indices[i] for i in todo]))
  cuts = cut(fg_t, bg_t, keys)
  for round_ in range(s.iterations):  # GrabCut: refit both models on the current labelling
    masks = masks_of(cuts)
    keys = _fold_in(keys, round_ + 1)
    cuts = cut(masks, [~m for m in masks], keys)

  def finish() -> list[Result]:
    for i, mask in zip(todo, masks_of(cuts)):
      results[i] = _from_mask(mask, s.connectivity, s.component)
    return results

  return finish


def localise(image, saliency, config=None, *, return_status: bool = False):
  """One image's box from its saliency map: the paper's pipeline by default (Sect. 3.2).

  Args:
    image: uint8 [H, W, 3].
    saliency: [H, W].
    config: a `Settings`, dict or ConfigDict (default: the paper's pipeline).
    return_status: also return the status ('ok' or why the full-image box was returned).

  Returns:
    (mask bool [H, W], box (x0, y0, x1, y1) with x1 / y1 exclusive), and the status with return_status.
  """
  result = localise_batch([image], [saliency], config)[0]
  return tuple(result) if return_status else (result.mask, result.box)
