"""Class model visualisation (paper Sect. 2): the image that maximises a class score.

    I*_c = argmax_I  S_c(I) - l2_weight * ||I||_2^2

found by gradient ascent on the input with the weights fixed, from the zero image (the nets are
trained on zero-centred data; add the training mean back to display). S_c is the unnormalised
score; `objective='softmax'` ascends log softmax_c instead, which the paper avoided because it can
rise by pushing the other classes down. All classes are optimised at once (vmap) in one jitted
`lax.scan`; the model is an argument, not a closure.

The paper leaves open lambda, the step size, the number of steps and the optimiser: they are
keyword settings here. The defaults (Adam, learning rate 0.1, lambda 0.3, 300 steps) were chosen
on the quickstart net (64 px, zero-centred inputs). lambda sets the scale of the result: a ReLU
net's scores grow about linearly with the image's scale, so a smaller lambda lets the norm grow.
For other nets, lambda ~ S / (2 ||I||^2), with S a typical class score and ||I|| a typical input
norm, keeps the class models near the scale of real inputs. What the defaults give on the
quickstart net: docs/results/quickstart.md.

Extras beyond the paper, all off by default: random jitter (a roll of up to `jitter` px before
each step), Gaussian blur every `blur_every` steps, a total-variation penalty `tv_weight`.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from saliency_jax import parallel, rules, saliency
from saliency_jax.filters import gaussian_blur

OBJECTIVES = ('score', 'softmax')
BLOCK = 25  # steps per jitted call when `visualise` reports progress
OPTIMIZERS = ('sgd', 'adam')


class Result(NamedTuple):
  """Class models with their optimisation history (`visualise(..., return_history=True)`).

  Attributes:
    images: [K, H, W, C], model input space.
    objective: [K, steps], the objective at each step.
    scores: [K, steps], the class score at each step.
  """
  images: jax.Array  # [K, H, W, C]
  objective: jax.Array  # [K, steps]: the maximised objective before each step
  scores: jax.Array  # [K, steps]: S_c (or log softmax_c) before each step


def total_variation(x: jax.Array) -> jax.Array:
  """Sum of squared differences between neighbouring pixels of one image.

  Args:
    x: [H, W, C].

  Returns:
    A scalar.
  """
  return jnp.sum(jnp.diff(x, axis=0) ** 2) + jnp.sum(jnp.diff(x, axis=1) ** 2)


@functools.partial(jax.jit, static_argnames=('steps', 'optimizer', 'objective', 'jitter', 'blur_every',
                                             'blur_sigma'))
def _ascend(model, x0, opt_state, first, classes, key, learning_rate, momentum, l2_weight, tv_weight, *,
            blur_sigma, steps, optimizer, objective, jitter, blur_every):
  """Steps first .. first + steps - 1 of the ascent from x0 (and opt_state; None: a fresh optimizer)."""
  tx = optax.sgd(learning_rate, momentum=momentum) if optimizer == 'sgd' else optax.adam(learning_rate)

  def value(x, c):
    s = model(x[None])[0]
    target = s[c] if objective == 'score' else jax.nn.log_softmax(s)[c]
    return target - l2_weight * jnp.sum(x ** 2) - tv_weight * total_variation(x), target

  def step(carry, i):
    x, opt_state = carry
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(key, i), j))(jnp.arange(x.shape[0]))
    # per class: any padding
    shifts = jax.vmap(lambda k: jax.random.randint(k, (2,), -jitter, jitter + 1))(keys)
    roll = jax.vmap(lambda im, s: jnp.roll(im, (s[0], s[1]), axis=(0, 1)))
    (obj, target), g = jax.vmap(jax.value_and_grad(value, has_aux=True))(roll(x, shifts), classes)
    g = roll(g, -shifts)
    updates, opt_state = tx.update(-g, opt_state, x)  # optax minimises: ascend the objective
    x = optax.apply_updates(x, updates)
    if blur_every:
      x = jax.lax.cond((i + 1) % blur_every == 0, jax.vmap(lambda im: gaussian_blur(im, blur_sigma)),
                       lambda im: im, x)
    return (x, opt_state), (obj, target)

  start = tx.init(x0) if opt_state is None else opt_state
  (x, opt_state), (objectives, targets) = jax.lax.scan(step, (x0, start), first + jnp.arange(steps))
  return Result(x, objectives.T, targets.T), opt_state


def visualise(model, classes, *, image_shape, l2_weight: float = 0.3, steps: int = 300,
              learning_rate: float = 0.1, optimizer: str = 'adam', momentum: float = 0.9,
              objective: str = 'score', jitter: int = 0,
              blur_every: int = 0, blur_sigma: float = 0.5, tv_weight: float = 0.0, init_scale: float = 0.0,
              seed: int = 0,
              return_history: bool = False, progress=None):
  """Class model images: gradient ascent on the input of S_c(I) - l2_weight ||I||^2 (paper Sect. 2).

  All classes at once (vmap) in one jitted `lax.scan`; see the module docstring for the settings the paper
  leaves open and the defaults chosen here.

  Args:
    model: the model (any JAX callable `f(x) -> scores [B, K]`).
    classes: int [K], the classes.
    image_shape: (H, W, C).
    l2_weight: lambda, the weight of the squared L2 norm.
    steps: the number of ascent steps.
    learning_rate: the step size.
    optimizer: 'sgd' (with `momentum`) or 'adam'.
    momentum: SGD's momentum.
    objective: 'score' (the unnormalised score, the paper's) or 'softmax' (log softmax of the class).
    jitter: a random roll of up to this many pixels before each step (0: none).
    blur_every: a Gaussian blur of std `blur_sigma` every this many steps (0: none).
    blur_sigma: the blur's std in pixels.
    tv_weight: the weight of a total-variation penalty (0: none).
    init_scale: 0 starts from the zero image (the paper); > 0 from Gaussian noise of that scale (a net
      with zero biases, e.g. freshly initialised, has every ReLU at exactly 0 on the zero image and so a
      zero gradient; and on the zero image every max-pool window is a tie).
    seed: the seed of the noise and the jitter.
    return_history: also return the objective and score at each step.
    progress: a callable given the number of steps done after each block of `BLOCK` steps (e.g. a tqdm
      bar's update); the ascent is then one jitted scan per block, with the same result.

  Returns:
    [K, H, W, C] images in model input space, or with return_history a `Result`.

  Raises:
    ValueError: an unknown objective or optimizer, negative settings, a bad image shape or classes.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f'objective must be one of {OBJECTIVES}, got {objective!r}')
  if optimizer not in OPTIMIZERS:
    raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {optimizer!r}')
  if steps < 1 or jitter < 0 or blur_every < 0 or l2_weight < 0 or tv_weight < 0:
    raise ValueError(f'need steps >= 1 and jitter, blur_every, l2_weight, tv_weight >= 0; '
                     f'got steps {steps}, jitter {jitter}, blur_every {blur_every}, l2_weight {l2_weight}, '
                     f'tv_weight {tv_weight}')
  if len(image_shape) != 3:
    raise ValueError(f'image_shape must be (H, W, C), got {image_shape}')
  classes = jnp.asarray(classes, jnp.int32).reshape(-1)
  model = rules.as_model(model, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  saliency.check_eval_mode(model)
  num_classes = jax.eval_shape(lambda x: model(x),
                               jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)).shape[-1]
  if classes.size == 0 or int(classes.min()) < 0 or int(classes.max()) >= num_classes:
    raise ValueError(f'classes must be in [0, {num_classes}), got {classes.tolist()}')
  x0 = init_scale * jax.random.normal(jax.random.key(seed + 1), (classes.shape[0], *image_shape), jnp.float32)
  (x0, classes), k = parallel.shard((x0, classes))  # the classes over the devices
  settings = dict(blur_sigma=float(blur_sigma), optimizer=optimizer, objective=objective, jitter=jitter,
                  blur_every=blur_every)
  args = (classes, jax.random.key(seed), learning_rate, momentum, l2_weight, tv_weight)
  blocks = [(0, steps)] if progress is None else [(a, min(BLOCK, steps - a)) for a in range(0, steps, BLOCK)]
  x, opt_state, parts = x0, None, []
  for first, size in blocks:
    part, opt_state = _ascend(model, x, opt_state, first, *args, steps=size, **settings)
    x = part.images
    parts.append(part)
    if progress is not None:
      progress(size)
  result = parts[0] if len(parts) == 1 else Result(
      x, *(jnp.concatenate([getattr(p, f) for p in parts], axis=1) for f in ('objective', 'scores')))
  if x0.shape[0] != k:
    result = Result(*parallel.unshard(tuple(result), k))
  return result if return_history else result.images


def for_display(images, mean, std=(1.0, 1.0, 1.0)):
  """Model-space images as uint8 for display.

  Un-normalised (x * std + mean, the training mean added back as in the paper), then each image
  stretched to [0, 255] around its mean.

  Args:
    images: [K, H, W, 3], model input space.
    mean: the per-channel mean of the normalisation.
    std: the per-channel std of the normalisation.

  Returns:
    uint8 [K, H, W, 3].
  """
  x = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  centre = x.mean(axis=(1, 2, 3), keepdims=True)
  spread = np.abs(x - centre).max(axis=(1, 2, 3), keepdims=True)
  return np.clip(127.5 + 127.5 * (x - centre) / np.maximum(spread, 1e-12), 0, 255).round().astype(np.uint8)
