"""Image-specific class saliency (paper Sect. 3.1): input gradients of unnormalised class scores.

The score S_c is linearised around the image, S_c(I) ~ w^T I + b with w = dS_c/dI; the map is
M_ij = max_c |w_ijc| (|w_ij| for a grey image). All functions here take a model called as
`model(x, *, relu=...)` returning scores [B, K] (the package's networks), or any JAX callable
`f(x) -> scores`, whose ReLUs take the rule by program transformation (`rules.as_model`); the model
goes to `jax.jit` as an argument, never closed over, so that XLA does not constant-fold the weights.

Cost: a batch of images needs ONE forward pass and, per class asked for, one backward pass
(a VJP whose cotangent is the one-hot of that class; several classes are a vmap over
cotangents). That is the paper's top-5 protocol: 10 crops x 5 classes = 1 batched forward of
10 crops + 5 batched backward passes, not 5 forwards.

The batch is differentiated as a whole (the gradient of sum_b S_{c_b}(x_b)), which equals the
per-image gradient because images do not interact in inference mode; the functions therefore
refuse a model in training mode (BatchNorm on batch statistics or active dropout).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import parallel, rules, xla

NUM_CROPS = 10


# ----------------------------------------------------------------------------- input checks


_IN_EVAL_MODE = set()  # pytree structures of models found in inference mode (`check_eval_mode`)


def check_eval_mode(model) -> None:
  """Raises if a module is in training mode.

  Called while tracing: the modes are static attributes of the model's pytree, so a mode change retraces
  and is checked again, and a call with a traced model pays nothing for the check.

  Args:
    model: the model (any pytree; its NNX modules are inspected).

  Raises:
    ValueError: a module (Dropout, BatchNorm) is in training mode.
  """
  if isinstance(model, rules.Function):  # any JAX callable: the NNX modules it holds
    for inner in model.consts:
      if isinstance(inner, nnx.Module):
        check_eval_mode(inner)
    return
  # The modes are part of the pytree's structure (a mode change changes it): a structure found in
  # inference mode once is not walked again (the walk costs more than the rest of a small call's checks).
  structure = jax.tree.structure(model)
  if structure in _IN_EVAL_MODE:
    return
  for path, module in nnx.iter_modules(model):
    training = (isinstance(module, nnx.BatchNorm) and not module.use_running_average) or (
        isinstance(module, nnx.Dropout) and not module.deterministic and module.rate > 0)
    if training:
      name = '.'.join(map(str, path)) or type(model).__name__
      raise ValueError(f'{name} is in training mode; call model.eval() before computing saliency '
                       '(images in a batch must not interact)')
  if len(_IN_EVAL_MODE) >= 256:
    _IN_EVAL_MODE.clear()
  _IN_EVAL_MODE.add(structure)


def _stray_rectifications(jaxpr) -> int:
  """Number of rectifications (`rules.count_jaxpr`: jax.nn.relu, max(x, 0), relu6) in a jaxpr."""
  found = rules.count_jaxpr(jaxpr)
  return found['relu'] + found['relu6']


def check_relu(model, images, relu) -> None:
  """Raises unless every rectification of the model goes through `relu`.

  A backward rule the model never calls, or that some of its ReLUs bypass (a hard-wired
  `jax.nn.relu`), would silently give the plain gradient there. Runs while tracing (once per
  compilation): the model is traced with a marker in place of `relu`, which counts its calls; any
  max(x, 0) left in that trace is a rectification that bypasses the rule.

  Args:
    model: a model that takes `relu=` (a `rules.Function` takes the rule at every rectification).
    images: float [B, H, W, C], the images it is traced at.
    relu: the ReLU passed by the caller (None or `jax.nn.relu`: nothing to check).

  Raises:
    ValueError: the model never calls `relu`, or some of its rectifications bypass it.
  """
  if relu is jax.nn.relu or isinstance(model, rules.Function):
    return  # a Function takes the rule at every rectification of its program (`rules.with_relu`)
  calls = []

  def marker(x):
    calls.append(x.shape)
    return x

  jaxpr = jax.make_jaxpr(lambda m, x: m(x, relu=marker))(model, images)
  stray = _stray_rectifications(jaxpr.jaxpr)
  name = getattr(relu, '__name__', repr(relu))
  if not calls:
    hard_wired = f' ({stray} rectifications are hard-wired)' if stray else ''
    raise ValueError(f'relu={name} was passed but {type(model).__name__} never calls its relu argument'
                     f'{hard_wired}: the result would be a plain gradient')
  if stray:
    raise ValueError(f'relu={name} was passed but {stray} rectification(s) of {type(model).__name__} '
                     'bypass it (max(x, 0) / jax.nn.relu called directly); route every ReLU through '
                     'the relu argument')


def num_classes(model, image_shape, dtype=jnp.float32) -> int:
  """The number of classes K of a model's scores for images of `image_shape`.

  `model.num_classes` where the model declares it, else the width of its scores (traced, not run).

  Args:
    model: the model.
    image_shape: (H, W, C) of one image.
    dtype: the images' float dtype (a function with float64 weights takes float64 images only).

  Returns:
    K, an int.

  Raises:
    ValueError: the model returns something that is not float class scores [B, K].
  """
  k = getattr(model, 'num_classes', None)
  if k is not None:
    return int(k)
  spec = jax.ShapeDtypeStruct((2, *image_shape), dtype)
  out = jax.eval_shape(lambda m, x: m(x), model, spec)
  expected = 'the model must return class scores [B, K] (one row of floats per image)'
  if not isinstance(out, jax.ShapeDtypeStruct):
    kind = type(out).__name__
    size = f' of {len(out)}' if isinstance(out, tuple | list | dict) else ''
    raise ValueError(f'{expected}; it returned a {kind}{size} for images {spec.shape} (a model that returns '
                     '(scores, extras): pass lambda x: model(x)[0])')
  if out.ndim != 2 or out.shape[0] != 2:
    raise ValueError(f'{expected}; it returned shape {out.shape} for 2 images of {tuple(image_shape)}')
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f'{expected}; it returned {out.dtype} scores, which have no gradient')
  return int(out.shape[1])


def check_images(model, images, rank: int = 4) -> jax.Array:
  """Images checked for a model: rank, float dtype, channels, not empty, finite.

  Args:
    model: the model (its `in_channels`, where it declares them, are checked).
    images: the images, float [B, H, W, C] (preprocessed as the model expects).
    rank: the rank expected (4: a batch; 3: one image).

  Returns:
    `images` as a JAX array.

  Raises:
    ValueError: naming what is wrong: rank, dtype (floats only), channels, emptiness, NaN or inf.
  """
  what = 'images [B, H, W, C]' if rank == 4 else 'image [H, W, C]'
  rules.check_array(images, what)
  shape, dtype = np.shape(images), getattr(images, 'dtype', np.asarray(images).dtype)
  if len(shape) != rank:
    raise ValueError(f'{what} must have rank {rank}, got shape {shape}')
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'{what} must be floating point (preprocessed as the model expects), got '
                     f'{dtype}; convert uint8 pixels with the model\'s normalisation first')
  channels = getattr(model, 'in_channels', None)
  if channels is not None and shape[-1] != channels:
    raise ValueError(f'{what} has {shape[-1]} channels; {type(model).__name__} expects {channels}')
  if 0 in shape:
    raise ValueError(f'{what} is empty: shape {shape}')
  if on_host(images):  # a sum is finite when every value is (else, or on overflow, count)
    values = np.asarray(images)
    bad = 0 if np.isfinite(np.sum(values)) else int(np.sum(~np.isfinite(values)))
  else:
    bad = int(_count_not_finite(images))
  if bad:
    raise ValueError(f'{what} holds {bad} NaN or infinite values')
  return jnp.asarray(images)


@jax.jit
def _count_not_finite(x):
  return jnp.sum(~jnp.isfinite(x))


def on_host(x) -> bool:
  """Whether NumPy reads x without a transfer: a NumPy array, or a JAX array on CPU devices only.

  The checks of a call's inputs and outputs then run in NumPy (a few microseconds) instead of as a
  program of their own (a dispatch, about a tenth of a millisecond).

  Args:
    x: an array.

  Returns:
    A bool.
  """
  return not isinstance(x, jax.Array) or all(d.platform == 'cpu' for d in x.devices())


def check_labels(labels, batch: int, num_classes: int, name: str = 'labels') -> jax.Array:
  """Labels checked: one integer class in [0, num_classes) per image.

  Args:
    labels: int [B] (a list, NumPy or JAX array).
    batch: B, the number of images.
    num_classes: K, the model's number of classes.
    name: what the error messages call the labels.

  Returns:
    int32 [B].

  Raises:
    ValueError: None, the wrong shape or count, a non-integer dtype, or a class outside [0, K).
  """
  if labels is None:
    raise ValueError(f'{name} is None: give one integer class index per image, shape [B]')
  labels_np = np.asarray(labels)
  if labels_np.ndim == 0:
    labels_np = labels_np[None]
  if labels_np.ndim != 1:  # [B, 1] would broadcast against the batch instead of picking one class per image
    raise ValueError(f'{name} must be one class index per image, shape [B], got shape {labels_np.shape}')
  if labels_np.shape[0] != batch:
    raise ValueError(f'{name} has shape {labels_np.shape}; expected {batch} entries, one per image')
  if not np.issubdtype(labels_np.dtype, np.integer):
    raise ValueError(f'{name} must be integer class indices, got dtype {labels_np.dtype}')
  if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= num_classes):
    raise ValueError(f'{name} must lie in [0, {num_classes}), got values from {labels_np.min()} '
                     f'to {labels_np.max()}')
  if isinstance(labels, jax.Array) and labels.dtype == jnp.int32 and labels.ndim == 1:
    return labels
  return jnp.asarray(labels_np, jnp.int32)


def check_input_size(model, hw) -> None:
  """Raises when the model was built for inputs of another size.

  Args:
    model: the model (`model.input_size`: (H, W), or None for any size).
    hw: (H, W) of the images (or crops) it is given.

  Raises:
    ValueError: the model was built for another (H, W).
  """
  expected = getattr(model, 'input_size', None)
  if expected is not None and tuple(hw) != tuple(expected):
    raise ValueError(f'{type(model).__name__} was built for {tuple(expected)} inputs; got {tuple(hw)} '
                     '(images, or crops when crop_size is given)')


@jax.jit
def _batch_gap(model, pair):
  """How much a pair's second image's scores change with the first beside it.

  (max |scores of pair[1] alone - its scores after pair[0]|, max |its scores|): the second row, so that
  a mask drawn per row (dropout with a fixed key) differs too.
  """
  alone, beside = model(pair[1:])[0], model(pair)[1]
  return jnp.max(jnp.abs(alone - beside)), jnp.max(jnp.abs(beside))


def check_model(model, images, hw=None) -> None:
  """Raises unless the model can score these images (or their crops of `hw`).

  `check_input_size`, `check_eval_mode`, and for any JAX callable (`rules.Function`; this package's
  networks declare their modes) its output (`num_classes`) and that an image's scores do not depend on
  the other images of its batch (a linen BatchNorm on batch statistics, dropout with a key: the maps
  would change with it). Measured on the first image alone and after another (the batch's second, or
  the first dimmed): 2 forward passes.

  Args:
    model: the model.
    images: float [B, H, W, C].
    hw: (h, w) of the crops the model will see, or None for the whole images.

  Raises:
    ValueError: naming the problem: size, training mode, output, or images that interact.
  """
  hw = tuple(hw or images.shape[1:3])
  check_input_size(model, hw)
  check_eval_mode(model)
  if not isinstance(model, rules.Function):
    return
  num_classes(model, (*hw, images.shape[3]), images.dtype)
  first = images[:1, :hw[0], :hw[1]]
  second = images[1:2, :hw[0], :hw[1]] if len(images) > 1 else first * 0.5 + 0.5
  if bool(jnp.all(second == first)):
    second = first * 0.5 + 0.5
  gap, scale = (float(v) for v in _batch_gap(model, jnp.concatenate([second, first])))
  if gap > 1e-3 * (1.0 + scale):  # batch sizes may change XLA's kernels: round-off is far below this
    raise ValueError('the model\'s scores of an image depend on the other images of its batch (image 0 '
                     f'alone and after another: scores differ by {gap:.3g}, on scores up to {scale:.3g}): a '
                     'BatchNorm on batch statistics or an active dropout? Call the model in inference mode '
                     '(linen: use_running_average=True, deterministic=True, no mutable or dropout rngs; '
                     'NNX / Equinox: model.eval() / inference=True)')


def check_batch(model, images, labels) -> tuple[jax.Array, jax.Array]:
  """Images and labels checked for a model that scores each image's label.

  `check_images`, `check_model` and `check_labels` (one class of the model per image).

  Args:
    model: the model.
    images: float [B, H, W, C].
    labels: int [B].

  Returns:
    (images float [B, H, W, C], labels int32 [B]) as JAX arrays.
  """
  images = check_images(model, images)
  check_model(model, images)
  return images, check_labels(labels, images.shape[0], num_classes(model, images.shape[1:], images.dtype))


def check_classes(model, images, classes, crop_hw=None) -> jax.Array:
  """Classes checked: k class indices per image, each in [0, K) of the model's scores.

  Args:
    model: the model.
    images: float [B, H, W, C].
    classes: int [B, k].
    crop_hw: (h, w) of the crops the model scores, or None for the whole images.

  Returns:
    int32 [B, k].

  Raises:
    ValueError: None, a shape other than [B, k] with k >= 1, or a class outside [0, K).
  """
  if classes is None:
    raise ValueError('classes is None: give k class indices per image, shape [B, k]')
  classes = np.asarray(classes)
  if classes.ndim != 2 or classes.shape[1] == 0:
    raise ValueError(f'classes must be [B, k] class indices, k >= 1, got shape {classes.shape}')
  k_all = num_classes(model, (*(crop_hw or images.shape[1:3]), images.shape[3]), images.dtype)
  return jnp.stack([check_labels(classes[:, j], images.shape[0], k_all, 'classes')
                    for j in range(classes.shape[1])], axis=1)


def is_int(x) -> bool:
  """Whether x is an integer (a Python or NumPy one, not a bool).

  Args:
    x: any value.

  Returns:
    True for an int or NumPy integer that is not a bool.
  """
  return isinstance(x, int | np.integer) and not isinstance(x, bool)


def check_top_k(model, image_shape, k) -> None:
  """Raises unless k is an integer in [1, the model's number of classes].

  Args:
    model: the model.
    image_shape: (h, w, c) of the inputs it scores.
    k: the number of top classes asked for.

  Raises:
    ValueError: k is not an integer in [1, K].
  """
  k_all = num_classes(model, image_shape)
  if not is_int(k) or not 1 <= k <= k_all:
    raise ValueError(f'k must be an integer in [1, {k_all}], got {k!r}')


def crop_shape(crop_size, image_hw) -> tuple[int, int]:
  """`crop_size` as (h, w), checked against the images' (h, w).

  Args:
    crop_size: an int or an (h, w) pair of ints.
    image_hw: (H, W) of the images.

  Returns:
    (h, w) ints.

  Raises:
    ValueError: not an int or a pair of ints, or a crop larger than the images.
  """
  size = (crop_size, crop_size) if is_int(crop_size) else tuple(np.atleast_1d(np.asarray(crop_size, object)))
  if len(size) != 2 or not all(is_int(s) for s in size):
    raise ValueError(f'crop_size must be an int or an (h, w) pair of ints, got {crop_size!r}')
  h, w = size
  if not (0 < h <= image_hw[0] and 0 < w <= image_hw[1]):
    raise ValueError(f'crop_size {crop_size} does not fit images of size {tuple(image_hw)}')
  return int(h), int(w)


# ----------------------------------------------------------------------------- crops


def crop_offsets(image_hw, crop_hw) -> tuple[tuple[int, int], ...]:
  """(top, left) of the 5 crops: top-left, top-right, bottom-left, bottom-right, centre.

  Args:
    image_hw: (H, W) of the image.
    crop_hw: (h, w) of the crops.

  Returns:
    Five (top, left) pairs of ints.
  """
  (h, w), (ch, cw) = image_hw, crop_hw
  return ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2))


def ten_crops(image: jax.Array, crop_hw) -> jax.Array:
  """The 10 crops of an image: the 4 corner crops and the centre crop, then their mirror images.

  Crop i + 5 is crop i reflected left-right (the same region of the image, mirrored).

  Args:
    image: [H, W, C].
    crop_hw: (h, w) of the crops.

  Returns:
    [10, h, w, C].
  """
  ch, cw = crop_hw
  crops = [image[top:top + ch, left:left + cw] for top, left in crop_offsets(image.shape[:2], crop_hw)]
  return jnp.stack(crops + [c[:, ::-1] for c in crops])


def uncrop(maps: jax.Array, image_hw) -> jax.Array:
  """Ten crop maps placed back in the image and averaged per pixel.

  Each map is un-mirrored and placed at its crop's offset; each pixel averages the maps of the crops
  that cover it (PAPER.md Sect. 3); a pixel that no crop covers (possible only when the crop is under
  half the image side) gets 0.

  Args:
    maps: [10, h, w], the maps of `ten_crops`' crops.
    image_hw: (H, W) of the image.

  Returns:
    [H, W].
  """
  ch, cw = maps.shape[1:]
  h, w = image_hw
  maps = jnp.concatenate([maps[:5], maps[5:, :, ::-1]])
  total, count = jnp.zeros((h, w), maps.dtype), jnp.zeros((h, w), maps.dtype)
  for i, (top, left) in enumerate(crop_offsets(image_hw, (ch, cw)) * 2):
    pad = ((top, h - top - ch), (left, w - left - cw))
    total = total + jnp.pad(maps[i], pad)
    count = count + jnp.pad(jnp.ones((ch, cw), maps.dtype), pad)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0)


def place_crops(maps: jax.Array, crop_hw, image_hw) -> jax.Array:
  """One image's maps in image coordinates: the whole image's as they are, the crops' each `uncrop`ped.

  Args:
    maps: [k, n, h, w], k classes; n = 1 (the whole image) when crop_hw is None, else its 10 crops.
    crop_hw: (h, w) of the crops, or None.
    image_hw: (H, W) of the image.

  Returns:
    [k, H, W].
  """
  return maps[:, 0] if crop_hw is None else jax.vmap(uncrop, in_axes=(0, None))(maps, tuple(image_hw))


# ----------------------------------------------------------------------------- jitted cores


def channel_max(grads: jax.Array) -> jax.Array:
  """The paper's map of gradients: max_c |g| (Sect. 3.1); C = 1 gives |g|.

  Args:
    grads: [..., H, W, C].

  Returns:
    [..., H, W].
  """
  return jnp.max(jnp.abs(grads), axis=-1)


def grad_map(grads: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`channel_max(grads)`, and whether every gradient is finite.

  A max may drop a NaN (XLA:CPU), so the check comes before it.

  Args:
    grads: [..., H, W, C].

  Returns:
    (map [..., H, W], bool scalar: every gradient finite).
  """
  return channel_max(grads), jnp.all(jnp.isfinite(grads))


def finite_rows(*arrays) -> jax.Array:
  """Whether row b of every array is free of NaN and inf.

  Args:
    *arrays: arrays [B, ...] with the same B.

  Returns:
    bool [B].
  """
  rows = [jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1) for a in arrays]
  return functools.reduce(jnp.logical_and, rows)


_finite_rows = jax.jit(finite_rows)  # one dispatch for a call's check of its output


def mark_bad(out: jax.Array, ok: jax.Array) -> jax.Array:
  """`out` with NaN in the rows of the images whose scores or gradients were not finite.

  `check_finite` then refuses those rows, naming the images.

  Args:
    out: [B, ...].
    ok: bool [B] (or a scalar): the rows to keep.

  Returns:
    `out`'s shape and dtype.
  """
  ok = jnp.reshape(ok, jnp.shape(ok) + (1,) * (out.ndim - jnp.ndim(ok)))
  return jnp.where(ok, out, jnp.nan)


def check_finite(out, method: str):
  """A method's output, unless some of its images' rows hold NaN or inf.

  Args:
    out: an array [B, ...] or a tuple of them, as a method returns it (`mark_bad` marks bad rows).
    method: the method's name, for the error.

  Returns:
    `out`, unchanged.

  Raises:
    ValueError: naming the images whose scores or gradients were not finite.
  """
  arrays = [a for a in (out if isinstance(out, tuple | list) else (out,))
            if jnp.issubdtype(a.dtype, jnp.floating)]
  if all(map(on_host, arrays)):  # a sum is finite when every value is (else, or on overflow, look closer)
    values = [np.asarray(a) for a in arrays]
    rows = [np.isfinite(v.reshape(len(v), -1)).all(axis=1) for v in values
            if not np.isfinite(np.sum(v))]
    bad = np.flatnonzero(~functools.reduce(np.logical_and, rows)) if rows else []
  else:
    bad = np.flatnonzero(~np.asarray(_finite_rows(*arrays)))
  if len(bad):
    shown = ', '.join(map(str, bad[:8])) + (', ...' if len(bad) > 8 else '')
    raise ValueError(f'{method}: the model\'s scores or their gradients are NaN or infinite for {len(bad)} '
                     f'of {len(arrays[0])} images ({shown}); no map is made from them (check the model\'s '
                     'weights and its input preprocessing)')
  return out


# The compiler options of every saliency program (`xla`: the older fusion emitters; the sequential
# kernels without YNNPACK fusions), kept here under their old names.
COMPILER_OPTIONS = xla.COMPILER_OPTIONS
SEQUENTIAL_OPTIONS = xla.SEQUENTIAL_OPTIONS


def each(fn, arrays, loop: int):
  """`fn` applied to every row of `arrays`: vmapped, or one row after another within groups.

  With loop 0, vmapped; otherwise one row after another (`lax.map`) within each of `loop` equal groups of
  rows, the groups vmapped (the devices' shares of a sharded batch: `parallel.size()`; one group: no
  vmap, so a `lax.cond` in fn runs only the branch each row takes).

  One row at a time keeps the working set of a big net's k backward passes small: on XLA:CPU a
  MobileNet's top-5 10-crop maps at 224 px are faster than vmapped over 8 images (no fresh
  gigabytes of temporaries to fault in at every call, activations that stay in cache), and the same
  maps to float round-off (`SEQUENTIAL_OPTIONS`). On accelerators vmapped batches are faster.

  Args:
    fn: a function of one row of each array.
    arrays: a tuple of arrays [B, ...] (None entries passed on as None).
    loop: 0 (vmap), or the number of groups of rows taken one after another.

  Returns:
    fn's outputs stacked over the B rows.
  """
  if not loop:
    return jax.vmap(fn)(*arrays)
  if loop == 1:
    return jax.lax.map(lambda row: fn(*row), arrays)
  grouped = jax.tree.map(lambda a: a.reshape(loop, a.shape[0] // loop, *a.shape[1:]), arrays)
  out = jax.vmap(lambda group: jax.lax.map(lambda row: fn(*row), group))(grouped)
  return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:]), out)


@functools.partial(jax.jit, static_argnames=('relu',), compiler_options=COMPILER_OPTIONS)
def _forward(model, images, *, relu):
  check_eval_mode(model)
  check_relu(model, images, relu)
  return model(images, relu=relu)


@functools.partial(xla.jit, static_argnames=('relu',))
def _input_gradients(model, images, labels, *, relu):
  check_eval_mode(model)
  check_relu(model, images, relu)
  scores, vjp = jax.vjp(lambda x: model(x, relu=relu), images)
  (grads,) = vjp(jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype))
  return mark_bad(grads, finite_rows(scores, grads))


def class_cotangents(scores, chosen, k: int):
  """One image's chosen classes, their crop-averaged scores, and the cotangents of their backward passes.

  Args:
    scores: [n, K], the scores of the image's n crops.
    chosen: int [k], the classes, or None for the image's k top classes by crop-averaged score.
    k: the number of classes.

  Returns:
    (chosen [k], their crop-averaged scores [k], cotangents [k, n, K]: class j on every crop), for k
    vmapped backward passes.
  """
  mean_scores = scores.mean(axis=0)
  if chosen is None:
    top_scores, chosen = jax.lax.top_k(mean_scores, k)
  else:
    top_scores = mean_scores[chosen]
  cotangents = jnp.broadcast_to(jax.nn.one_hot(chosen, scores.shape[-1], dtype=scores.dtype)[:, None],
                                (k, *scores.shape))
  return chosen, top_scores, cotangents


def _class_maps(model, images, classes, *, relu, crop_hw, k, loop=0):
  """The jitted kernel of `class_saliency` and `top_k_saliency` (no input checks; one chunk).

  Maps for k classes per image, one forward pass and k backward passes.

  images [B, H, W, C]; classes [B, k] int32, or None for each image's top-k classes by
  crop-averaged score. crop_hw None: the whole image; else the 10 crops. loop: 0 vmaps the images
  and the k backward passes; n > 0 takes them one after another (`each`, n groups: the devices).
  Returns (classes [B, k], scores [B, k] crop-averaged, maps [B, k, H, W]).

  Written per image and mapped over the batch, so that the batch axis stays the outermost one of
  every convolution, forward and backward (the k backward passes of an image sit inside it): sharded
  over several devices, each device then computes the maps of its own images only.
  """
  check_eval_mode(model)
  b, h, w, c = images.shape
  n = 1 if crop_hw is None else NUM_CROPS
  check_relu(model, jax.ShapeDtypeStruct((n, *(crop_hw or (h, w)), c), images.dtype), relu)

  def one(image, chosen):
    crops = image[None] if crop_hw is None else ten_crops(image, crop_hw)
    scores, vjp = jax.vjp(lambda x: model(x, relu=relu), crops)
    chosen, top_scores, cotangents = class_cotangents(scores, chosen, k)
    maps, finite = each(lambda cotangent: grad_map(vjp(cotangent)[0]), (cotangents,), min(loop, 1))
    maps = mark_bad(place_crops(maps, crop_hw, (h, w)), jnp.all(jnp.isfinite(scores)) & jnp.all(finite))
    return chosen, top_scores, maps

  return each(one, (images, classes), loop)


_KERNEL_STATIC = ('relu', 'crop_hw', 'k', 'loop')
class_maps_kernel = xla.jit(_class_maps, static_argnames=_KERNEL_STATIC)
sequential_class_maps_kernel = jax.jit(_class_maps, static_argnames=_KERNEL_STATIC,
                                       compiler_options=SEQUENTIAL_OPTIONS)


def pick_kernel(vmapped, sequential_kernel, sequential: bool):
  """The vmapped kernel, or the sequential one with its `loop` bound to the number of devices.

  Args:
    vmapped: the kernel that vmaps over a chunk's images.
    sequential_kernel: the kernel that takes them one after another (`each`), with a `loop` argument.
    sequential: which one.

  Returns:
    The kernel (each device takes its share of the chunk one image after another when sequential).
  """
  return functools.partial(sequential_kernel, loop=parallel.size()) if sequential else vmapped


def _relu(relu):
  """The ReLU to run a model with: `relu`, a callable rule (None: jax.nn.relu)."""
  if relu is None:
    return jax.nn.relu
  if not callable(relu):
    named = f" (deconvnet.RULES[{relu!r}])" if isinstance(relu, str) else ''
    raise ValueError(f'relu must be a ReLU backward rule, a callable such as deconvnet.guided_relu{named}; '
                     f'got {relu!r}')
  return relu


# ----------------------------------------------------------------------------- public API


def scores(model, images, *, relu=None, chunk_size: int | None = None) -> jax.Array:
  """Unnormalised class scores of images (one jitted forward pass per chunk).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    relu: the ReLU to run the model with (default `jax.nn.relu`).
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, K].
  """
  model = rules.as_model(model, images)
  images = check_images(model, images)
  check_model(model, images)
  out = parallel.chunked(functools.partial(_forward, model, relu=_relu(relu)), (images,), chunk_size)
  return check_finite(out, 'scores')


def input_gradients(model, images, labels, *, relu=None, chunk_size: int | None = None) -> jax.Array:
  """dS_label/dI: the gradients of each image's unnormalised score for its label.

  One forward and one backward pass per chunk of `chunk_size` images.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], one class per image.
    relu: the ReLU to run the model with, e.g. a backward rule of `saliency_jax.deconvnet` (default
      `jax.nn.relu`).
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W, C].

  Raises:
    ValueError: bad images, labels or model (`check_batch`), or non-finite scores or gradients.
  """
  model = rules.as_model(model, images)
  images, labels = check_batch(model, images, labels)
  fn = functools.partial(_input_gradients, model, relu=_relu(relu))
  return check_finite(parallel.chunked(fn, (images, labels), chunk_size), 'input gradients')


def saliency_maps(model, images, labels, *, relu=None, chunk_size: int | None = None) -> jax.Array:
  """Class saliency maps: max over channels of |dS_label/dI| (paper Sect. 3.1).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C], preprocessed as the model expects.
    labels: int [B], one class per image.
    relu: the ReLU to run the model with (a backward rule gives the DeconvNet or guided map).
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W].

  Raises:
    ValueError: as `input_gradients`.
  """
  return channel_max(input_gradients(model, images, labels, relu=relu, chunk_size=chunk_size))


def class_saliency(model, images, classes, *, crop_size=None, relu=None, chunk_size: int | None = None,
                   sequential: bool = False) -> tuple[jax.Array, jax.Array]:
  """Scores and saliency maps of given classes of each image, 10-crop averaged with `crop_size`.

  With `crop_size`, each map is the 10-crop average (4 corners + centre and their reflections, one
  vmapped batch) placed back in image coordinates, and each score the 10-crop average score. Per chunk:
  one forward pass and k backward passes.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C].
    classes: int [B, k].
    crop_size: an int or (h, w): the 10 crops' size; None maps the whole images.
    relu: the ReLU to run the model with.
    chunk_size: images per compiled call (default: all at once).
    sequential: the chunk's images, and their k backward passes, one after another inside the compiled
      call (`each`: faster for big nets on CPU; the same maps to float round-off).

  Returns:
    (scores float32 [B, k], maps float32 [B, k, H, W]).

  Raises:
    ValueError: bad images, classes, crop size or model, or non-finite scores or gradients.
  """
  model = rules.as_model(model, images)
  images = check_images(model, images)
  crop_hw = None if crop_size is None else crop_shape(crop_size, images.shape[1:3])
  check_model(model, images, crop_hw)
  classes = check_classes(model, images, classes, crop_hw)
  kernel = pick_kernel(class_maps_kernel, sequential_class_maps_kernel, sequential)
  fn = functools.partial(kernel, model, relu=_relu(relu), crop_hw=crop_hw, k=classes.shape[1])
  _, top_scores, maps = parallel.chunked(fn, (images, classes), chunk_size)
  return top_scores, check_finite(maps, 'class saliency maps')


def top_k_saliency(model, images, *, k: int = 5, crop_size=None, relu=None, chunk_size: int | None = None,
                   sequential: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The paper's protocol: the maps of each image's k top-scoring classes, in one jitted call per chunk.

  Classes are ranked by score (10-crop averaged when `crop_size` is given); one forward pass and k
  backward passes per chunk.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C].
    k: the number of top classes.
    crop_size: an int or (h, w): the 10 crops' size; None maps the whole images.
    relu: the ReLU to run the model with.
    chunk_size: images per compiled call (default: all at once).
    sequential: as `class_saliency` takes it.

  Returns:
    (classes int32 [B, k], scores float32 [B, k], maps float32 [B, k, H, W]), best class first.

  Raises:
    ValueError: bad images, k, crop size or model, or non-finite scores or gradients.
  """
  model = rules.as_model(model, images)
  images = check_images(model, images)
  crop_hw = None if crop_size is None else crop_shape(crop_size, images.shape[1:3])
  check_model(model, images, crop_hw)
  check_top_k(model, (*(crop_hw or images.shape[1:3]), images.shape[3]), k)
  kernel = pick_kernel(class_maps_kernel, sequential_class_maps_kernel, sequential)
  fn = functools.partial(kernel, model, relu=_relu(relu), crop_hw=crop_hw, k=k)
  classes, top_scores, maps = parallel.chunked(lambda x: fn(x, None), (images,), chunk_size)
  return classes, top_scores, check_finite(maps, 'top-k saliency maps')


def ten_crop_saliency(model, image, label, *, crop_size, relu=None) -> jax.Array:
  """One image's 10-crop averaged saliency map for one class.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    image: float [H, W, C].
    label: the class, an int.
    crop_size: an int or (h, w), the crops' size.
    relu: the ReLU to run the model with.

  Returns:
    float32 [H, W].
  """
  model = rules.as_model(model, image[None] if np.ndim(image) == 3 else image)
  image = check_images(model, image, rank=3)
  return ten_crop_saliency_batch(model, image[None], jnp.asarray([label]), crop_size=crop_size,
                                 relu=relu)[0]


def ten_crop_saliency_batch(model, images, labels, *, crop_size, relu=None,
                            chunk_size: int | None = None) -> jax.Array:
  """10-crop averaged saliency maps of images for their labels.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    images: float [B, H, W, C].
    labels: int [B].
    crop_size: an int or (h, w), the crops' size.
    relu: the ReLU to run the model with.
    chunk_size: images per compiled call (default: all at once).

  Returns:
    float32 [B, H, W].

  Raises:
    ValueError: labels that are not [B], or as `class_saliency`.
  """
  model = rules.as_model(model, images)
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be [B] class indices, got shape {labels.shape}')
  _, maps = class_saliency(model, images, labels[:, None], crop_size=crop_size, relu=relu,
                           chunk_size=chunk_size)
  return maps[:, 0]
