"""Training a classifier with optax: cross-entropy on the unnormalised scores, orbax checkpoints.

`train_and_evaluate(config, workdir)` trains the model the config names on the config's data,
checkpoints to `workdir/checkpoints` with orbax every `train.checkpoint_every` steps (and when
interrupted), resumes from the latest checkpoint on the next call, logs to `workdir/train_log.jsonl`,
and evaluates test accuracy. Batch order and augmentation are pure functions of (seed, step) and
the dropout stream is part of the checkpoint, so a resumed run computes the parameters an
uninterrupted one would.

`fit` is the small in-memory loop over arrays (no checkpoints) for notebooks and tests.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from saliency_jax import models, parallel
from saliency_jax.data import transforms


def cross_entropy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of scores [B, K] against integer labels [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()


def augment(key: jax.Array, images: jax.Array, *, max_shift: int = 0, crop: int = 0) -> jax.Array:
  """Random crops of crop x crop px (0: none), left-right flips, shifts by up to max_shift px (edge
  padded) and brightness / contrast jitter of normalised images [B, H, W, C]."""
  k_flip, k_gain, k_bias, k_shift, k_crop = jax.random.split(key, 5)
  if crop:
    b, h, w, c = images.shape
    corners = jax.random.randint(k_crop, (b, 2), 0, jnp.array([h - crop + 1, w - crop + 1]))
    images = jax.vmap(lambda x, s: jax.lax.dynamic_slice(x, (s[0], s[1], 0), (crop, crop, c)))(images, corners)
  b, h, w, _ = images.shape
  flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
  images = jnp.where(flip, images[:, :, ::-1], images)
  if max_shift:
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode='edge')
    shifts = jax.random.randint(k_shift, (b, 2), 0, 2 * max_shift + 1)
    images = jax.vmap(lambda x, s: jax.lax.dynamic_slice(x, (s[0], s[1], 0), (h, w, x.shape[-1])))(padded, shifts)
  gain = jax.random.uniform(k_gain, (b, 1, 1, 1), minval=0.8, maxval=1.2)
  bias = jax.random.uniform(k_bias, (b, 1, 1, 1), minval=-0.2, maxval=0.2)
  return images * gain + bias


@nnx.jit(static_argnames=('max_shift', 'crop'))
def train_step(model, optimizer, key, images, labels, *, max_shift: int = 0, crop: int = 0):
  """One optimiser step on a batch; returns (loss, accuracy) before the step."""
  images = augment(key, images, max_shift=max_shift, crop=crop)

  def loss_fn(model):
    scores = model(images)  # dropout draws from the model's own stream, saved with the checkpoint
    return cross_entropy(scores, labels), scores

  (loss, scores), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  return loss, jnp.mean(jnp.argmax(scores, -1) == labels)


@jax.jit
def _predict(model, images):
  return jnp.argmax(model(images), -1)


def accuracy(model, images, labels, *, batch_size: int = 256, crop: int = 0) -> float:
  """Top-1 accuracy of `model` (inference mode) on normalised images [N, H, W, C] (their centred
  crop x crop px when crop > 0)."""
  model.eval()
  hits = 0
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    (batch,), n = parallel.shard((jnp.asarray(transforms.centre_crop(batch, crop) if crop else batch),))
    pred = np.asarray(_predict(model, batch))[:n]
    hits += int(np.sum(pred == labels[start:start + batch_size]))
  return hits / len(images)


# ----------------------------------------------------------------------------- from a config


def make_model(config, num_classes: int) -> nnx.Module:
  """The model `config.model.name` of `saliency_jax.models`, with the other fields as arguments."""
  kwargs = dict(config.model.to_dict() if hasattr(config.model, 'to_dict') else config.model)
  name = kwargs.pop('name')
  if not hasattr(models, name):
    raise ValueError(f'unknown model {name!r} in config.model.name')
  kwargs = {k: tuple(map(tuple, v)) if k == 'stages' else tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  return getattr(models, name)(num_classes=num_classes, **kwargs, rngs=nnx.Rngs(config.seed))


def make_schedule(t) -> optax.Schedule:
  """config.train: schedule 'cosine' (after `warmup_steps` of linear warm-up), 'step' (x0.1 at 50% and
  75% of the steps) or 'constant'."""
  if t.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1))
  if t.schedule == 'step':
    return optax.piecewise_constant_schedule(t.learning_rate, {t.steps // 2: 0.1, 3 * t.steps // 4: 0.1})
  if t.schedule == 'constant':
    return optax.constant_schedule(t.learning_rate)
  raise ValueError(f"config.train.schedule must be 'cosine', 'step' or 'constant', got {t.schedule!r}")


def make_optimizer(t) -> optax.GradientTransformation:
  """config.train: optimizer 'adamw' or 'sgd' (momentum, decoupled weight decay as in the paper's SGD)."""
  schedule = make_schedule(t)
  if t.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=t.weight_decay)
  if t.optimizer == 'sgd':
    return optax.chain(optax.add_decayed_weights(t.weight_decay), optax.sgd(schedule, momentum=t.momentum))
  raise ValueError(f"config.train.optimizer must be 'adamw' or 'sgd', got {t.optimizer!r}")


def _saveable(tree):
  """Typed PRNG keys (dropout streams) as raw uint32 data, which orbax can write."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                      tree)


def _restore_into(target, restored):
  return jax.tree.map(lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
                      if jnp.issubdtype(t.dtype, jax.dtypes.prng_key) else jnp.asarray(r, t.dtype), target, restored)


def _state(model, optimizer) -> dict:
  return {'model': nnx.to_pure_dict(nnx.state(model)), 'optimizer': nnx.to_pure_dict(nnx.state(optimizer))}


def _load_state(model, optimizer, pure: dict) -> None:
  for obj, part in ((model, 'model'), (optimizer, 'optimizer')):
    state = nnx.state(obj)
    nnx.replace_by_pure_dict(state, pure[part])
    nnx.update(obj, state)


def train_and_evaluate(config, workdir, data: dict, *, progress: bool = True, stop_at: int | None = None):
  """Trains (or resumes) the config's model on data['train'], evaluates on data['test'].

  data: {'train': {'images' float32 [N, H, W, C] normalised, 'labels' [N]} or a
  `transforms.Streamed` (read on demand), 'test': arrays as for train}.
  config: seed, model (name + arguments), train (optimizer, learning_rate, momentum, weight_decay,
  schedule, warmup_steps, steps, batch_size, max_shift, crop (random crops of that size in training,
  the centred one for evaluation; 0: whole images), checkpoint_every, log_every), num_classes.
  stop_at: end after that step, checkpointed, as an interruption would (tests; chunked runs).
  Returns (model in inference mode, {'test_accuracy', 'steps', 'resumed_from', 'final_loss'}).
  """
  t = config.train
  workdir = pathlib.Path(workdir)
  model = make_model(config, config.num_classes)
  optimizer = nnx.Optimizer(model, make_optimizer(t), wrt=nnx.Param)
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
  start = 0
  with ocp.CheckpointManager((workdir / 'checkpoints').absolute(), options=options) as manager:
    latest = manager.latest_step()
    if latest is not None:
      target = _saveable(_state(model, optimizer))
      restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
      _load_state(model, optimizer, _restore_into(_state(model, optimizer), restored))
      start = latest
    end = t.steps if stop_at is None else min(stop_at, t.steps)
    if jax.process_count() > 1 and start < end:
      raise ValueError(f'training is not distributed over processes: train with one process first (the same '
                       f'workdir; {workdir / "checkpoints"} holds step {start} of {end}), then every process '
                       f'restores the finished checkpoint')
    if t.batch_size % parallel.size():
      raise ValueError(f'train.batch_size {t.batch_size} must be a multiple of the number of devices, '
                       f'{parallel.size()} (the batch is sharded over them)')
    parallel.replicate(model)
    parallel.replicate(optimizer)
    train = data['train']
    if isinstance(train, dict):
      num, fetch = len(train['labels']), lambda idx: (train['images'][idx], train['labels'][idx])
    else:  # transforms.Streamed
      num, fetch = len(train), train.__getitem__
    key = jax.random.key(config.seed)
    log_path = workdir / 'train_log.jsonl'
    losses = []
    model.train()
    step = start
    bar = tqdm(total=t.steps, initial=start, desc='train', disable=not progress, mininterval=2.0)
    try:
      with log_path.open('a') as log:
        for step in range(start, end):
          images, labels = fetch(transforms.batch_indices(num, t.batch_size, step, config.seed))
          (images, labels), _ = parallel.shard((jnp.asarray(images), jnp.asarray(labels)))
          loss, acc = train_step(model, optimizer, jax.random.fold_in(key, step), images, labels,
                                 max_shift=t.max_shift, crop=t.get('crop', 0))
          losses.append(float(loss))
          bar.update()
          if (step + 1) % t.log_every == 0 or step + 1 == end:
            log.write(json.dumps({'step': step + 1, 'loss': float(loss), 'batch_accuracy': float(acc)}) + '\n')
            log.flush()
            bar.set_postfix(loss=f'{np.mean(losses[-t.log_every:]):.3f}')
          if (step + 1) % t.checkpoint_every == 0 and step + 1 < end:
            manager.save(step + 1, args=ocp.args.StandardSave(_saveable(_state(model, optimizer))))
        step = end
    finally:  # an interruption keeps the finished steps
      bar.close()
      if step > (manager.latest_step() or 0):
        manager.save(step, args=ocp.args.StandardSave(_saveable(_state(model, optimizer))), force=True)
      manager.wait_until_finished()
  model.eval()
  result = {'steps': int(step), 'resumed_from': int(start),
            'final_loss': float(np.mean(losses[-50:])) if losses else None}
  if step == t.steps:
    result['test_accuracy'] = accuracy(model, data['test']['images'], data['test']['labels'], crop=t.get('crop', 0))
  return model, result


def fit(model, images: np.ndarray, labels: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
        weight_decay: float, seed: int, progress: bool = True) -> list[dict]:
  """Trains `model` in place with AdamW and a cosine schedule; returns the per-step log.

  images: normalised float32 [N, H, W, C]; labels int [N]. Batches come from
  `transforms.batch_indices`, keys from `jax.random.key(seed)`.
  """
  optimizer = nnx.Optimizer(model, optax.adamw(optax.cosine_decay_schedule(learning_rate, steps),
                                               weight_decay=weight_decay), wrt=nnx.Param)
  key = jax.random.key(seed)
  model.train()
  log = []
  for step in tqdm(range(steps), desc='train', disable=not progress, mininterval=2.0):
    idx = transforms.batch_indices(len(images), batch_size, step, seed)
    loss, acc = train_step(model, optimizer, jax.random.fold_in(key, step), jnp.asarray(images[idx]),
                           jnp.asarray(labels[idx]))
    log.append({'step': step, 'loss': float(loss), 'accuracy': float(acc)})
  model.eval()
  return log
