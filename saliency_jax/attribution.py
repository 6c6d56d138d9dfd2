"""Attribution baselines to compare the paper's saliency maps with, behind one API.

Every method is called as `method(model, images, labels, *, chunk_size=None, **settings)` with
images [B, H, W, C] (preprocessed as the model expects) and labels [B] int, and returns

* input-space attributions [B, H, W, C] for `gradient` (the paper's dS_c/dI), `gradient_x_input`,
  `smoothgrad`, `integrated_gradients`, `gradient_shap`, `guided_backprop`, `deconvnet`, `blur_ig`,
  `guided_ig`, `deeplift` and `lrp`;
* maps [B, H, W] for `grad_cam`, `cam`, `occlusion`, the rest of pytorch-grad-cam's CAM family
  (`CAM_FAMILY`: Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM, Eigen-CAM, Score-CAM, Ablation-CAM;
  `cam_family`), `rise` and `xrai`, which attribute to regions, not to pixel channels (the layer methods
  upsampled bilinearly from their layer's resolution).

`to_map` reduces either to the [B, H, W] map compared everywhere else: max_c |a_c| for
input-space attributions (the paper's Sect. 3.1 reduction), max(m, 0) for region maps; with
`signed=True`, sum_c a_c and m (the sanity check measures both).

Each call jits once per chunk of `chunk_size` images (default: all at once) with the model as an
argument and the saliency programs' compiler options (`saliency.COMPILER_OPTIONS`); the per-image
work is batched, never a Python loop: SmoothGrad's noisy copies and Integrated Gradients' path points
are one batch of forward passes and one VJP, occlusion's patches one batch of forward passes; the axes
that multiply the batch by hundreds (Score-CAM's and Ablation-CAM's channels, RISE's masks) go a
fixed number at a time through a `lax.map` / `lax.scan`, so memory does not grow with them.
Randomness comes from an explicit key, folded with each image's index, so chunking does not change
the result.

Layer activations for Grad-CAM and CAM come from the model's layer graph (`saliency_jax.graph`,
the same steps its `__call__` runs and the DeconvNet reconstruction walks), split at a named layer
into `features` and `head` without editing or hooking the model; they equal what `nnx.capture`
records for that layer (tested).

No function here changes the caller's model; one in training mode is refused.
"""

import concurrent.futures
import dataclasses
import functools
import inspect
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import deconvnet, graph, parallel, propagation, rules, saliency, xla

IG_RULES = ('midpoint', 'trapezoid', 'gauss_legendre')


def _prepare(model, images, labels):
  """(model as `rules.as_model` gives it, images, labels), checked."""
  model = rules.as_model(model, images)
  return (model, *saliency.check_batch(model, images, labels))


def _one_hot_vjp(model, x, labels, relu=jax.nn.relu):
  """dS_label/dx for a batch x [N, H, W, C] and labels [N] (one forward, one backward pass).

  Its convolutions in XLA:CPU's canonical layout (`xla.canonical_convolutions`): the methods that call it
  inside a loop body would otherwise run the backward pass's convolutions several times slower.
  """
  def scores_and_grads(x):
    scores, vjp = jax.vjp(lambda z: model(z, relu=relu), x)
    return scores, vjp(jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype))[0]
  scores, grads = xla.canonical_convolutions(scores_and_grads)(x)
  return saliency.mark_bad(grads, saliency.finite_rows(scores, grads))


# ----------------------------------------------------------------------------- input-space methods


def gradient(model, images, labels, *, chunk_size: int | None = None) -> jax.Array:
  """dS_c/dI, the paper's Sect. 3.1 attribution (`saliency.input_gradients`).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  return saliency.input_gradients(model, images, labels, chunk_size=chunk_size)


def gradient_x_input(model, images, labels, *, chunk_size: int | None = None) -> jax.Array:
  """Gradient x input, I * dS_c/dI (Shrikumar et al. 2016).

  The input is the model-space image (after normalisation).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  fn = functools.partial(_gradient_x_input, model)
  return saliency.check_finite(parallel.chunked(fn, (images, labels), chunk_size), 'gradient x input')


@xla.jit
def _gradient_x_input(model, images, labels):
  return images * _one_hot_vjp(model, images, labels)


def guided_backprop(model, images, labels, *, chunk_size: int | None = None) -> jax.Array:
  """Guided backpropagation (Springenberg et al. 2015): the VJP with the guided ReLU rule.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  return saliency.input_gradients(model, images, labels, relu=deconvnet.guided_relu, chunk_size=chunk_size)


def deconvnet_attribution(model, images, labels, *, chunk_size: int | None = None) -> jax.Array:
  """Zeiler & Fergus' DeconvNet reconstruction of the class score: the VJP with the DeconvNet rule.

  Equal to the explicit reconstruction, `deconvnet.reconstruct` (the Sect. 4 proof).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  return saliency.input_gradients(model, images, labels, relu=deconvnet.deconvnet_relu, chunk_size=chunk_size)


def random_key(key, method: str) -> jax.Array:
  """A method's random key, checked: `jax.random.key(0)` for None.

  Args:
    key: None or a JAX random key (new style, or a raw uint32 [2]).
    method: the method's name, for the error.

  Returns:
    The key.

  Raises:
    ValueError: anything else.
  """
  key = jax.random.key(0) if key is None else key
  if not isinstance(key, jax.Array) or not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                             or (key.dtype == jnp.uint32 and key.shape == (2,))):
    raise ValueError(f'{method}: key must be a JAX random key such as jax.random.key(0), got {key!r}')
  return key


@functools.partial(jax.jit, static_argnames=('samples',))
def _noisy_copies(images, index, key, noise, *, samples):
  """Each image plus Gaussian noise of std noise x its range, [B, S, H, W, C].

  The noise is drawn from key folded with the image's index. Compiled apart from the gradients (default
  compiler options): the noise is the same bits whichever options the model's program takes.
  """
  span = jnp.max(images, axis=(1, 2, 3)) - jnp.min(images, axis=(1, 2, 3))
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
  eps = jax.vmap(lambda k: jax.random.normal(k, (samples, *images.shape[1:]), images.dtype))(keys)
  return images[:, None] + (noise * span)[:, None, None, None, None] * eps


@xla.jit
def _mean_gradient(model, noisy, labels):
  """The mean over the S copies of dS_label/dx: noisy [B, S, H, W, C], labels [B] -> [B, H, W, C]."""
  b, samples = noisy.shape[:2]
  grads = _one_hot_vjp(model, noisy.reshape(b * samples, *noisy.shape[2:]), jnp.repeat(labels, samples))
  return grads.reshape(noisy.shape).mean(axis=1)


def _smoothgrad(model, images, labels, index, key, noise, *, samples):
  return _mean_gradient(model, _noisy_copies(images, index, key, noise, samples=samples), labels)


def _smoothgrad_chunked(model, images, labels, index, key, noise, samples, *, sample_chunk):
  """SmoothGrad with the noisy copies a chunk at a time, the gradients' sum carried by a loop.

  Copy s of image i takes the noise of `fold_in(fold_in(key, i), s)`, so the result does not depend on
  sample_chunk; copies past `samples` (padding the last chunk) weigh 0.
  """
  span = jnp.max(images, axis=(1, 2, 3)) - jnp.min(images, axis=(1, 2, 3))
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
  n_chunks = -(-samples.shape[0] // sample_chunk)

  def step(i, total):
    chunk = i * sample_chunk + jnp.arange(sample_chunk)
    eps = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(k, s), images.shape[1:],
                                                                  images.dtype))(chunk))(keys)
    noisy = images[:, None] + (noise * span)[:, None, None, None, None] * eps  # [B, c, H, W, C]
    grads = _one_hot_vjp(model, noisy.reshape(-1, *images.shape[1:]), jnp.repeat(labels, sample_chunk))
    keep = (chunk < samples.shape[0]).astype(images.dtype)
    return total + jnp.tensordot(grads.reshape(noisy.shape), keep, axes=((1,), (0,)))
  return jax.lax.fori_loop(0, n_chunks, step, jnp.zeros_like(images)) / samples.shape[0]


smoothgrad_kernel = xla.jit(_smoothgrad_chunked, static_argnames=('sample_chunk',))
smoothgrad_kernel.__doc__ = """SmoothGrad's jitted kernel with the noisy copies in chunks, no checks.

(model, images, labels, index [B], key, noise, samples: an array [S] (only its length counts), *,
sample_chunk) -> [B, H, W, C]; public so that its memory can be measured (`.lower(...).compile()`).
"""


def smoothgrad(model, images, labels, *, key=None, samples: int = 25, noise: float = 0.15,
               chunk_size: int | None = None, sample_chunk: int | None = None) -> jax.Array:
  """SmoothGrad (Smilkov et al. 2017): the mean gradient over `samples` noisy copies of each image.

  Noise: Gaussian with std `noise` x (max - min) of each image (their 10-20% recommendation), from
  `key` folded with the image's index in the batch, so chunking does not change the result. All copies
  of a chunk go through one forward and one backward pass (memory: chunk_size x samples images).
  noise = 0 gives the plain gradient.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    key: a JAX random key (default `jax.random.key(0)`).
    samples: the number of noisy copies, >= 1.
    noise: the noise's std as a fraction of each image's value range, >= 0.
    chunk_size: images per compiled call (default: all at once).
    sample_chunk: noisy copies per step of a `lax.fori_loop` (memory: chunk_size x sample_chunk images,
      whatever `samples`); copy s of image i then takes the noise of fold_in(fold_in(key, i), s), the
      same whatever sample_chunk (but not the noise of the unchunked call). None: all copies in one
      batch.

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  if not saliency.is_int(samples) or samples < 1 or not noise >= 0:
    raise ValueError(f'smoothgrad needs an integer samples >= 1 and noise >= 0, got samples {samples!r}, '
                     f'noise {noise!r}')
  key = random_key(key, 'smoothgrad')
  if sample_chunk is None:  # every copy of a chunk of images in one batch
    fn = functools.partial(_smoothgrad, model, key=key, noise=jnp.float32(noise), samples=samples)
  else:
    if not saliency.is_int(sample_chunk) or sample_chunk < 1:
      raise ValueError(f'smoothgrad: sample_chunk must be a positive integer, got {sample_chunk!r}')
    fn = functools.partial(smoothgrad_kernel, model, key=key, noise=jnp.float32(noise),
                           samples=jnp.zeros(samples), sample_chunk=int(sample_chunk))
  index = jnp.arange(images.shape[0])
  out = parallel.chunked(lambda x, y, i: fn(x, y, i), (images, labels, index), chunk_size)
  return saliency.check_finite(out, 'smoothgrad')


def path_points(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
  """Integration nodes in [0, 1] and their weights for `steps` points of a quadrature rule.

  Args:
    steps: the number of points.
    rule: 'gauss_legendre', 'midpoint' or 'trapezoid'.

  Returns:
    (nodes float [steps], weights float [steps] summing to 1).

  Raises:
    ValueError: an unknown rule, or too few steps for it.
  """
  if rule not in IG_RULES:
    raise ValueError(f'rule must be one of {IG_RULES}, got {rule!r}')
  if steps < (2 if rule == 'trapezoid' else 1):
    raise ValueError(f'integrated_gradients needs steps >= {2 if rule == "trapezoid" else 1} for {rule}, '
                     f'got {steps}')
  if rule == 'midpoint':
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
  if rule == 'trapezoid':
    w = np.full(steps, 1.0 / (steps - 1))
    w[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), w
  nodes, weights = np.polynomial.legendre.leggauss(steps)
  return (nodes + 1) / 2, weights / 2


@xla.jit
def _integrated_gradients(model, images, labels, baselines, alphas, weights):
  b, n = images.shape[0], alphas.shape[0]
  delta = images - baselines
  path = baselines[:, None] + alphas[None, :, None, None, None] * delta[:, None]  # [B, n, H, W, C]
  grads = _one_hot_vjp(model, path.reshape(b * n, *images.shape[1:]), jnp.repeat(labels, n))
  mean_grad = jnp.tensordot(grads.reshape(b, n, *images.shape[1:]), weights, axes=((1,), (0,)))
  return delta * mean_grad


def _ig_chunked(model, images, labels, baselines, alphas, weights):
  """Integrated Gradients with the path points a chunk at a time, the weighted sum carried by a scan.

  alphas, weights: [n_chunks, step_chunk] (padded points weigh 0).
  """
  b = images.shape[0]
  delta = images - baselines

  def step(total, chunk):
    a, w = chunk
    path = baselines[:, None] + a[None, :, None, None, None] * delta[:, None]  # [B, s, H, W, C]
    grads = _one_hot_vjp(model, path.reshape(-1, *images.shape[1:]), jnp.repeat(labels, a.shape[0]))
    return total + jnp.tensordot(grads.reshape(b, a.shape[0], *images.shape[1:]), w, axes=((1,), (0,))), None
  total, _ = jax.lax.scan(step, jnp.zeros_like(images), (alphas, weights))
  return delta * total


ig_kernel = xla.jit(_ig_chunked)
ig_kernel.__doc__ = """Integrated Gradients' jitted kernel with the path points in chunks, no checks.

(model, images, labels, baselines, alphas [n_chunks, step_chunk], weights [n_chunks, step_chunk]) ->
[B, H, W, C]; public so that its memory can be measured (`.lower(...).compile()`).
"""


def chunk_points(alphas, weights, step_chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """Path points and weights in chunks of `step_chunk` (n if fewer), the last padded with points of weight 0.

  Args:
    alphas: [n] nodes.
    weights: [n] weights.
    step_chunk: points per chunk.

  Returns:
    (alphas [n_chunks, min(step_chunk, n)], weights the same shape).
  """
  step_chunk = min(step_chunk, len(alphas))  # padded points cost passes too
  pad = -len(alphas) % step_chunk
  return (np.pad(alphas, (0, pad)).reshape(-1, step_chunk), np.pad(weights, (0, pad)).reshape(-1, step_chunk))


def baselines_of(images, baseline) -> jax.Array:
  """The baseline of each image, checked: x' for Integrated Gradients, DeepLift and their kin.

  Args:
    images: float [B, H, W, C].
    baseline: None (the zero image, which in model space is the training mean), one image [H, W, C] or
      one per image [B, H, W, C].

  Returns:
    [B, H, W, C], of the images' dtype.

  Raises:
    ValueError: a baseline of another shape, or holding NaN or infinite values.
  """
  if baseline is None:
    return jnp.zeros_like(images)
  baselines = jnp.asarray(baseline, images.dtype)
  if not bool(jnp.all(jnp.isfinite(baselines))):  # the path from it would carry NaN into every attribution
    raise ValueError(f'baseline holds {int(jnp.sum(~jnp.isfinite(baselines)))} NaN or infinite values')
  if baselines.shape == images.shape[1:]:
    baselines = jnp.broadcast_to(baselines, images.shape)
  if baselines.shape != images.shape:
    raise ValueError(f'baseline must be [H, W, C] {images.shape[1:]} or [B, H, W, C] {images.shape}, '
                     f'got {baselines.shape}')
  return baselines


def integrated_gradients(model, images, labels, *, baseline=None, steps: int = 32,
                         rule: str = 'gauss_legendre', chunk_size: int | None = None,
                         step_chunk: int | None = None) -> jax.Array:
  """Integrated Gradients (Sundararajan et al. 2017).

  (x - x') * integral_0^1 dS_c/dI(x' + a (x - x')) da, the integral by `rule` over `steps` points. All
  path points of a chunk are one forward and one backward pass (memory: chunk_size x steps images), or,
  with `step_chunk`, step_chunk points at a time.
  Completeness: the attributions sum to S_c(x) - S_c(x') up to the quadrature error.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    baseline: x': None (the zero image, which in model space is the training mean), one image
      [H, W, C] or one per image [B, H, W, C].
    steps: the number of path points.
    rule: the quadrature, 'gauss_legendre', 'midpoint' or 'trapezoid'.
    chunk_size: images per compiled call (default: all at once).
    step_chunk: path points per step of a `lax.scan` (memory: chunk_size x step_chunk images, whatever
      `steps`); None: all of them in one batch (memory: chunk_size x steps images).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: a bad baseline, steps or rule; bad images, labels or model; non-finite scores or
      gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  alphas, weights = path_points(steps, rule)
  baselines = baselines_of(images, baseline)
  if step_chunk is None:  # every path point of a chunk of images in one batch
    fn = functools.partial(_integrated_gradients, model, alphas=jnp.asarray(alphas, images.dtype),
                           weights=jnp.asarray(weights, images.dtype))
  else:
    if not saliency.is_int(step_chunk) or step_chunk < 1:
      raise ValueError(f'integrated_gradients: step_chunk must be a positive integer, got {step_chunk!r}')
    alphas, weights = chunk_points(alphas, weights, int(step_chunk))
    fn = functools.partial(ig_kernel, model, alphas=jnp.asarray(alphas, images.dtype),
                           weights=jnp.asarray(weights, images.dtype))
  out = parallel.chunked(lambda x, y, z: fn(x, y, z), (images, labels, baselines), chunk_size)
  return saliency.check_finite(out, 'integrated_gradients')


def gradient_shap_draws(key, index, samples, num_baselines: int, shape, dtype=jnp.float32):
  """GradientSHAP's random draws for images `index` and samples `samples`: one key per (image, sample).

  Sample s of image i takes `fold_in(fold_in(key, i), s)`, split three ways: the baseline's index
  (uniform over the num_baselines), the path point alpha ~ U[0, 1) and standard normal noise of the
  image's shape. The draws of a sample do not depend on which other samples or images share its chunk.

  Args:
    key: a JAX random key.
    index: int [B], the images' indices in the batch.
    samples: int [S], the samples' indices.
    num_baselines: N, the size of the baseline distribution.
    shape: (H, W, C).
    dtype: the float dtype of alpha and the noise.

  Returns:
    (baseline indices int32 [B, S], alphas [B, S], noise [B, S, H, W, C]).
  """
  def one(i, s):
    k_pick, k_alpha, k_noise = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, i), s), 3)
    return (jax.random.randint(k_pick, (), 0, num_baselines), jax.random.uniform(k_alpha, (), dtype),
            jax.random.normal(k_noise, tuple(shape), dtype))
  return jax.vmap(lambda i: jax.vmap(lambda s: one(i, s))(samples))(index)


def _gradient_shap_chunked(model, images, labels, baselines, index, key, stdev, samples, *, sample_chunk):
  """GradientSHAP with the samples a chunk at a time, the attributions' sum carried by a loop.

  samples: an array [S] (only its length counts); samples past S (padding the last chunk) weigh 0.
  """
  n_samples = samples.shape[0]

  def step(i, total):
    chunk = i * sample_chunk + jnp.arange(sample_chunk)
    pick, alpha, eps = gradient_shap_draws(key, index, chunk, baselines.shape[0], images.shape[1:],
                                           images.dtype)
    noisy = images[:, None] + stdev * eps  # [B, c, H, W, C]
    base = baselines[pick]
    a = alpha[:, :, None, None, None]
    points = a * noisy + (1 - a) * base  # Captum's order of operations
    grads = _one_hot_vjp(model, points.reshape(-1, *images.shape[1:]), jnp.repeat(labels, sample_chunk))
    keep = (chunk < n_samples).astype(images.dtype)
    return total + jnp.tensordot((noisy - base) * grads.reshape(noisy.shape), keep, axes=((1,), (0,)))
  n_chunks = -(-n_samples // sample_chunk)
  return jax.lax.fori_loop(0, n_chunks, step, jnp.zeros_like(images)) / n_samples


gradient_shap_kernel = xla.jit(_gradient_shap_chunked, static_argnames=('sample_chunk',))
gradient_shap_kernel.__doc__ = """GradientSHAP's jitted kernel with the samples in chunks, no checks.

(model, images, labels, baselines [N, H, W, C], index [B], key, stdev, samples: an array [S] (only its
length counts), *, sample_chunk) -> [B, H, W, C]; public so that its memory can be measured
(`.lower(...).compile()`).
"""


def gradient_shap(model, images, labels, *, baselines=None, samples: int = 5, stdev: float = 0.0, key=None,
                  chunk_size: int | None = None, sample_chunk: int | None = None) -> jax.Array:
  """GradientSHAP (Lundberg & Lee 2017; Captum's `GradientShap`): expected gradients over a baseline set.

  For each of `samples` draws per image: a baseline x' from `baselines` (uniformly), the image with
  Gaussian noise of std `stdev` added (x~), alpha ~ U[0, 1); the sample's attribution is
  (x~ - x') * dS_c/dI at x' + alpha (x~ - x'); the result is their mean. In expectation it sums to
  S_c(x) - E[S_c(x')] (for stdev = 0); with one baseline it is Integrated Gradients at random path points.
  The draws come from `key` folded with the image's index and the sample's (`gradient_shap_draws`), so
  neither chunk_size nor sample_chunk changes them. `stdev` is Captum's `stdevs`: in the model's input
  units (SmoothGrad's `noise` is a fraction of each image's range).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    baselines: the baseline distribution: None (the zero image only, which in model space is the training
      mean), one image [H, W, C] or N images [N, H, W, C] (e.g. training images, blurred or black ones).
    samples: the number of draws per image, >= 1 (Captum's `n_samples`, default 5 as there).
    stdev: the noise's std in the model's input units, >= 0.
    key: a JAX random key (default `jax.random.key(0)`).
    chunk_size: images per compiled call (default: all at once).
    sample_chunk: draws per step of a `lax.fori_loop` (memory: chunk_size x sample_chunk images, whatever
      `samples`); None: all of them in one batch.

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad baselines, samples, stdev, key or sample_chunk; bad images, labels or model; non-finite
      scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  if not saliency.is_int(samples) or samples < 1 or not stdev >= 0:
    raise ValueError(f'gradient_shap needs an integer samples >= 1 and stdev >= 0, got samples {samples!r}, '
                     f'stdev {stdev!r}')
  if sample_chunk is not None and (not saliency.is_int(sample_chunk) or sample_chunk < 1):
    raise ValueError(f'gradient_shap: sample_chunk must be a positive integer, got {sample_chunk!r}')
  key = random_key(key, 'gradient_shap')
  if baselines is None:
    baselines = jnp.zeros((1, *images.shape[1:]), images.dtype)
  baselines = jnp.asarray(baselines, images.dtype)
  if baselines.shape == images.shape[1:]:
    baselines = baselines[None]
  if baselines.ndim != 4 or baselines.shape[1:] != images.shape[1:] or not len(baselines):
    raise ValueError(f'gradient_shap: baselines must be one image [H, W, C] or N >= 1 images [N, H, W, C], '
                     f'(H, W, C) = {images.shape[1:]}; got shape {baselines.shape}')
  if not bool(jnp.all(jnp.isfinite(baselines))):
    raise ValueError(f'gradient_shap: baselines hold {int(jnp.sum(~jnp.isfinite(baselines)))} NaN or '
                     'infinite values')
  chunk = min(int(sample_chunk or samples), int(samples))  # no chunk longer than the samples
  fn = functools.partial(gradient_shap_kernel, model, baselines=baselines, key=key,
                         stdev=jnp.asarray(stdev, images.dtype), samples=jnp.zeros(samples),
                         sample_chunk=chunk)
  index = jnp.arange(images.shape[0])
  out = parallel.chunked(lambda x, y, i: fn(x, y, index=i), (images, labels, index), chunk_size)
  return saliency.check_finite(out, 'gradient_shap')


def gaussian_blur_matrix(n: int, sigma: float) -> np.ndarray:
  """The Gaussian filter of scipy along one axis of n pixels, zero outside (mode 'constant'), as a matrix.

  The kernel is scipy's: exp(-x^2 / (2 sigma^2)) over |x| <= int(4 sigma + 0.5), normalised to sum 1;
  sigma 0 is the identity.

  Args:
    n: the axis' length.
    sigma: the std in pixels.

  Returns:
    float64 [n, n]: blurred = matrix @ values.
  """
  if sigma == 0:
    return np.eye(n)
  radius = int(4.0 * sigma + 0.5)
  taps = np.exp(-0.5 / sigma ** 2 * np.arange(-radius, radius + 1) ** 2)
  taps /= taps.sum()
  offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # j - i
  return np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)


def _blur_ig_chunked(model, images, labels, rows, cols, step_weights, grad_step):
  """Blur IG's sum over the path, a chunk of steps at a time (`lax.scan`), then negated.

  rows, cols: [n_chunks, chunk, 2, n, n] blur matrices of each step at sigma and sigma + grad_step;
  step_weights: [n_chunks, chunk], the sigma increments (0 for padding steps).
  """
  def blur(m_rows, m_cols):  # [s, n, n] each -> images blurred at each step: [B, s, H, W, C]
    return jnp.einsum('shH,bHWc,swW->bshwc', m_rows, images, m_cols)

  def step(total, chunk):
    r, c, w = chunk
    x_step, x_next = blur(r[:, 0], c[:, 0]), blur(r[:, 1], c[:, 1])
    grads = _one_hot_vjp(model, x_step.reshape(-1, *images.shape[1:]), jnp.repeat(labels, w.shape[0]))
    direction = (x_next - x_step) / grad_step
    return total + jnp.einsum('s,bshwc->bhwc', w, direction * grads.reshape(x_step.shape)), None
  total, _ = jax.lax.scan(step, jnp.zeros_like(images), (rows, cols, step_weights))
  return -total


blur_ig_kernel = xla.jit(_blur_ig_chunked)


def blur_ig(model, images, labels, *, max_sigma: float = 50.0, steps: int = 100, grad_step: float = 0.01,
            sqrt: bool = False, step_chunk: int = 10, chunk_size: int | None = None) -> jax.Array:
  """Blur IG (Xu et al. 2020), PAIR saliency's definition: integrated gradients along a blur path.

  With sigma_i = i max_sigma / steps (or its square root with `sqrt`), i = 0 .. steps, the attribution is
  -sum_i (sigma_{i+1} - sigma_i) (blur(x, sigma_i + grad_step) - blur(x, sigma_i)) / grad_step *
  dS_c/dI(blur(x, sigma_i)), the blur scipy's Gaussian filter on the spatial axes with zero padding
  (`gaussian_blur_matrix`). The steps go `step_chunk` at a time (`lax.scan`): memory holds chunk_size x
  2 step_chunk images whatever `steps`.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    max_sigma: the last blur's std in pixels.
    steps: the path's steps.
    grad_step: the step of the finite difference along the path.
    sqrt: space the sigmas by their square roots.
    step_chunk: steps per step of the scan.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C] (the images' dtype).

  Raises:
    ValueError: bad settings, images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  if not (saliency.is_int(steps) and steps >= 1 and saliency.is_int(step_chunk) and step_chunk >= 1
          and max_sigma > 0 and grad_step > 0):
    raise ValueError(f'blur_ig needs integer steps, step_chunk >= 1 and max_sigma, grad_step > 0, got '
                     f'steps {steps!r}, step_chunk {step_chunk!r}, max_sigma {max_sigma!r}, grad_step '
                     f'{grad_step!r}')
  sigmas = np.arange(steps + 1) * max_sigma / steps
  sigmas = np.sqrt(sigmas) if sqrt else sigmas
  # the steps in chunks, as a path's points: padding steps blur by 0 (the image itself) and weigh 0
  at, weights = chunk_points(sigmas[:-1], np.diff(sigmas), int(step_chunk))
  h, w = images.shape[1:3]

  def matrices(n):
    m = np.stack([np.stack([gaussian_blur_matrix(n, s), gaussian_blur_matrix(n, s + grad_step)])
                  for s in at.ravel()])
    return jnp.asarray(m.reshape(*at.shape, 2, n, n), images.dtype)
  fn = functools.partial(blur_ig_kernel, model, rows=matrices(h), cols=matrices(w),
                         step_weights=jnp.asarray(weights, images.dtype), grad_step=grad_step)
  out = parallel.chunked(lambda x, y: fn(x, y), (images, labels), chunk_size)
  return saliency.check_finite(out, 'blur_ig')


def kth_smallest(values: jax.Array, keep: jax.Array, k: int) -> jax.Array:
  """The k-th smallest (from 0) of the non-negative `values` where `keep`, without a sort.

  Non-negative floats order as their bit patterns read as integers, so a bisection over the bit patterns
  (32 counts for float32, 64 for float64) lands exactly on an element: the same value as sorting and
  indexing, at the cost of a few passes over the values (XLA:CPU's sort of 12,288 values takes
  milliseconds).

  Args:
    values: float32 or float64, >= 0 (NaN excluded), any shape.
    keep: bool, values' shape: the values taken into account.
    k: the rank, from 0.

  Returns:
    A scalar of values' dtype: the value, or inf when `keep` holds k or fewer values.
  """
  int_type = jnp.int32 if values.dtype == jnp.float32 else jnp.int64
  bits = jax.lax.bitcast_convert_type(values, int_type)
  inf = jax.lax.bitcast_convert_type(jnp.asarray(jnp.inf, values.dtype), int_type)

  def halve(_, bounds):  # the answer's bits lie in [low, high]: the least t with more than k kept <= t
    low, high = bounds
    middle = low + (high - low) // 2
    above = jnp.sum(keep & (bits <= middle)) > k
    return jnp.where(above, low, middle + 1), jnp.where(above, middle, high)

  low, _ = jax.lax.fori_loop(0, 8 * values.dtype.itemsize, halve, (jnp.zeros((), int_type), inf))
  return jax.lax.bitcast_convert_type(jnp.minimum(low, inf), values.dtype)  # past inf: k or fewer kept


def _guided_ig_one(model, x_input, baseline, label, *, steps, fraction, max_dist):
  """Guided IG of one image, PAIR's algorithm step for step (`guided_ig_impl`)."""
  eps = 1e-9
  diff = x_input - baseline
  l1_total = jnp.abs(diff).sum()
  position = int(np.floor(fraction * (x_input.size - 1)))  # np.quantile(..., method='lower')

  def gradient(x):
    return _one_hot_vjp(model, x[None], label[None])[0]

  def step(i, carry):
    x, attr = carry
    grad_actual = gradient(x)
    alpha = (i + 1.0) / steps
    alpha_min, alpha_max = jnp.maximum(alpha - max_dist, 0.0), jnp.minimum(alpha + max_dist, 1.0)
    x_min, x_max = baseline + diff * alpha_min, baseline + diff * alpha_max
    # steps - i - 1 is exact: the last step's target is exactly 0 (1 - (i + 1) / steps, compiled as a
    # product by 1 / steps, came out below 0 in float32, which no move can reach)
    l1_target = l1_total * (steps - i - 1.0) / steps
    # PAIR sets the gradient of the features at x_max to inf and takes the `fraction` quantile of |grad|
    # ('lower') at every move: the position-th smallest |grad| among the features not yet at x_max (inf
    # where fewer are left), found exactly without a sort (`kth_smallest`)
    magnitude = jnp.abs(grad_actual)

    def inner(state):
      x, maxed, attr, _, _ = state
      x_old = x
      x_alpha = jnp.where(diff != 0, (x - baseline) / jnp.where(diff != 0, diff, 1.0), alpha_max)
      x = jnp.where(x_alpha < alpha_min, x_min, x)
      l1_current = jnp.abs(x - x_input).sum()
      close = jnp.abs(l1_target - l1_current) <= jnp.maximum(eps * jnp.maximum(jnp.abs(l1_target),
                                                                                jnp.abs(l1_current)), eps)
      maxed = maxed | (x == x_max)
      threshold = kth_smallest(magnitude, ~maxed, position)
      s = (magnitude <= threshold) & ~maxed
      l1_s = (jnp.abs(x - x_max) * s).sum()
      gamma = jnp.where(l1_s > 0, (l1_current - l1_target) / jnp.where(l1_s > 0, l1_s, 1.0), jnp.inf)
      moved = jnp.where(gamma > 1.0, jnp.where(s, x_max, x), jnp.where(s, x + (x_max - x) * gamma, x))
      x = jnp.where(close, x, moved)
      return x, maxed, attr + (x - x_old) * grad_actual, gamma, close

    def more(state):  # PAIR's loop, which would never end once every feature is at x_max (gamma inf)
      _, maxed, _, gamma, close = state
      return (gamma > 1.0) & ~close & ~jnp.all(maxed)
    start = (x, jnp.zeros(x.shape, bool), attr, jnp.inf, False)
    x, _, attr, _, _ = jax.lax.while_loop(more, inner, start)
    return x, attr
  _, attr = jax.lax.fori_loop(0, steps, step, (baseline, jnp.zeros_like(x_input)))
  return jnp.where(l1_total == 0, 0.0, attr)


def _guided_ig(model, images, labels, baselines, *, steps, fraction, max_dist):
  one = functools.partial(_guided_ig_one, model, steps=steps, fraction=fraction, max_dist=max_dist)
  out = jax.vmap(one)(images, baselines, labels)
  return saliency.mark_bad(out, saliency.finite_rows(out))


guided_ig_kernel = xla.jit(_guided_ig, static_argnames=('steps', 'fraction', 'max_dist'))
guided_ig_kernel.__doc__ = """Guided IG's jitted kernel, no checks.

(model, images, labels, baselines, *, steps, fraction, max_dist) -> [B, H, W, C]; public so that its
memory can be measured (`.lower(...).compile()`).
"""


def guided_ig(model, images, labels, *, baseline=None, steps: int = 200, fraction: float = 0.25,
              max_dist: float = 0.02, chunk_size: int | None = None) -> jax.Array:
  """Guided Integrated Gradients (Kapishnikov et al. 2021), PAIR saliency's algorithm.

  The path from the baseline to the image moves, at each of `steps` steps, the `fraction` of the
  features with the smallest absolute gradient first (each bounded to within `max_dist` of the straight
  line's position); the attribution sums the gradient times each move. max_dist 0 is Integrated
  Gradients on the straight line. The steps run in a `lax.fori_loop` (one gradient per step) and the
  moves within a step in a `lax.while_loop`, vmapped over the images: memory holds chunk_size images.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    baseline: None (the zero image), one image [H, W, C] or one per image [B, H, W, C].
    steps: the path's steps.
    fraction: the share of the features moved at each move.
    max_dist: how far (in alpha) the path may leave the straight line, in [0, 1].
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C] (the images' dtype).

  Raises:
    ValueError: bad settings or baseline, images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  if not (saliency.is_int(steps) and steps >= 1 and 0 < fraction <= 1 and 0 <= max_dist <= 1):
    raise ValueError(f'guided_ig needs integer steps >= 1, 0 < fraction <= 1 and 0 <= max_dist <= 1, got '
                     f'{steps!r}, {fraction!r}, {max_dist!r}')
  baselines = baselines_of(images, baseline)
  fn = functools.partial(guided_ig_kernel, model, steps=int(steps), fraction=float(fraction),
                         max_dist=float(max_dist))
  out = parallel.chunked(lambda x, y, z: fn(x, y, z), (images, labels, baselines), chunk_size)
  return saliency.check_finite(out, 'guided_ig')


# ----------------------------------------------------------------------------- propagation rules


@functools.partial(xla.jit, static_argnames=('composite',))
def _lrp(model, images, labels, *, composite):
  k = saliency.num_classes(model, images.shape[1:], images.dtype)
  hot = jax.nn.one_hot(labels, k, dtype=images.dtype)
  scores, relevance = propagation.relevance(model, images, hot, composite)
  return saliency.mark_bad(relevance, saliency.finite_rows(scores, relevance))


def lrp(model, images, labels, *, composite='epsilon', chunk_size: int | None = None) -> jax.Array:
  """Layer-wise relevance propagation (Bach et al. 2015) by program transformation (`propagation`).

  Every linear layer of the model's program takes the rule its composite gives it (Zennit 0.5's
  epsilon, gamma and z+ rules; ZBox, Flat or w-square on the first layer); transformers take the
  LayerNorm and attention rules of Ali et al. 2022.
  The class score is the relevance of the output (Captum's convention): with the epsilon rule and no
  biases, the relevances sum to it.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    composite: a name of `propagation.COMPOSITES` ('epsilon', 'epsilon_plus', 'epsilon_plus_flat',
      'epsilon_gamma', 'zplus', 'gamma'), a `propagation.Rule` for every layer, or a
      `propagation.Composite`.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C]: the relevance of each input value.

  Raises:
    ValueError: an unknown composite, a model with no linear layer or with layers inside a loop, an input
      rule where it has no meaning; bad images, labels or model; non-finite scores or relevances.
  """
  composite = propagation.composite_of(composite)
  model, images, labels = _prepare(model, images, labels)
  out = parallel.chunked(lambda x, y: _lrp(model, x, y, composite=composite), (images, labels), chunk_size)
  return saliency.check_finite(out, 'lrp')


@functools.partial(xla.jit, static_argnames=('max_pool',))
def _deeplift(model, images, labels, baselines, *, max_pool='gradient'):
  n = images.shape[0]
  both = jnp.concatenate([images, baselines])
  fn = lambda z: model(z, relu=propagation.rescale_relu)  # noqa: E731
  if max_pool == 'rescale':
    fn = propagation.with_rescale_pooling(fn)
  scores, vjp = jax.vjp(fn, both)
  hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
  # the baselines' half: the same signal where a pooling rule reads it (Captum's: both halves' target scores)
  signal = vjp(jnp.concatenate([hot, hot if max_pool == 'rescale' else jnp.zeros_like(hot)]))[0][:n]
  return saliency.mark_bad((images - baselines) * signal, saliency.finite_rows(scores[:n], signal))


def deeplift(model, images, labels, *, baseline=None, max_pool: str = 'gradient',
             chunk_size: int | None = None) -> jax.Array:
  """DeepLift with the rescale rule (Shrikumar et al. 2017), by program transformation.

  Each image and its baseline run as one batch; every rectification of the model's program takes the
  rescale rule (`propagation.rescale_relu`), the rest its gradient. Max-pooling: its gradient
  (`max_pool='gradient'`, the default of DeepLift's reference implementation, and Captum's for a
  functional max-pool) or the difference rule of Captum's `nn.MaxPool2d` modules and SHAP's
  DeepExplainer (`'rescale'`, `propagation.rescale_max_pool`). The attributions are (x - x') times the
  multipliers; on a ReLU network they sum to S_c(x) - S_c(x') (with max-pooling: by its 'rescale'
  rule). Equal to Captum's `DeepLift` on a network whose ReLUs are modules, with functional max-pooling
  ('gradient') and with max-pooling modules ('rescale') (tested).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]` with ReLUs.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    baseline: x': None (the zero image, which in model space is the training mean), one image
      [H, W, C] or one per image [B, H, W, C].
    max_pool: the rule of max-pooling, 'gradient' or 'rescale' (`propagation.MAX_POOL_RULES`).
    chunk_size: images per compiled call (default: all at once; memory: twice that many images).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: a bad baseline or max_pool; a model with no rectification (the rescale rule has nothing
      to act on), or one whose max-pooling the 'rescale' rule cannot reach; bad images, labels or model;
      non-finite scores or attributions.
  """
  if max_pool not in propagation.MAX_POOL_RULES:
    raise ValueError(f'deeplift: max_pool must be one of {propagation.MAX_POOL_RULES}, got {max_pool!r}')
  model, images, labels = _prepare(model, images, labels)
  baselines = baselines_of(images, baseline)
  saliency.check_relu(model, images[:1], propagation.rescale_relu)
  out = parallel.chunked(lambda x, y, z: _deeplift(model, x, y, z, max_pool=max_pool),
                         (images, labels, baselines), chunk_size)
  return saliency.check_finite(out, 'deeplift')


# ----------------------------------------------------------------------------- region methods


def default_layer(model) -> str:
  """The layer Grad-CAM and CAM use: the last convolutional layer's output before the net pools it away.

  SmallConvNet its last ReLU, CifarResNet its last block, VGG16 'features.29', PaperConvNet 'relu5',
  MobileNet 'conv_pw_13_relu'. A transformer (a ViT: its encoder blocks are 'module' steps before the
  class token): the output of the block before the last, as pytorch-grad-cam's ViT example takes the last
  block's input; past the last block only the class token reaches the head, so the patch tokens' gradient
  there is 0.

  Args:
    model: a model with a layer graph (`model.steps()`).

  Returns:
    The layer's name.

  Raises:
    ValueError: the model has no rectified convolutional layer before its pooling, nor two encoder blocks.
  """
  model_steps = graph.steps_of(model)
  kinds = [s.kind for s in model_steps]
  if 'token' in kinds:
    blocks = [s.name for s in model_steps[:kinds.index('token')] if s.kind == 'module']
    if len(blocks) < 3:  # the token embedding and at least two blocks
      raise ValueError(f'{type(model).__name__} has fewer than two encoder blocks; name the layer')
    return blocks[-2]
  end = min((i for i, k in enumerate(kinds) if k in ('mean', 'flatten', 'adaptive_avg_pool')), default=None)
  found = [s.name for s in model_steps[:end] if s.kind in ('relu', 'clip', 'block')]
  if end is None or not found:
    raise ValueError(f'{type(model).__name__} has no rectified convolutional layer before its pooling; '
                     'name the layer')
  return found[-1]


def split(model, layer: str):
  """The network cut at a layer, as (features, head) with head(features(x)) == model(x).

  Args:
    model: a model with a layer graph.
    layer: a layer name of `deconvnet.layer_names(model)`, not the output.

  Returns:
    (features: x [B, H, W, C] -> the layer's output [B, h, w, C'], head: that output -> scores [B, K]).

  Raises:
    ValueError: the layer is the network's output.
  """
  model_steps = graph.steps_of(model)
  last = graph.index(model_steps, layer)
  if layer == 'scores' or last == len(model_steps) - 1:
    raise ValueError(f'layer must be inside the network, not its output; got {layer!r}')
  def features(x):
    return graph.run(model_steps, x, stop=last)
  def head(a):
    return graph.run(model_steps, a, start=last + 1)
  return features, head


def _upsample(maps, hw):
  return jax.image.resize(maps, (maps.shape[0], *hw), 'bilinear')


def token_grid(model, shape) -> tuple[int, int, int] | None:
  """How a layer's tokens [B, T, D] lie on the image: (prefix tokens, h, w), or None for a spatial layer.

  The model's own `token_grid` (a ViT of `saliency_jax.models`), else from T alone: a square number of
  tokens is a grid, one more than a square a class token and a grid (a standard ViT), anything else an
  error asking for a spatial layer.

  Args:
    model: the model (or None for a user's split).
    shape: the layer's output shape.

  Returns:
    (prefix, h, w), or None for [B, h, w, C].

  Raises:
    ValueError: an output of another rank, or tokens whose grid cannot be told.
  """
  if len(shape) == 4:
    return None
  if len(shape) != 3:
    raise ValueError(f'a layer map needs a spatial layer [B, h, w, C] or tokens [B, T, D]; got shape '
                     f'{shape}')
  declared = getattr(model, 'token_grid', None)
  if declared is not None and declared[0] + declared[1] * declared[2] == shape[1]:
    return tuple(declared)
  for prefix in (0, 1):
    side = int(round(np.sqrt(shape[1] - prefix)))
    if side > 0 and side * side == shape[1] - prefix:
      return prefix, side, side
  raise ValueError(f'a layer of {shape[1]} tokens lies on no square grid (with or without a class token): '
                   'give the model a token_grid (prefix, h, w) or choose a spatial layer')


def _spatial(a, grid):
  """Tokens [B, T, D] as a map [B, h, w, D] (`token_grid`); a spatial layer as it is."""
  return a if grid is None else a[:, grid[0]:].reshape(a.shape[0], grid[1], grid[2], a.shape[-1])


def _tokens(raw, a, grid):
  """`_spatial`'s inverse: the map a [B, h, w, D] back into raw's tokens (its prefix tokens kept)."""
  if grid is None:
    return a
  return jnp.concatenate([raw[:, :grid[0]], a.reshape(raw.shape[0], -1, a.shape[-1])], axis=1)


@jax.tree_util.register_pytree_node_class
class Parts:
  """A network cut at a layer, for the layer methods (Grad-CAM, CAM).

  `features(x)` [B, h, w, C'] is the layer's output and `head(a)` the scores computed from it. Either a
  model with a layer graph and the layer's name (`split`), or two callables given by the user
  (`rules.Function`s: their weights are leaves).

  Args:
    model: a model with a layer graph, or None.
    layer: the layer's name (with `model`).
    feature_fn: x -> the layer's output (without `model`).
    head_fn: the layer's output -> scores (without `model`).
  """

  def __init__(self, model=None, layer=None, feature_fn=None, head_fn=None):
    self.model, self.layer, self.feature_fn, self.head_fn = model, layer, feature_fn, head_fn

  def features(self, x):
    """The layer's output.

    Args:
      x: float [B, H, W, C].

    Returns:
      [B, h, w, C'].
    """
    return split(self.model, self.layer)[0](x) if self.model is not None else self.feature_fn(x)

  def head(self, a):
    """The scores computed from the layer's output.

    Args:
      a: [B, h, w, C'].

    Returns:
      [B, K].
    """
    return split(self.model, self.layer)[1](a) if self.model is not None else self.head_fn(a)

  def tree_flatten(self):
    """The pytree's children (the model and the two callables) and its static data (the layer).

    Returns:
      ((model, feature_fn, head_fn), layer).
    """
    return (self.model, self.feature_fn, self.head_fn), self.layer

  @classmethod
  def tree_unflatten(cls, layer, children):
    """`Parts` from `tree_flatten`'s output.

    Args:
      layer: the layer's name.
      children: (model, feature_fn, head_fn).

    Returns:
      A `Parts`.
    """
    return cls(children[0], layer, children[1], children[2])


def parts(model, layer, images, method: str = 'Grad-CAM') -> Parts:
  """`Parts` of a model at a layer.

  Args:
    model: the model.
    layer: a layer name of its graph (None: `default_layer`), or, for any model, a pair (features, head)
      of callables with head(features(x)) the scores.
    images: float [B, H, W, C], to check the user's split on (`check_split`).
    method: the method's name, for the errors.

  Returns:
    A `Parts`.

  Raises:
    ValueError: a layer that is neither a name nor a pair, a model without a layer graph and no pair, or
      a pair that does not split the model.
  """
  if isinstance(layer, tuple | list):
    if len(layer) != 2 or not all(callable(f) for f in layer):
      raise ValueError(f'{method}: layer must be a layer name or a pair (features, head) of callables, got '
                       f'{layer!r}')
    features = rules.as_model(layer[0], images)
    a = jax.eval_shape(lambda f, x: f(x), features, images)
    p = Parts(feature_fn=features, head_fn=rules.as_model(layer[1], a))
    if method != 'CAM':  # CAM's head leaves out the classifier's bias: checked by its weights' shape
      check_split(model, p, images[:1], method)
    return p
  if isinstance(model, rules.Function):
    raise ValueError(f'{method} on a model without a layer graph (any JAX callable) needs the layer it '
                     f'reads: layer=(features, head), two callables with head(features(x)) == model(x) and '
                     f'features(x) [B, h, w, C]' + (', or for CAM layer=(features, weights [C, K])'
                                                     if method == 'CAM' else ''))
  return Parts(model=model, layer=default_layer(model) if layer is None else layer)


@jax.jit
def _split_gap(model, p: Parts, x):
  whole = model(x)
  return jnp.max(jnp.abs(whole - p.head(p.features(x)))), jnp.max(jnp.abs(whole))


def check_split(model, p: Parts, x, method: str = 'Grad-CAM') -> None:
  """Raises unless the user's split gives the model's scores: head(features(x)) == model(x).

  To 1e-3 of the scores' size (the split may round off otherwise).

  Args:
    model: the model.
    p: `Parts` of two callables.
    x: float [B, H, W, C].
    method: the method's name, for the error.

  Raises:
    ValueError: the split's scores differ from the model's, or have another shape.
  """
  want = jax.eval_shape(lambda m, z: m(z), model, x)
  got = jax.eval_shape(lambda q, z: q.head(q.features(z)), p, x)
  if not isinstance(got, jax.ShapeDtypeStruct) or got.shape != want.shape:
    raise ValueError(f'{method}: layer=(features, head) must split the model, head(features(x)) == model(x); '
                     f'head(features(x)) gives {getattr(got, "shape", type(got).__name__)}, the model '
                     f'{want.shape}')
  gap, scale = (float(v) for v in _split_gap(model, p, x))
  if not gap <= 1e-3 * (1.0 + scale):
    raise ValueError(f'{method}: layer=(features, head) must split the model, head(features(x)) == model(x); '
                     f'on the first image they differ by {gap:.3g} (scores up to {scale:.3g})')


def _grad_cam_maps(p: Parts, images, labels, upsample):
  raw = p.features(images)
  grid = token_grid(p.model, raw.shape)  # a ViT block's tokens read as a map
  scores, vjp = jax.vjp(p.head, raw)
  (g,) = vjp(jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype))
  a, g = _spatial(raw, grid), _spatial(g, grid)
  alpha = g.mean(axis=(1, 2))  # [B, C']: the channel weights
  cam = jax.nn.relu(jnp.einsum('bhwc,bc->bhw', a, alpha))
  cam = saliency.mark_bad(cam, saliency.finite_rows(a, scores, g))
  return _upsample(cam, images.shape[1:3]) if upsample else cam


_grad_cam = jax.jit(_grad_cam_maps, static_argnames=('upsample',), compiler_options=saliency.COMPILER_OPTIONS)


def grad_cam(model, images, labels, *, layer=None, upsample: bool = True,
             chunk_size: int | None = None) -> jax.Array:
  """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A_k), alpha_k = mean_ij dS_c/dA_kij.

  A: the activations of `layer`. One forward pass and one backward pass of the head.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    layer: a name of `deconvnet.layer_names(model)` (default `default_layer`), or, on any model, a
      pair (features, head) of callables (`parts`).
    upsample: upsample the maps to the input's size.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W] (bilinearly upsampled), or [B, h, w] with upsample=False.

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  fn = functools.partial(_grad_cam, parts(model, layer, images), upsample=upsample)
  return saliency.check_finite(parallel.chunked(lambda x, y: fn(x, y), (images, labels), chunk_size),
                               'grad_cam')


def classifier(model) -> tuple[str, jax.Array]:
  """CAM's layer and the classifier weights after it.

  The classifier must be one dense layer or 1x1 convolution after global average pooling, with only
  reshapes and inference-mode dropout around it (MobileNet's `conv_preds` is such a convolution).

  Args:
    model: a model with a layer graph.

  Returns:
    (the name of the pooling's input layer, W float [C', K]).

  Raises:
    ValueError: the model's head is not global average pooling followed by one linear layer.
  """
  model_steps = graph.steps_of(model)
  kinds = [s.kind for s in model_steps]
  pools = [i for i, k in enumerate(kinds) if k == 'mean']
  head = model_steps[pools[-1] + 1:] if pools else []
  linear = [s for s in head if s.kind in ('dense', 'conv')]
  passive = ('dense', 'conv', 'reshape', 'flatten', 'dropout', 'identity')
  rest = [s.kind for s in head if s.kind not in passive]
  if (not pools or pools[-1] == 0 or len(linear) != 1 or rest
      or (linear[0].kind == 'conv' and tuple(linear[0].module.kernel_size) != (1, 1))):
    raise ValueError(f'CAM needs global average pooling followed by one linear layer; {type(model).__name__} '
                     'ends with ' + ', '.join(kinds[-4:]) + ' (use grad_cam)')
  kernel = linear[0].module.kernel[...]
  return model_steps[pools[-1] - 1].name, kernel.reshape(-1, kernel.shape[-1])


def cam_parts(model, layer, images) -> tuple[Parts, jax.Array]:
  """CAM's `Parts` (ending at the pooled layer) and its classifier weights.

  Args:
    model: the model.
    layer: None (from the layer graph, `classifier`), or, on any model, a pair (features, W [C', K]).
    images: float [B, H, W, C], to check the user's pair on.

  Returns:
    (`Parts`, W float [C', K]).

  Raises:
    ValueError: a pair of the wrong shapes, a model without a layer graph and no pair, or a layer name.
  """
  if isinstance(layer, tuple | list) and len(layer) == 2 and callable(layer[0]) and not callable(layer[1]):
    w = jnp.asarray(layer[1])
    features = rules.as_model(layer[0], images)
    a = jax.eval_shape(lambda f, x: f(x), features, images[:1])
    k = saliency.num_classes(model, images.shape[1:])
    if w.ndim != 2 or len(a.shape) != 4 or w.shape != (a.shape[-1], k):
      raise ValueError(f'CAM: layer=(features, weights) needs features [B, h, w, C] and weights [C, K] = '
                       f'{(a.shape[-1], k)} (C: the features\' channels, K: the model\'s classes); got '
                       f'features {a.shape[1:]} per image and weights {w.shape}')
    return parts(model, (features, lambda a: a.mean(axis=(1, 2)) @ w), images, 'CAM'), w
  if isinstance(model, rules.Function):
    raise ValueError('CAM on a model without a layer graph (any JAX callable) needs layer=(features, '
                     'weights): features(x) [B, h, w, C] the input of the global average pooling, '
                     'weights [C, K] the linear classifier after it')
  if layer is not None:
    raise ValueError("CAM's layer is the input of the classifier's pooling; give no layer")
  name, w = classifier(model)
  return Parts(model=model, layer=name), w


def _cam_maps(p: Parts, w, images, labels, upsample):
  a = p.features(images)
  cam = saliency.mark_bad(jnp.einsum('bhwc,bc->bhw', a, w[:, labels].T), saliency.finite_rows(a))
  return _upsample(cam, images.shape[1:3]) if upsample else cam


_cam = jax.jit(_cam_maps, static_argnames=('upsample',), compiler_options=saliency.COMPILER_OPTIONS)


def cam(model, images, labels, *, layer=None, upsample: bool = True,
        chunk_size: int | None = None) -> jax.Array:
  """Class activation maps (Zhou et al. 2016): sum_k w_kc A_k.

  For nets whose scores are a linear layer on globally average-pooled maps A (SmallConvNet without
  hidden layers, CifarResNet, MobileNet; see `classifier`). The mean of the un-upsampled map plus the
  class bias is the score. One forward pass.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    layer: None (the layer graph's pooled layer), or, on any model, a pair (features, W [C', K]).
    upsample: upsample the maps to the input's size.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W] (bilinearly upsampled), or [B, h, w] with upsample=False; signed.

  Raises:
    ValueError: bad images, labels or model, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  p, w = cam_parts(model, layer, images)
  fn = functools.partial(_cam, p, w, upsample=upsample)
  return saliency.check_finite(parallel.chunked(lambda x, y: fn(x, y), (images, labels), chunk_size), 'cam')


@functools.partial(jax.jit, static_argnames=('method', 'crop_hw'), compiler_options=saliency.COMPILER_OPTIONS)
def _class_region_maps(p: Parts, w, images, classes, *, method, crop_hw):
  h, wd = images.shape[1:3]
  size = crop_hw or (h, wd)

  def one(image, chosen):
    crops = image[None] if crop_hw is None else saliency.ten_crops(image, crop_hw)
    a = p.features(crops)  # [n, h', w', C']
    finite = jnp.all(jnp.isfinite(a))
    if method == 'cam':
      maps = jnp.einsum('nhwc,ck->knhw', a, w[:, chosen])
    else:  # Grad-CAM: one forward pass of the head, a vmapped backward pass per class
      scores, vjp = jax.vjp(p.head, a)
      cotangents = jnp.broadcast_to(jax.nn.one_hot(chosen, scores.shape[-1], dtype=scores.dtype)[:, None],
                                    (chosen.shape[0], *scores.shape))
      (g,) = jax.vmap(vjp)(cotangents)  # [k, n, h', w', C']
      maps = jax.nn.relu(jnp.einsum('nhwc,knc->knhw', a, g.mean(axis=(2, 3))))
      finite = finite & jnp.all(jnp.isfinite(scores)) & jnp.all(jnp.isfinite(g))
    maps = jax.image.resize(maps, (*maps.shape[:2], *size), 'bilinear')
    return saliency.mark_bad(saliency.place_crops(maps, crop_hw, (h, wd)), finite)

  return jax.vmap(one)(images, classes)


# The methods whose maps of k classes per image share their passes (`class_region_maps`).
SHARED_CLASS_MAPS = ('grad_cam', 'cam', 'occlusion', 'score_cam', 'rise', 'xrai')


def class_region_maps(method: str, model, images, classes, *, layer=None, crop_size=None,
                      chunk_size: int | None = None, **settings) -> jax.Array:
  """Region maps of k classes per image, taken as the paper takes its saliency maps: the passes shared.

  As `saliency.class_saliency` does: one forward pass per image (or per its 10 crops) and, for Grad-CAM,
  k vmapped backward passes of the head; the k maps of occlusion, Score-CAM and RISE come from one set of
  occluded / masked forward passes (their scores read for the k classes), XRAI's from one segmentation
  of each image (and k Integrated Gradients). Each class's map equals `grad_cam` / `cam` / `occlusion` /
  `cam_family('score_cam', ...)` / `rise` / `xrai` of that class (upsampled to the input, or to the crop
  and then, with `crop_size`, averaged over the 10 crops placed back in image coordinates, as
  `saliency.uncrop` does; only Grad-CAM and CAM take crops). CAM's and occlusion's maps are signed
  (`to_map` takes their positive part).

  Args:
    method: one of `SHARED_CLASS_MAPS`.
    model: the model.
    images: float [B, H, W, C].
    classes: int [B, k].
    layer: as `grad_cam` / `cam` take it.
    crop_size: an int or (h, w): the 10 crops' size; None maps the whole images.
    chunk_size: images per compiled call (default: all at once).
    **settings: the method's own settings (occlusion's patch, ...; as its function takes them).

  Returns:
    float32 [B, k, H, W].

  Raises:
    ValueError: another method, a crop size for a method that takes none, or settings the method does not
      take.
  """
  if method not in SHARED_CLASS_MAPS:
    raise ValueError(f'method must be one of {SHARED_CLASS_MAPS}, got {method!r}')
  model = rules.as_model(model, images)
  images = saliency.check_images(model, images)
  crop_hw = None if crop_size is None else saliency.crop_shape(crop_size, images.shape[1:3])
  saliency.check_model(model, images, crop_hw)
  classes = saliency.check_classes(model, images, classes, crop_hw)
  if method not in ('grad_cam', 'cam'):  # the whole images, each method with its own settings' defaults
    if crop_size is not None or (layer is not None and method != 'score_cam'):
      raise ValueError(f'{method} takes no crop_size (10x its passes: give the crops as images)'
                       + ('' if method == 'score_cam' else ' and no layer'))
    own, run = {  # the public function (its settings and their defaults) and what runs k classes
        'occlusion': (occlusion, _occlusion_maps),
        'score_cam': (cam_family, functools.partial(_cam_family, 'score_cam', layer=layer, upsample=True)),
        'rise': (rise, _rise),
        'xrai': (xrai, functools.partial(_xrai, attributions=None))}[method]
    known = {k: p.default for k, p in inspect.signature(own).parameters.items()
             if p.kind == p.KEYWORD_ONLY and k not in ('chunk_size', 'layer', 'upsample', 'attributions')}
    if set(settings) - set(known):
      raise ValueError(f'{method} takes no settings {sorted(set(settings) - set(known))}')
    return run(model, images, classes, **{**known, **settings, 'chunk_size': chunk_size})
  if settings:
    raise ValueError(f'{method} takes no settings {sorted(settings)}')
  example = images[:1, :crop_hw[0], :crop_hw[1]] if crop_hw else images[:1]
  if method == 'cam':
    p, w = cam_parts(model, layer, example)
  else:
    p, w = parts(model, layer, example), None
  fn = functools.partial(_class_region_maps, p, w, method=method, crop_hw=crop_hw)
  return saliency.check_finite(parallel.chunked(fn, (images, classes), chunk_size), method)


def _gradient_and_grad_cam(p: Parts, images, classes, labels=None, *, crop_hw, k, loop=0):
  h, w = images.shape[1:3]
  size = crop_hw or (h, w)

  def one(image, chosen, label):
    crops = image[None] if crop_hw is None else saliency.ten_crops(image, crop_hw)
    a, features_vjp = jax.vjp(p.features, crops)
    scores, head_vjp = jax.vjp(p.head, a)
    chosen, top_scores, cotangents = saliency.class_cotangents(scores, chosen, k)

    def maps_of(cotangents):  # [j, n, K] -> gradient maps and Grad-CAM maps [j, H, W]
      (g,) = jax.vmap(head_vjp)(cotangents)  # [j, n, h', w', C']: dS_c/dA, Grad-CAM's and the gradient's
      cams = jax.nn.relu(jnp.einsum('nhwc,knc->knhw', a, g.mean(axis=(2, 3))))
      cams = jax.image.resize(cams, (*cams.shape[:2], *size), 'bilinear')
      # the rest of the backward passes: [j, n, H, W] maps
      maps, finite = saliency.each(lambda g: saliency.grad_map(features_vjp(g)[0]), (g,), min(loop, 1))
      ok = jnp.all(jnp.isfinite(scores)) & jnp.all(jnp.isfinite(g)) & jnp.all(finite)
      return tuple(saliency.mark_bad(saliency.place_crops(m, crop_hw, (h, w)), ok) for m in (maps, cams))

    maps, cams = maps_of(cotangents)
    if label is None:
      return chosen, top_scores, maps, cams
    # the label's maps: its top-k maps where it is among them, else one more backward pass (a branch)
    hit = chosen == label

    def shared():
      position = jnp.argmax(hit)
      return maps[position], cams[position]

    def own():
      return jax.tree.map(lambda m: m[0], maps_of(saliency.class_cotangents(scores, label[None], 1)[2]))

    label_maps, label_cams = jax.lax.cond(jnp.any(hit), shared, own)
    return chosen, top_scores, maps, cams, label_maps, label_cams

  return saliency.each(one, (images, classes, labels), loop)


_FUSED_STATIC = ('crop_hw', 'k', 'loop')
_fused_kernel = xla.jit(_gradient_and_grad_cam, static_argnames=_FUSED_STATIC)
_sequential_fused_kernel = jax.jit(_gradient_and_grad_cam, static_argnames=_FUSED_STATIC,
                                   compiler_options=saliency.SEQUENTIAL_OPTIONS)


def gradient_and_grad_cam(model, images, classes=None, *, k: int | None = None, layer=None, crop_size=None,
                          chunk_size: int | None = None, sequential: bool = False, labels=None
                          ) -> tuple[jax.Array, ...]:
  """The paper's gradient maps and the same classes' Grad-CAM maps, out of the same passes.

  The forward pass to `layer` and the head's k backward passes are shared, so Grad-CAM costs almost
  nothing more; each output is what `saliency.class_saliency` / `top_k_saliency` and
  `class_region_maps('grad_cam', ...)` give (to float round-off). The gradient is the plain one (no
  ReLU rule).

  With `labels` (and k), also each image's two maps of its label class: where the label is among the
  top-k, that class's maps; elsewhere one more backward pass, in a branch of the same call (`lax.cond`).
  The branch runs for those images alone where the images go one after another (`sequential` on one
  device); vmapped, it runs for every image: then a second call for the images whose label is not among
  their top-k costs less.

  Args:
    model: the model.
    images: float [B, H, W, C].
    classes: int [B, k], or None for each image's `k` top-scoring classes (10-crop averaged with
      `crop_size`).
    k: the number of top classes (without `classes`).
    layer: Grad-CAM's layer, as `grad_cam` takes it.
    crop_size: an int or (h, w): the 10 crops' size; None maps the whole images.
    chunk_size: images per compiled call (default: all at once).
    sequential: as `saliency.class_saliency` takes it.
    labels: int [B], with k: also the label class's maps.

  Returns:
    (classes int32 [B, k], scores [B, k], gradient maps [B, k, H, W], Grad-CAM maps [B, k, H, W]), and
    with `labels` the label's gradient map [B, H, W] and Grad-CAM map [B, H, W].

  Raises:
    ValueError: both classes and k, or labels with classes.
  """
  model = rules.as_model(model, images)
  images = saliency.check_images(model, images)
  crop_hw = None if crop_size is None else saliency.crop_shape(crop_size, images.shape[1:3])
  saliency.check_model(model, images, crop_hw)
  if (classes is None) == (k is None):
    raise ValueError('give either classes [B, k] or k (the top-k classes), not both')
  example = images[:1, :crop_hw[0], :crop_hw[1]] if crop_hw else images[:1]
  p = parts(model, layer, example)
  kernel = functools.partial(saliency.pick_kernel(_fused_kernel, _sequential_fused_kernel, sequential), p,
                             crop_hw=crop_hw)
  if classes is None:
    saliency.check_top_k(model, example.shape[1:], k)
    if labels is None:
      out = parallel.chunked(lambda x: kernel(x, None, k=k), (images,), chunk_size)
    else:
      labels = saliency.check_labels(labels, images.shape[0], saliency.num_classes(model, example.shape[1:]))
      out = parallel.chunked(lambda x, y: kernel(x, None, y, k=k), (images, labels), chunk_size)
  elif labels is not None:
    raise ValueError('labels go with k (the top-k classes), not with classes')
  else:
    classes = saliency.check_classes(model, images, classes, crop_hw)
    out = parallel.chunked(functools.partial(kernel, k=classes.shape[1]), (images, classes), chunk_size)
  return out[:2] + saliency.check_finite(out[2:], 'gradient_and_grad_cam')


def occlusion_masks(hw, patch: int, stride: int) -> np.ndarray:
  """The masks of the square patches that occlusion slides over an image.

  The last row and column of patches are flush with the image's edge.

  Args:
    hw: (H, W) of the images.
    patch: the patches' side in pixels.
    stride: the step between patches in pixels.

  Returns:
    float [P, H, W], 1 inside each patch.

  Raises:
    ValueError: a patch larger than the image or under 1, or a stride under 1.
  """
  h, w = hw
  if not 1 <= patch <= min(h, w) or stride < 1:
    raise ValueError(f'occlusion needs 1 <= patch <= {min(h, w)} and stride >= 1, got patch {patch}, '
                     f'stride {stride}')
  def starts(n):
    return sorted(set(range(0, n - patch + 1, stride)) | {n - patch})
  masks = []
  for r in starts(h):
    for c in starts(w):
      m = np.zeros((h, w), np.float32)
      m[r:r + patch, c:c + patch] = 1
      masks.append(m)
  return np.stack(masks)


@functools.partial(jax.jit, compiler_options=saliency.COMPILER_OPTIONS)
def _occlusion(model, images, classes, masks, value):
  """Classes [B, k] -> maps [B, k, H, W]: the k classes' score drops come from the same forward passes."""
  b, p = images.shape[0], masks.shape[0]
  m = masks[None, :, :, :, None]
  occluded = images[:, None] * (1 - m) + value * m  # [B, P, H, W, C]
  scores = model(jnp.concatenate([images, occluded.reshape(b * p, *images.shape[1:])]))
  full = jnp.take_along_axis(scores[:b], classes, axis=1)  # [B, k]
  part = jnp.take_along_axis(scores[b:].reshape(b, p, -1), classes[:, None], axis=2)  # [B, P, k]
  drop = full[:, None] - part
  maps = jnp.einsum('bpk,phw->bkhw', drop, masks) / jnp.maximum(masks.sum(0), 1)
  return saliency.mark_bad(maps, saliency.finite_rows(scores[:b], scores[b:].reshape(b, -1)))


def _occlusion_chunked(model, images, classes, masks, value):
  """`_occlusion` with the patches a chunk at a time, the score drops summed by a `lax.scan`.

  masks: [n_chunks, chunk, H, W]; all-zero masks pad the last chunk and add nothing.
  """
  b = images.shape[0]
  full_scores = model(images)
  full = jnp.take_along_axis(full_scores, classes, axis=1)  # [B, k]

  def step(carry, chunk):
    total, ok = carry
    m = chunk[None, :, :, :, None]
    occluded = images[:, None] * (1 - m) + value * m  # [B, c, H, W, C]
    scores = model(occluded.reshape(-1, *images.shape[1:])).reshape(b, chunk.shape[0], -1)
    part = jnp.take_along_axis(scores, classes[:, None], axis=2)  # [B, c, k]
    total = total + jnp.einsum('bpk,phw->bkhw', full[:, None] - part, chunk)
    return (total, ok & saliency.finite_rows(scores)), None

  zeros = jnp.zeros((b, classes.shape[1], *images.shape[1:3]), images.dtype)
  (total, ok), _ = jax.lax.scan(step, (zeros, saliency.finite_rows(full_scores)), masks)
  return saliency.mark_bad(total / jnp.maximum(masks.sum((0, 1)), 1), ok)


occlusion_kernel = jax.jit(_occlusion_chunked, compiler_options=saliency.COMPILER_OPTIONS)


def _occlusion_maps(model, images, classes, *, patch, stride, value, chunk_size, patch_chunk):
  masks = jnp.asarray(occlusion_masks(images.shape[1:3], patch, stride), images.dtype)
  value = jnp.asarray(value, images.dtype)
  if patch_chunk is None:
    fn = functools.partial(_occlusion, model, masks=masks, value=value)
  else:
    if not (saliency.is_int(patch_chunk) and patch_chunk >= 1):
      raise ValueError(f'patch_chunk must be a positive integer number of patches, got {patch_chunk!r}')
    masks = jnp.pad(masks, ((0, -len(masks) % patch_chunk), (0, 0), (0, 0)))  # zero masks: they add nothing
    fn = functools.partial(occlusion_kernel, model, masks=masks.reshape(-1, patch_chunk, *masks.shape[1:]),
                           value=value)
  return saliency.check_finite(parallel.chunked(lambda x, y: fn(x, y), (images, classes), chunk_size),
                               'occlusion')


def occlusion(model, images, labels, *, patch: int = 8, stride: int = 4, value: float = 0.0,
              chunk_size: int | None = None, patch_chunk: int | None = 16) -> jax.Array:
  """Occlusion sensitivity (Zeiler & Fergus 2014): the drop of S_c when a patch is occluded.

  Each `patch` square is set to `value`; each pixel's map averages the drops of the patches covering it.
  The patches go `patch_chunk` at a time through the model (`lax.scan`: memory holds chunk_size x
  patch_chunk images, whatever the number of patches); None: all patches of a chunk in one batch.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    patch: the patches' side in pixels.
    stride: the step between patches in pixels.
    value: what occluded pixels are set to (0: the training mean in model space).
    chunk_size: images per compiled call (default: all at once).
    patch_chunk: patches per forward pass (a positive integer), or None (all at once).

  Returns:
    float32 [B, H, W], signed (a negative value: occluding raised the score).

  Raises:
    ValueError: bad images, labels, model or patch_chunk, or non-finite scores or gradients.
  """
  model, images, labels = _prepare(model, images, labels)
  return _occlusion_maps(model, images, labels[:, None], patch=patch, stride=stride, value=value,
                         chunk_size=chunk_size, patch_chunk=patch_chunk)[:, 0]


# ----------------------------------------------------------------------------- the CAM family and RISE

# pytorch-grad-cam 1.5's definitions (jacobgil/pytorch-grad-cam, `base_cam.py` and one file per method):
# each method's channel weights or its map from the activations A [h, w, C] of the layer and the gradient
# g = dS_c/dA, then ReLU. `grad_cam` and `cam` above are the first two of the family.
GRADIENT_CAMS = ('grad_cam_plus_plus', 'xgrad_cam', 'layer_cam', 'hires_cam')
CHANNEL_CAMS = ('score_cam', 'ablation_cam')  # one forward pass per channel of the layer: chunked
CAM_FAMILY = (*GRADIENT_CAMS, 'eigen_cam', *CHANNEL_CAMS)
ABLATION_VALUE = 1e7  # pytorch-grad-cam's: an ablated channel of a layer with negative values is min - this




def _gradient_cam(a, g, method):
  """The map of a gradient-weighted CAM, before its ReLU: a, g [B, h, w, C] -> [B, h, w]."""
  if method == 'layer_cam':
    return (jax.nn.relu(g) * a).sum(-1)
  if method == 'hires_cam':
    return (g * a).sum(-1)
  total = a.sum(axis=(1, 2))[:, None, None, :]  # [B, 1, 1, C]: each channel's summed activation
  if method == 'grad_cam_plus_plus':
    g2 = g * g
    alpha = jnp.where(g != 0, g2 / (2 * g2 + total * g2 * g + 1e-6), 0.0)
    weights = (jax.nn.relu(g) * alpha).sum(axis=(1, 2))
  else:  # xgrad_cam
    weights = (g * a / (total + 1e-7)).sum(axis=(1, 2))
  return jnp.einsum('bhwc,bc->bhw', a, weights)


def _eigen_projection(a):
  """Eigen-CAM: each image's activations [h, w, C] projected on their first principal direction.

  The rows (pixels) are centred; the sign, which the SVD leaves open, is chosen so that the projection
  correlates positively with the channel-mean activation map (pytorch-grad-cam keeps LAPACK's sign).
  """
  def one(x):
    rows = x.reshape(-1, x.shape[-1])
    rows = rows - rows.mean(axis=0)
    _, _, vt = jnp.linalg.svd(rows, full_matrices=False)
    projection = rows @ vt[0]
    sign = jnp.where(jnp.sum(projection * x.mean(-1).reshape(-1)) < 0, -1.0, 1.0)
    return (sign * projection).reshape(x.shape[:2])
  return jax.vmap(one)(a)


def resize_align_corners(maps, hw) -> jax.Array:
  """Bilinear resize with the corners aligned (PyTorch's `UpsamplingBilinear2d`), as Score-CAM's masks.

  Args:
    maps: [B, h, w, C].
    hw: (H, W), the size wanted.

  Returns:
    [B, H, W, C].
  """
  def matrix(n_out, n_in):
    if n_in == 1:
      return jnp.ones((n_out, 1), maps.dtype)
    src = jnp.arange(n_out, dtype=maps.dtype) * ((n_in - 1) / max(n_out - 1, 1))
    low = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, n_in - 2)
    frac = src - low
    return (jax.nn.one_hot(low, n_in, dtype=maps.dtype) * (1 - frac)[:, None]
            + jax.nn.one_hot(low + 1, n_in, dtype=maps.dtype) * frac[:, None])
  rows, cols = matrix(hw[0], maps.shape[1]), matrix(hw[1], maps.shape[2])
  return jnp.einsum('Hh,bhwc,Ww->bHWc', rows, maps, cols)


def _channel_chunks(n: int, chunk: int):
  """Channel indices [n_chunks, chunk] covering range(n), the last chunk padded with channel 0."""
  padded = -(-n // chunk) * chunk
  return jnp.where(jnp.arange(padded) < n, jnp.arange(padded), 0).reshape(-1, chunk)


def _channel_scores(score, n: int, chunk: int):
  """score(channel indices [chunk]) -> [chunk(, k)] for every channel, `chunk` at a time: [n(, k)]."""
  out = jax.lax.map(score, _channel_chunks(n, chunk))
  return out.reshape(-1, *out.shape[2:])[:n]


def _cam_family_maps(model, p: Parts, images, labels, *, method, upsample, channel_chunk):
  raw = p.features(images)
  grid = token_grid(p.model, raw.shape)  # a ViT block's tokens read as a map
  a = _spatial(raw, grid)
  ok = saliency.finite_rows(a)
  if method in GRADIENT_CAMS:
    scores, vjp = jax.vjp(p.head, raw)
    (g,) = vjp(jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype))
    g = _spatial(g, grid)
    cam = _gradient_cam(a, g, method)
    ok = ok & saliency.finite_rows(scores, g)
  elif method == 'eigen_cam':
    cam = _eigen_projection(a)
  elif method == 'score_cam':  # each channel, min-max scaled at the input's size, masks the input
    masks = resize_align_corners(a, images.shape[1:3])
    low, high = masks.min(axis=(1, 2), keepdims=True), masks.max(axis=(1, 2), keepdims=True)
    masks = (masks - low) / (high - low + 1e-8)

    def weights(x, m, y):
      def score(channels):
        return model(x[None] * jnp.moveaxis(m[..., channels], -1, 0)[..., None])[:, y]
      return jax.nn.softmax(_channel_scores(score, a.shape[-1], channel_chunk), axis=0)
    w = jax.vmap(weights)(images, masks, labels)  # [B, C], or [B, C, k]: k classes, the same passes
    cam = jnp.einsum('bhwc,bck->bkhw', a, w) if labels.ndim == 2 else jnp.einsum('bhwc,bc->bhw', a, w)
  else:  # ablation_cam: the score's relative drop when each channel is ablated
    original = jnp.take_along_axis(p.head(raw), labels[:, None], axis=1)[:, 0]

    def weights(r, x, y, s):  # r: the raw layer output, x: its map
      value = jnp.where(x.min() == 0, 0.0, x.min() - ABLATION_VALUE)

      def score(channels):
        off = jax.nn.one_hot(channels, x.shape[-1], dtype=bool)[:, None, None, :]
        ablated = jnp.where(off, value, x[None])
        return p.head(_tokens(jnp.broadcast_to(r, (len(channels), *r.shape)), ablated, grid))[:, y]
      return (s - _channel_scores(score, x.shape[-1], channel_chunk)) / s
    cam = jnp.einsum('bhwc,bc->bhw', a, jax.vmap(weights)(raw, a, labels, original))
  cam = saliency.mark_bad(jax.nn.relu(cam), ok)
  if not upsample:
    return cam
  return _upsample(cam.reshape(-1, *cam.shape[-2:]), images.shape[1:3]).reshape(*cam.shape[:-2],
                                                                                 *images.shape[1:3])


cam_family_kernel = jax.jit(_cam_family_maps, static_argnames=('method', 'upsample', 'channel_chunk'),
                            compiler_options=saliency.COMPILER_OPTIONS)
cam_family_kernel.__doc__ = """The CAM family's jitted kernel for one chunk of images, no checks.

(model, parts: `Parts`, images, labels, *, method, upsample, channel_chunk) -> [B, H, W]; public so that
its memory can be measured (`.lower(...).compile()`).
"""


def cam_family(method: str, model, images, labels, *, layer=None, upsample: bool = True,
               chunk_size: int | None = None, channel_chunk: int = 32) -> jax.Array:
  """A CAM variant of pytorch-grad-cam (its definitions in version 1.5), on a named layer or a user split.

  A: the activations [h, w, C] of `layer`; g = dS_c/dA; every map then goes through a ReLU.

  * 'grad_cam_plus_plus' (Chattopadhay et al. 2018): weights sum_ij relu(g) a_ij with
    a_ij = g^2 / (2 g^2 + sum_ij(A) g^3 + 1e-6) (0 where g = 0); sum_k w_k A_k.
  * 'xgrad_cam' (Fu et al. 2020): weights sum_ij g A / (sum_ij(A) + 1e-7).
  * 'layer_cam' (Jiang et al. 2021): sum_k relu(g_k) A_k, pixel by pixel.
  * 'hires_cam' (Draelos & Carin 2020): sum_k g_k A_k, pixel by pixel.
  * 'eigen_cam' (Muhammad & Yeasin 2020): the projection of the centred activations on their first
    principal direction; class-agnostic (the labels are checked, not used); the SVD's sign is chosen
    so that the projection correlates positively with the channel-mean map.
  * 'score_cam' (Wang et al. 2020): each channel, resized to the input with the corners aligned and
    min-max scaled, masks the input; the softmax over channels of the class's scores of the masked
    inputs weights the channels. One forward pass per channel.
  * 'ablation_cam' (Desai & Ramaswamy 2020): the class score's relative drop when a channel is set to 0
    (to the image's minimum activation less `ABLATION_VALUE` where the layer has negative values;
    pytorch-grad-cam takes the batch's minimum) weights the channels. One head pass per channel.

  Args:
    method: a name of `CAM_FAMILY`.
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    layer: a name of `deconvnet.layer_names(model)` (default `default_layer`), or, on any model, a
      pair (features, head) of callables (`parts`).
    upsample: upsample the maps to the input's size (bilinear, as `grad_cam`).
    chunk_size: images per compiled call (default: all at once).
    channel_chunk: Score-CAM's and Ablation-CAM's channels scored per step (`lax.map` over chunks of
      them): memory holds chunk_size x channel_chunk images whatever the layer's width.

  Returns:
    float32 [B, H, W] (or [B, h, w] with upsample=False), non-negative.

  Raises:
    ValueError: an unknown method, a bad channel_chunk, layer, images, labels or model, or non-finite
      scores or gradients.
  """
  if method not in CAM_FAMILY:
    raise ValueError(f'unknown CAM variant {method!r}; expected one of {CAM_FAMILY}')
  model, images, labels = _prepare(model, images, labels)
  return _cam_family(method, model, images, labels, layer=layer, upsample=upsample, chunk_size=chunk_size,
                     channel_chunk=channel_chunk)


def _cam_family(method, model, images, labels, *, layer, upsample, chunk_size, channel_chunk):
  """`cam_family` of checked inputs; labels [B], or [B, k] for Score-CAM (k classes, the same passes)."""
  if not saliency.is_int(channel_chunk) or channel_chunk < 1:
    raise ValueError(f'{method}: channel_chunk must be a positive integer, got {channel_chunk!r}')
  fn = functools.partial(cam_family_kernel, model, parts(model, layer, images, method), method=method,
                         upsample=upsample, channel_chunk=int(channel_chunk))
  return saliency.check_finite(parallel.chunked(lambda x, y: fn(x, y), (images, labels), chunk_size), method)


# RISE (Petsiuk et al. 2018) as TorchRay writes it (`torchray.attribution.rise`): low-resolution random
# grids, upsampled with reflection padding and shifted at random, mask the input; a pixel's saliency is
# the mean over masks of sigmoid(the class score of the masked input) x the mask's value there.


def rise_masks(key, num_masks: int, hw, *, num_cells: int = 7, p: float = 0.5) -> jax.Array:
  """RISE's random masks, TorchRay's way.

  Each mask: a num_cells x num_cells grid of cells, 1 with probability p; padded by reflection,
  upsampled bilinearly, sliced to the input's size plus a cell (cell: ceil(side / num_cells)), then
  cut at a random offset in [0, cell) along each axis.

  Args:
    key: a JAX random key.
    num_masks: how many.
    hw: (H, W) of the images.
    num_cells: the grid's cells per side.
    p: the probability that a cell is 1.

  Returns:
    float32 [num_masks, H, W] in [0, 1].
  """
  h, w = hw
  cell = (-(-h // num_cells), -(-w // num_cells))
  k_grid, k_x, k_y = jax.random.split(key, 3)
  grid = (jax.random.uniform(k_grid, (num_masks, num_cells, num_cells)) < p).astype(jnp.float32)
  shift_x = jax.random.randint(k_x, (num_masks,), 0, cell[0])
  shift_y = jax.random.randint(k_y, (num_masks,), 0, cell[1])
  return rise_masks_from(grid, shift_x, shift_y, hw)


def rise_masks_from(grid, shift_x, shift_y, hw) -> jax.Array:
  """RISE masks from given grids and shifts (`rise_masks` draws them).

  Args:
    grid: [N, n, n] cell values.
    shift_x: int [N], the row offsets, in [0, cell size).
    shift_y: int [N], the column offsets.
    hw: (H, W) of the images.

  Returns:
    float32 [N, H, W].
  """
  grid = jnp.asarray(grid, jnp.float32)
  n_cells, (h, w) = grid.shape[1], hw
  size = (h - (-h // n_cells), w - (-w // n_cells))  # the input plus a cell: room for the shift
  step = (-(-size[0] // n_cells), -(-size[1] // n_cells))  # the cell of the upsampled grid
  padded = jnp.pad(grid, ((0, 0), (1, 1), (1, 1)), mode='reflect')
  up = jax.image.resize(padded, (grid.shape[0], step[0] * (n_cells + 2), step[1] * (n_cells + 2)), 'bilinear')
  up = up[:, step[0]:step[0] + size[0], step[1]:step[1] + size[1]]
  return jax.vmap(lambda m, x, y: jax.lax.dynamic_slice(m, (x, y), (h, w)))(up, jnp.asarray(shift_x),
                                                                           jnp.asarray(shift_y))


# What RISE weighs each mask by: TorchRay's sigmoid of the class's score, the RISE paper's probability (the
# softmax over the classes) or the score itself.
RISE_SCORES = ('sigmoid', 'softmax', 'raw')


def _rise_sums(model, images, labels, masks, count, *, mask_chunk, score='sigmoid'):
  """The mean over `count` masks of score(scores of image x mask)[label] x mask (`RISE_SCORES`).

  masks [N, H, W], N a multiple of mask_chunk (zero masks pad it: they add nothing).
  """
  chunks = masks.reshape(-1, mask_chunk, *masks.shape[1:])  # a view of the argument, no copy

  def one(x, y):  # y: a class, or k classes out of the same masked passes (`class_region_maps`)
    def step(total, m):
      scores = model(x[None] * m[..., None])
      s = (jax.nn.softmax(scores, axis=-1) if score == 'softmax' else scores)[:, y]
      s = jax.nn.sigmoid(s) if score == 'sigmoid' else s
      return total + jnp.einsum('m...,mhw->...hw', s, m), None
    total, _ = jax.lax.scan(step, jnp.zeros(y.shape + masks.shape[1:], masks.dtype), chunks)
    return total / count
  out = jax.vmap(one)(images, labels)
  return saliency.mark_bad(out, saliency.finite_rows(out))


rise_kernel = jax.jit(_rise_sums, static_argnames=('mask_chunk', 'score'),
                      compiler_options=saliency.COMPILER_OPTIONS)
rise_kernel.__doc__ = """RISE's jitted kernel for one chunk of images, no checks.

(model, images, labels, masks [N, H, W] with N a multiple of mask_chunk, count: the masks that count, *,
mask_chunk, score='sigmoid') -> [B, H, W]; public so that its memory can be measured
(`.lower(...).compile()`).
"""


def rise(model, images, labels, *, key=None, masks=None, num_masks: int = 8000, num_cells: int = 7,
         p: float = 0.5, mask_chunk: int = 32, score: str = 'sigmoid', chunk_size: int | None = None
         ) -> jax.Array:
  """RISE (Petsiuk et al. 2018), TorchRay's definition: the mean of sigmoid scores of masked inputs x masks.

  The masked input is image x mask in model space (0: the training mean). The masks are the same for
  every image of the call; they go `mask_chunk` at a time through the model (`lax.scan`), so memory
  holds chunk_size x mask_chunk images whatever num_masks. `score` chooses the weight of each mask:
  TorchRay's sigmoid of the class's score (the default), the RISE paper's class probability ('softmax')
  or the score itself ('raw'). Where the class stays confident under most masks, either map stands on
  a floor (the mean weight times the masks' keep rate) well above its range of variation.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    key: a JAX random key for `rise_masks` (default `jax.random.key(0)`).
    masks: [N, H, W] masks to use instead (e.g. the same as another implementation's).
    num_masks: how many masks to draw.
    num_cells: the masks' grid cells per side.
    p: the probability that a cell is kept.
    mask_chunk: masks per step.
    score: 'sigmoid', 'softmax' or 'raw' (`RISE_SCORES`).
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W].

  Raises:
    ValueError: masks of another size, bad settings, images, labels or model, or non-finite scores.
  """
  model, images, labels = _prepare(model, images, labels)
  return _rise(model, images, labels, key=key, masks=masks, num_masks=num_masks, num_cells=num_cells, p=p,
               mask_chunk=mask_chunk, score=score, chunk_size=chunk_size)


def _rise(model, images, labels, *, key, masks, num_masks, num_cells, p, mask_chunk, score, chunk_size):
  """`rise` of checked inputs; labels [B], or [B, k] (k classes out of the same masked passes)."""
  if not saliency.is_int(mask_chunk) or mask_chunk < 1:
    raise ValueError(f'rise: mask_chunk must be a positive integer, got {mask_chunk!r}')
  if score not in RISE_SCORES:
    raise ValueError(f'rise: score must be one of {RISE_SCORES}, got {score!r}')
  if masks is None:
    if not saliency.is_int(num_masks) or num_masks < 1 or not 0 < p <= 1:
      raise ValueError(f'rise needs num_masks >= 1 and 0 < p <= 1, got {num_masks!r}, {p!r}')
    masks = rise_masks(random_key(key, 'rise'), num_masks, images.shape[1:3],
                       num_cells=num_cells, p=p)
  masks = jnp.asarray(masks, images.dtype)
  if masks.ndim != 3 or masks.shape[1:] != images.shape[1:3]:
    raise ValueError(f'rise: masks must be [N, H, W] with (H, W) = {images.shape[1:3]}, got {masks.shape}')
  count = masks.shape[0]
  masks = jnp.pad(masks, ((0, -count % mask_chunk), (0, 0), (0, 0)))  # zero masks: they add nothing
  fn = functools.partial(rise_kernel, model, masks=masks, count=jnp.asarray(count, images.dtype),
                         mask_chunk=int(mask_chunk), score=score)
  out = parallel.chunked(lambda x, y: fn(x, y), (images, labels), chunk_size)
  return saliency.check_finite(out, 'rise')


# XRAI (Kapishnikov et al. 2019) as PAIR's saliency package defines it: Integrated Gradients from a black
# and a white baseline, image regions from Felzenszwalb segmentations at several scales, and the regions
# added greedily by the density of attribution they add.
XRAI_SCALES = (50, 100, 150, 250, 500, 1200)  # Felzenszwalb scales (PAIR's), segmenting at 224 x 224
XRAI_STEP_CHUNK = 10  # XRAI's Integrated Gradients: path points per step of its lax.scan


def xrai_segments(image, *, scales=XRAI_SCALES, sigma: float = 0.8, min_size: int = 150,
                  dilation_radius: int = 5, size=(224, 224)) -> np.ndarray:
  """XRAI's candidate regions of one image: every Felzenszwalb segment at every scale, dilated.

  The image is min-max scaled to [-1, 1] and resized to `size` (cubic, anti-aliased) for the
  segmentation, the segment labels resized back (nearest), each segment dilated by a disk.

  Args:
    image: [H, W, C], any range.
    scales: Felzenszwalb's scale values.
    sigma: Felzenszwalb's pre-smoothing.
    min_size: Felzenszwalb's smallest segment.
    dilation_radius: the disk's radius (0: none).
    size: the segmentation's size, or None for the image's own.

  Returns:
    bool [M, H, W], the regions.
  """
  from skimage import morphology, segmentation, transform
  image = np.asarray(image, np.float64)
  shape = image.shape[:2]
  scaled = (image - image.min()) / (image.max() - image.min()) * 2.0 - 1.0
  if size is not None:
    scaled = transform.resize(scaled, size, order=3, mode='constant', preserve_range=True, anti_aliasing=True)
  masks = []
  for scale in scales:
    seg = segmentation.felzenszwalb(scaled, scale=scale, sigma=sigma, min_size=min_size)
    if size is not None:
      seg = transform.resize(seg, shape, order=0, preserve_range=True, mode='constant',
                             anti_aliasing=False).astype(int)
    masks += [seg == label for label in range(seg.min(), seg.max() + 1)]
  if dilation_radius:
    disk = morphology.disk(dilation_radius)
    masks = [morphology.dilation(m, footprint=disk) for m in masks]
  return np.stack(masks)


def xrai_atoms(segments) -> tuple:
  """The pieces an image's XRAI regions cut it into: pixels in exactly the same regions form one atom.

  The greedy ranking needs, per region, only its new pixels' count and attribution sum; both are sums
  over atoms, of which there are far fewer than pixels.

  Args:
    segments: bool [M, H, W], the regions.

  Returns:
    (atom int32 [H * W]: each pixel's atom, members bool [M, A]: the atoms of each region,
    pixels int32 [A]: each atom's pixel count).
  """
  segments = np.asarray(segments, bool)
  bits = np.packbits(segments.reshape(len(segments), -1), axis=0).T  # [H * W, ceil(M / 8)]
  rows = np.ascontiguousarray(bits).view(np.dtype((np.void, bits.shape[1]))).ravel()
  _, first, atom = np.unique(rows, return_index=True, return_inverse=True)
  members = segments.reshape(len(segments), -1)[:, first]
  return atom.astype(np.int32), members, np.bincount(atom, minlength=len(first)).astype(np.int32)


def _xrai_rank(attr, atom, members, pixels, area_threshold, min_pixel_diff):
  """One image's XRAI map, ranked on its atoms.

  attr [H, W], atom [H * W], members [M, A], pixels [A]; padded atoms have no pixels, padded regions no atoms.
  """
  sums = jax.ops.segment_sum(attr.reshape(-1), atom, num_segments=pixels.shape[0])
  total = attr.size

  def more(state):
    _, _, _, covered, done = state
    return (covered.astype(attr.dtype) / total <= area_threshold) & ~done  # the share, as PAIR's mean

  def add(state):
    current, alive, gain, _, _ = state
    diff = members & ~current[None]
    counts = diff.astype(jnp.int32) @ pixels
    alive = alive & (counts >= min_pixel_diff)  # regions that add too little are dropped for good
    added = diff.astype(attr.dtype) @ sums
    gains = jnp.where(alive, added / jnp.maximum(counts, 1), -jnp.inf)
    best = jnp.argmax(gains)  # the first of equal gains, as PAIR's loop over the regions in order
    done = ~alive.any()
    gain = jnp.where(diff[best] & ~done, gains[best], gain)
    current = jnp.where(done, current, current | members[best])
    covered = jnp.sum(jnp.where(current, pixels, 0), dtype=jnp.int32)
    return current, alive.at[best].set(False), gain, covered, done
  init = (jnp.zeros(pixels.shape, bool), jnp.ones(members.shape[0], bool),
          jnp.full(pixels.shape, -jnp.inf, attr.dtype), jnp.zeros((), jnp.int32), jnp.array(False))
  _, _, gain, _, _ = jax.lax.while_loop(more, add, init)
  left = gain == -jnp.inf
  fill = jnp.sum(jnp.where(left, sums, 0)) / jnp.maximum(jnp.sum(jnp.where(left, pixels, 0)), 1)
  return jnp.where(left, fill, gain)[atom].reshape(attr.shape)


xrai_rank = jax.jit(jax.vmap(_xrai_rank, in_axes=(0, 0, 0, 0, None, None)),
                    static_argnames=('min_pixel_diff',))
xrai_rank.__doc__ = """XRAI's greedy ranking, batched over images, on the regions' atoms (`xrai_atoms`).

(attr [B, H, W], atom int [B, H * W], members bool [B, M, A], pixels int [B, A], area_threshold,
min_pixel_diff) -> [B, H, W]: each region's gain (the mean attribution it adds), regions taken best first
until `area_threshold` of the image is covered; what no region covered gets the mean attribution there.
"""


def xrai_region_atoms(atoms) -> tuple:
  """`xrai_atoms` of several images, padded to the same sizes for `xrai_rank`.

  Args:
    atoms: per image, `xrai_atoms` of its regions.

  Returns:
    (atom int32 [B, H * W], members bool [B, M, A], pixels int32 [B, A]): padded regions hold no atom,
    padded atoms no pixel.
  """
  m, a = max(p[1].shape[0] for p in atoms), max(p[1].shape[1] for p in atoms)
  members = np.zeros((len(atoms), m, a), bool)
  pixels = np.zeros((len(atoms), a), np.int32)
  for i, (_, own, count) in enumerate(atoms):
    members[i, :own.shape[0], :own.shape[1]] = own
    pixels[i, :len(count)] = count
  return np.stack([p[0] for p in atoms]), members, pixels


def _segment_atoms(image):
  """`xrai_atoms` of `xrai_segments(image)`: the regions themselves ([M, H, W]) are not kept."""
  return xrai_atoms(xrai_segments(image))


def xrai(model, images, labels, *, steps: int = 100, area_threshold: float = 1.0, min_pixel_diff: int = 50,
         attributions=None, segments=None, chunk_size: int | None = None) -> jax.Array:
  """XRAI (Kapishnikov et al. 2019), PAIR saliency's definition (its 'full' algorithm).

  The attribution: the mean of Integrated Gradients from a black and a white baseline (each image's
  minimum and maximum), PAIR's sum over `steps` equally spaced points from the baseline to the image
  (`XRAI_STEP_CHUNK` points at a time), the maximum over channels. The regions: `xrai_segments` of each
  image (host, scikit-image, one thread per core, while the gradients compute). The map:
  regions added greedily by the density of the attribution they add (`xrai_rank`, on the device,
  batched over images).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], the class of each image.
    steps: Integrated Gradients' points.
    area_threshold: the share of the image the regions cover before the rest is filled.
    min_pixel_diff: regions adding fewer new pixels are dropped.
    attributions: [B, H, W, C] or [B, H, W] attributions to rank instead of the Integrated Gradients.
    segments: per image, bool [M_i, H, W] regions instead of `xrai_segments`.
    chunk_size: images per compiled call of the gradients (default: all at once).

  Returns:
    float32 [B, H, W] (the images' dtype): each pixel's region gain.

  Raises:
    ValueError: bad settings, attributions or segments, images, labels or model, or non-finite scores.
  """
  model, images, labels = _prepare(model, images, labels)
  if not (saliency.is_int(steps) and steps >= 1 and saliency.is_int(min_pixel_diff)
          and 0 < area_threshold <= 1):
    raise ValueError(f'xrai needs integer steps >= 1 and min_pixel_diff, and 0 < area_threshold <= 1, got '
                     f'{steps!r}, {min_pixel_diff!r}, {area_threshold!r}')
  if attributions is not None:
    attributions = jnp.asarray(attributions, images.dtype)
    if attributions.ndim not in (3, 4) or attributions.shape[:3] != images.shape[:3]:
      raise ValueError(f'xrai: attributions must be [B, H, W(, C)] {images.shape[:3]}, got '
                       f'{attributions.shape}')
    attributions = attributions[:, None]
  return _xrai(model, images, labels[:, None], steps=steps, area_threshold=area_threshold,
               min_pixel_diff=min_pixel_diff, attributions=attributions, segments=segments,
               chunk_size=chunk_size)[:, 0]


def _xrai(model, images, classes, *, steps, area_threshold, min_pixel_diff, attributions, segments,
          chunk_size):
  """`xrai` of checked inputs for classes [B, k] (attributions [B, k, H, W(, C)]): one segmentation each."""
  if segments is not None:
    segments = [np.asarray(s, bool) for s in segments]
    if len(segments) != images.shape[0] or any(s.ndim != 3 or s.shape[1:] != images.shape[1:3]
                                               for s in segments):
      raise ValueError(f'xrai: segments must be one bool [M, H, W] per image, (H, W) = {images.shape[1:3]}')
  if attributions is None:  # dispatched first: the host segments the images while they compute
    alphas, weights = chunk_points(np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps), XRAI_STEP_CHUNK)
    low = jnp.broadcast_to(images.min(axis=(1, 2, 3), keepdims=True), images.shape)
    high = jnp.broadcast_to(images.max(axis=(1, 2, 3), keepdims=True), images.shape)
    fn = functools.partial(ig_kernel, model, alphas=jnp.asarray(alphas, images.dtype),
                           weights=jnp.asarray(weights, images.dtype))
    attributions = jnp.stack([  # each class's maximum over channels
        ((parallel.chunked(lambda x, y, z: fn(x, y, z), (images, classes[:, j], low), chunk_size)
          + parallel.chunked(lambda x, y, z: fn(x, y, z), (images, classes[:, j], high), chunk_size)) / 2
         ).max(axis=-1) for j in range(classes.shape[1])], axis=1)
  attr = attributions.max(axis=-1) if attributions.ndim == 5 else attributions
  if segments is None:  # scikit-image and SciPy release the GIL: one thread per core
    with concurrent.futures.ThreadPoolExecutor(min(len(images), os.cpu_count() or 1)) as pool:
      atoms = list(pool.map(_segment_atoms, np.asarray(images)))
  else:
    atoms = [xrai_atoms(s) for s in segments]
  atom, members, pixels = xrai_region_atoms(atoms)
  threshold = jnp.asarray(area_threshold, images.dtype)

  def rank(a, i, m, n):
    return jnp.stack([xrai_rank(a[:, j], i, m, n, threshold, int(min_pixel_diff))
                      for j in range(classes.shape[1])], axis=1)
  out = parallel.chunked(rank, (attr, atom, members, pixels), chunk_size)
  return saliency.check_finite(out, 'xrai')


# ----------------------------------------------------------------------------- one API


@dataclasses.dataclass(frozen=True)
class Method:
  """An attribution method as the package declares it, once (`REGISTRY`).

  Attributes:
    function: `method(model, images, labels, *, chunk_size=None, **settings)`.
    space: 'input' (it returns attributions [B, H, W, C]) or 'region' (maps [B, H, W]).
    takes_key: it draws noise from a `key` setting.
    ten_crops: how it maps k classes of the paper's 10 crops in one call: 'rule' (the gradient with the
      ReLU rule `relu`: `saliency.class_saliency`), 'region' (`class_region_maps`), 'whole' (as 'region',
      on the whole image only: no crops) or '' (none: one class at a time, on one crop).
    relu: the ReLU rule of a 'rule' method (None: the plain gradient).
  """
  function: Callable
  space: str
  takes_key: bool = False
  ten_crops: str = ''
  relu: Callable | None = None


# Every method: adding one is its function and one entry here.
REGISTRY = {
    'gradient': Method(gradient, 'input', ten_crops='rule'),
    'gradient_x_input': Method(gradient_x_input, 'input'),
    'smoothgrad': Method(smoothgrad, 'input', takes_key=True),
    'integrated_gradients': Method(integrated_gradients, 'input'),
    'gradient_shap': Method(gradient_shap, 'input', takes_key=True),
    'guided_backprop': Method(guided_backprop, 'input', ten_crops='rule', relu=deconvnet.guided_relu),
    'deconvnet': Method(deconvnet_attribution, 'input', ten_crops='rule', relu=deconvnet.deconvnet_relu),
    'grad_cam': Method(grad_cam, 'region', ten_crops='region'),
    'cam': Method(cam, 'region', ten_crops='region'),
    'occlusion': Method(occlusion, 'region', ten_crops='whole'),
    **{name: Method(functools.partial(cam_family, name), 'region',
                    ten_crops='whole' if name in SHARED_CLASS_MAPS else '') for name in CAM_FAMILY},
    'rise': Method(rise, 'region', takes_key=True, ten_crops='whole'),
    'blur_ig': Method(blur_ig, 'input'),
    'guided_ig': Method(guided_ig, 'input'),
    'deeplift': Method(deeplift, 'input'),
    'lrp': Method(lrp, 'input'),
    'xrai': Method(xrai, 'region', ten_crops='whole'),
}
METHODS = tuple(REGISTRY)
INPUT_SPACE = tuple(name for name, m in REGISTRY.items() if m.space == 'input')
REGION = tuple(name for name, m in REGISTRY.items() if m.space == 'region')
FUNCTIONS = {name: m.function for name, m in REGISTRY.items()}
# the methods `class_region_maps` takes
CLASS_MAP_METHODS = tuple(name for name, m in REGISTRY.items() if m.ten_crops in ('region', 'whole'))


def registered(name: str) -> Method:
  """The registry's entry of a method.

  Args:
    name: a name of `METHODS`.

  Returns:
    Its `Method`.

  Raises:
    ValueError: naming the methods, for any other name.
  """
  if name not in REGISTRY:
    raise ValueError(f'unknown attribution method {name!r}; expected one of {METHODS}')
  return REGISTRY[name]


def attribute(method: str, model, images, labels, **settings) -> jax.Array:
  """A method's attribution, by its registry name.

  Args:
    method: a name of `METHODS`.
    model: the model.
    images: float [B, H, W, C].
    labels: int [B].
    **settings: the method's keyword settings (`chunk_size`, `steps`, `key`, ...).

  Returns:
    float32 [B, H, W, C] for input-space methods, [B, H, W] for region methods.

  Raises:
    ValueError: an unknown method, or as the method raises.
  """
  return registered(method).function(model, images, labels, **settings)


def to_map(attributions, *, signed: bool = False) -> np.ndarray:
  """Attributions reduced to the [B, H, W] maps every metric takes, on the host.

  Input-space attributions: max_c |a_c| (the paper's reduction; signed: sum_c a_c). Region maps
  (Grad-CAM, CAM, occlusion): their positive part, the evidence for the class (Grad-CAM's own ReLU;
  where occluding raises the score, or CAM's activations are negative, is not evidence); signed: the map
  itself.

  Args:
    attributions: [B, H, W, C] or [B, H, W].
    signed: keep the sign (sum over channels; the region map as it is).

  Returns:
    NumPy float32 [B, H, W].

  Raises:
    ValueError: attributions of another rank.
  """
  a = np.asarray(jax.device_get(attributions), np.float32)
  if a.ndim == 4:
    return a.sum(-1) if signed else np.abs(a).max(-1)
  if a.ndim == 3:
    return a if signed else np.maximum(a, 0)
  raise ValueError(f'attributions must be [B, H, W, C] or [B, H, W], got shape {a.shape}')
