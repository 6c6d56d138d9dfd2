"""Training a classifier with optax: cross-entropy on the unnormalised scores.

`fit` is the small in-memory loop the demo uses (arrays in, trained model out); every setting
is keyword-only and comes from the caller's config.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm


def cross_entropy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of scores [B, K] against integer labels [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()


def augment(key: jax.Array, images: jax.Array) -> jax.Array:
  """Random left-right flips and brightness / contrast jitter of normalised images [B, H, W, C]."""
  k_flip, k_gain, k_bias = jax.random.split(key, 3)
  b = images.shape[0]
  flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
  images = jnp.where(flip, images[:, :, ::-1], images)
  gain = jax.random.uniform(k_gain, (b, 1, 1, 1), minval=0.8, maxval=1.2)
  bias = jax.random.uniform(k_bias, (b, 1, 1, 1), minval=-0.2, maxval=0.2)
  return images * gain + bias


@nnx.jit
def train_step(model, optimizer, key, images, labels):
  """One optimiser step on a batch; returns (loss, accuracy) before the step."""
  images = augment(key, images)

  def loss_fn(model):
    scores = model(images)
    return cross_entropy(scores, labels), scores

  (loss, scores), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  return loss, jnp.mean(jnp.argmax(scores, -1) == labels)


@jax.jit
def _predict(model, images):
  return jnp.argmax(model(images), -1)


def accuracy(model, images, labels, *, batch_size: int = 256) -> float:
  """Top-1 accuracy of `model` (inference mode) on normalised images [N, H, W, C]."""
  model.eval()
  hits = 0
  for start in range(0, len(images), batch_size):
    pred = _predict(model, jnp.asarray(images[start:start + batch_size]))
    hits += int(np.sum(np.asarray(pred) == labels[start:start + batch_size]))
  return hits / len(images)


def fit(model, images: np.ndarray, labels: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
        weight_decay: float, seed: int, progress: bool = True) -> list[dict]:
  """Trains `model` in place with AdamW and a cosine schedule; returns the per-step log.

  images: normalised float32 [N, H, W, C]; labels int [N]. Batches are drawn without
  replacement from a permutation renewed each epoch, all from `jax.random.key(seed)`.
  """
  if len(images) < batch_size:
    raise ValueError(f'batch_size {batch_size} is larger than the {len(images)} training images')
  schedule = optax.cosine_decay_schedule(learning_rate, steps)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=weight_decay), wrt=nnx.Param)
  key = jax.random.key(seed)
  model.train()
  log, order, pos = [], np.array([], int), 0
  for step in tqdm(range(steps), desc='train', disable=not progress, mininterval=2.0):
    if pos + batch_size > len(order):
      key, k_perm = jax.random.split(key)
      order, pos = np.asarray(jax.random.permutation(k_perm, len(images))), 0
    idx = order[pos:pos + batch_size]
    pos += batch_size
    key, k_step = jax.random.split(key)
    loss, acc = train_step(model, optimizer, k_step, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
    log.append({'step': step, 'loss': float(loss), 'accuracy': float(acc)})
  model.eval()
  return log
