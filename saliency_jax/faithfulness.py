"""Faithfulness and sanity metrics that run the model (scoring alone is in `metrics`).

* Deletion / insertion AUC (Petsiuk et al. 2018, RISE protocol): `deletion_insertion`.
* The cascading model randomisation of Adebayo et al. 2018: `cascading_randomisation`, over the
  weighted layers of the model's layer graph (`randomisation_groups`), replaced one more at a time,
  top-down, by the weights of a freshly initialised copy (`fresh_like`).

A model in training mode is refused (`saliency.check_eval_mode`); no function here changes the
caller's model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import filters, graph, metrics, models, parallel, rules, saliency

# ------------------------------------------------------------------------- deletion / insertion


@functools.partial(jax.jit, static_argnames=('output',))
def _curves(model, images, labels, ranks, canvases, counts, *, output):
  """Scores of `labels` along the path that moves pixels of rank < count from image to canvas."""
  b, n = images.shape[0], counts.shape[0]
  take = (ranks[:, None] < counts[None, :, None, None])[..., None]  # [B, n, H, W, 1]
  x = jnp.where(take, canvases[:, None], images[:, None]).reshape(b * n, *images.shape[1:])
  scores = model(x)
  if output == 'probability':
    scores = jax.nn.softmax(scores, axis=-1)
  return jnp.take_along_axis(scores.reshape(b, n, -1), labels[:, None, None], axis=2)[..., 0]


def _blur(images, sigma):
  return jax.vmap(lambda im: filters.gaussian_blur(im, sigma))(images)


def deletion_insertion(model, images, labels, maps, *, steps: int = 64, deletion_value: float = 0.0,
                       insertion_blur: float = 5.0, output: str = 'probability',
                       chunk_size: int | None = None) -> dict:
  """Deletion and insertion AUC (Petsiuk et al. 2018, the RISE protocol) of saliency maps.

  Deletion: the pixels, most salient first, are set to `deletion_value` in `steps` equal steps, and the
  class's `output` is read at each of the steps + 1 points; insertion starts from the image blurred with
  a Gaussian of std `insertion_blur` px and puts the original pixels back in the same order. AUC: the
  trapezoid area under each curve over the fraction of pixels [0, 1]. Lower deletion / higher insertion
  AUC = a more faithful map. Cost: 2 (steps + 1) forward passes per image, batched per chunk.

  Args:
    model: the model.
    images: float [B, H, W, C], model space.
    labels: int [B].
    maps: [B, H, W], the saliency maps.
    steps: the number of steps of each curve.
    deletion_value: what deleted pixels are set to (0: the training mean in model space).
    insertion_blur: the std in pixels of the blur insertion starts from.
    output: 'probability' (softmax, as in RISE) or 'score'.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    {'deletion': [B], 'insertion': [B], 'deletion_curve': [B, steps + 1], 'insertion_curve':
    [B, steps + 1], 'fractions': [steps + 1]}, NumPy arrays.

  Raises:
    ValueError: an unknown output, steps < 1, maps of the wrong shape or not finite.
  """
  if output not in ('probability', 'score'):
    raise ValueError(f"output must be 'probability' or 'score', got {output!r}")
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  model = rules.as_model(model, images)
  images, labels = saliency.check_batch(model, images, labels)
  maps = np.asarray(maps)
  if maps.shape != images.shape[:3]:
    raise ValueError(f'maps must be [B, H, W] {images.shape[:3]}, got {maps.shape}')
  if not np.all(np.isfinite(maps)):  # NaN would rank arbitrarily: the curves would mean nothing
    raise ValueError(f'maps hold {int(np.sum(~np.isfinite(maps)))} NaN or infinite values')
  ranks = jnp.asarray(metrics.pixel_ranks(maps))
  hw = images.shape[1] * images.shape[2]
  counts = jnp.asarray(np.round(np.linspace(0, hw, steps + 1)), jnp.int32)
  fn = functools.partial(_curves, model, counts=counts, output=output)
  deleted = jnp.full_like(images, deletion_value)
  deletion = parallel.chunked(lambda x, y, r, c: fn(x, y, r, c), (images, labels, ranks, deleted),
                               chunk_size)
  # insertion: from the blurred image, pixels of rank < count come back: the same path with the roles swapped
  blurred = _blur(images, insertion_blur)
  insertion = parallel.chunked(lambda x, y, r, c: fn(c, y, r, x), (images, labels, ranks, blurred),
                                chunk_size)
  saliency.check_finite((deletion, insertion), 'deletion_insertion')
  deletion, insertion = np.asarray(deletion, np.float64), np.asarray(insertion, np.float64)
  fractions = np.asarray(counts) / hw
  def auc(curves):
    return np.sum((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions), axis=1)
  return {'deletion': auc(deletion), 'insertion': auc(insertion), 'deletion_curve': deletion,
          'insertion_curve': insertion, 'fractions': fractions}


# ------------------------------------------------------------------------- sanity: model randomisation


def randomisation_groups(model) -> list[tuple[str, list]]:
  """The model's layers with weights, top-down; BatchNorm goes with its convolution.

  Args:
    model: an NNX model.

  Returns:
    [(name, [modules])], the top layer first.
  """
  groups = []
  for step in graph.steps_of(model):
    if step.kind in graph.WEIGHTED:
      groups.append((step.name, [step.module]))
    elif step.kind == 'batch_norm':
      groups[-1][1].append(step.module)
  return groups[::-1]


def randomise(model, fresh, names: set[str]):
  """A copy of a model whose layers in `names` hold another model's parameters (BatchNorm statistics kept).

  Args:
    model: the trained model.
    fresh: the same architecture, freshly initialised (`fresh_like`).
    names: the names of `randomisation_groups` to take from `fresh`.

  Returns:
    The copy.
  """
  model = nnx.clone(model)
  fresh_by_path = dict(nnx.iter_modules(fresh))
  path_of = {id(m): p for p, m in nnx.iter_modules(model)}
  for name, modules in randomisation_groups(model):
    if name not in names:
      continue
    for module in modules:
      for path, sub in nnx.iter_modules(module):
        target = fresh_by_path[path_of[id(module)] + path]
        for attr, var in vars(sub).items():
          if isinstance(var, nnx.Param):
            var[...] = getattr(target, attr)[...]
  return model


def fresh_like(model, seed: int):
  """The same architecture as `model`, freshly initialised with `seed`, in inference mode.

  `model.fresh(seed)` (every model of `saliency_jax.models` has it); for another NNX model, a copy whose
  convolution and dense kernels are drawn anew (LeCun normal, Flax's default) and whose biases and
  BatchNorm scales / offsets are reset to 0 / 1 (running statistics kept).

  Args:
    model: an NNX model.
    seed: the initialisation's seed.

  Returns:
    The fresh model.
  """
  if callable(getattr(model, 'fresh', None)):
    fresh = model.fresh(seed)
  else:
    fresh = models.reinitialised(model, seed)
  saliency.check_eval_mode(fresh)
  return fresh


def cascading_randomisation(model, fresh, attribute) -> dict:
  """Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top layer down.

  The layers of `randomisation_groups` are replaced by `fresh`'s one more at a time, top-down, and each
  map is compared with the original map by Spearman rank correlation. A map that stays similar while the
  weights it explains are destroyed fails the check.

  Args:
    model: the trained NNX model.
    fresh: the same architecture, freshly initialised (`fresh_like`).
    attribute: model -> {kind: [B, H, W]} maps of fixed images and labels, e.g. {'absolute', 'signed'}
      (a map with and without absolute values) or one kind per method.

  Returns:
    {'layers': [names, top-down], kind: [mean rho per stage], f'{kind}_std': [std per stage]} per kind.
  """
  original = attribute(model)
  groups = [name for name, _ in randomisation_groups(model)]
  out = {'layers': groups, **{kind: [] for kind in original}, **{f'{kind}_std': [] for kind in original}}
  for k in range(1, len(groups) + 1):
    maps = attribute(randomise(model, fresh, set(groups[:k])))
    for kind in original:
      rhos = [metrics.spearman(a, b) for a, b in zip(maps[kind], original[kind])]
      out[kind].append(float(np.mean(rhos)))
      out[f'{kind}_std'].append(float(np.std(rhos)))
  return out
