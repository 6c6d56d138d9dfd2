"""Training a classifier with optax: cross-entropy on the unnormalised scores, orbax checkpoints.

`train_and_evaluate(config, workdir)` trains the model the config names on the config's data,
checkpoints to `workdir/checkpoints` with orbax every `train.checkpoint_every` steps (and when
interrupted), resumes from the latest checkpoint on the next call, logs to `workdir/train_log.jsonl`,
and evaluates test accuracy. Batch order and augmentation are pure functions of (seed, step) and
the dropout stream and the recent losses are part of the checkpoint, so a resumed run computes the
parameters (and the final loss) an uninterrupted one would.

A workdir's checkpoints are never reused under another config: `workdir/checkpoints/fingerprint.json`
records the settings that determine the weights (`fingerprint`), and a run whose settings differ stops
before it does anything, naming each difference (`check_fingerprint`). SIGINT and SIGTERM during
training stop the loop at a step boundary: the checkpoint then holds exactly the steps applied, and
the job exits (KeyboardInterrupt, or exit status 143 for SIGTERM) saying how to resume.

Several processes (`parallel.initialize`, i.e. `jax.distributed`: the hosts of a pod slice or a GPU
cluster, or processes on one machine): one global mesh over all their devices; every global batch is
the one `transforms.batch_indices` gives for the step, each process reading only its rows of it and
putting them on the mesh with `jax.make_array_from_process_local_data`; parameters and optimizer state
are replicated on every device; every process saves and restores the orbax checkpoints together. So P
processes train on exactly the batches one process would, and reach its weights to float round-off
(the gradient's sum over devices is ordered differently). The batcher is this package's and not
grain's: its whole iterator state is the step (already in the checkpoint), and the global batch is
the same for any process count, whereas grain's samplers give each process its own shard of the
records to sample from (a different global batch for every process count). Streamed sets
(`transforms.Streamed`) read on a thread pool, where grain would use worker processes.

`fit` is the small in-memory loop over arrays (no checkpoints) for notebooks and tests.
"""

import contextlib
import json
import pathlib
import signal
import sys
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from saliency_jax import models, parallel, store
from saliency_jax.data import transforms
from saliency_jax.errors import UserError


def cross_entropy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of scores against integer labels.

  Args:
    scores: [B, K].
    labels: int [B].

  Returns:
    A scalar.
  """
  return optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()


def augment(key: jax.Array, images: jax.Array, *, max_shift: int = 0, crop: int = 0) -> jax.Array:
  """Training augmentation of normalised images: random crops, flips, shifts and brightness / contrast jitter.

  Args:
    key: a JAX random key.
    images: [B, H, W, C], normalised.
    max_shift: shifts by up to this many pixels (edge padded; 0: none).
    crop: random crops of crop x crop pixels (0: none).

  Returns:
    [B, H, W, C], or [B, crop, crop, C].
  """
  k_flip, k_gain, k_bias, k_shift, k_crop = jax.random.split(key, 5)
  if crop:
    b, h, w, c = images.shape
    corners = jax.random.randint(k_crop, (b, 2), 0, jnp.array([h - crop + 1, w - crop + 1]))
    def cut(x, s):
      return jax.lax.dynamic_slice(x, (s[0], s[1], 0), (crop, crop, c))
    images = jax.vmap(cut)(images, corners)
  b, h, w, _ = images.shape
  flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
  images = jnp.where(flip, images[:, :, ::-1], images)
  if max_shift:
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode='edge')
    shifts = jax.random.randint(k_shift, (b, 2), 0, 2 * max_shift + 1)
    def shift(x, s):
      return jax.lax.dynamic_slice(x, (s[0], s[1], 0), (h, w, x.shape[-1]))
    images = jax.vmap(shift)(padded, shifts)
  gain = jax.random.uniform(k_gain, (b, 1, 1, 1), minval=0.8, maxval=1.2)
  bias = jax.random.uniform(k_bias, (b, 1, 1, 1), minval=-0.2, maxval=0.2)
  return images * gain + bias


@nnx.jit(static_argnames=('max_shift', 'crop'))
def train_step(model, optimizer, key, images, labels, *, max_shift: int = 0, crop: int = 0):
  """One optimiser step on a batch (jitted; the model and optimizer are updated in place).

  Args:
    model: the NNX model, in training mode.
    optimizer: its `nnx.Optimizer`.
    key: a JAX random key for the augmentation.
    images: [B, H, W, C], normalised.
    labels: int [B].
    max_shift: as `augment` takes it.
    crop: as `augment` takes it.

  Returns:
    (loss, accuracy) of the batch before the step.
  """
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


def hits(model, images, labels, *, batch_size: int = 256, crop: int = 0) -> int:
  """How many images a model classifies right (top-1).

  Args:
    model: the model, in inference mode.
    images: [N, H, W, C], normalised.
    labels: int [N].
    batch_size: images per call.
    crop: score the centred crop x crop pixels when > 0.

  Returns:
    The count, an int.
  """
  model.eval()
  count = 0
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    (batch,), n = parallel.shard((jnp.asarray(transforms.centre_crop(batch, crop) if crop else batch),))
    pred = np.asarray(_predict(model, batch))[:n]
    count += int(np.sum(pred == labels[start:start + batch_size]))
  return count


def accuracy(model, images, labels, *, batch_size: int = 256, crop: int = 0) -> float:
  """Top-1 accuracy (`hits` / N).

  Args:
    model: the model, in inference mode.
    images: [N, H, W, C], normalised.
    labels: int [N].
    batch_size: images per call.
    crop: as `hits` takes it.

  Returns:
    A float in [0, 1].
  """
  return hits(model, images, labels, batch_size=batch_size, crop=crop) / len(images)


# ----------------------------------------------------------------------------- from a config


def make_model(config, num_classes: int) -> nnx.Module:
  """The model `config.model.name` of `saliency_jax.models`, with the other fields as arguments.

  Args:
    config: the job's config (model, seed).
    num_classes: K.

  Returns:
    The NNX model.

  Raises:
    ValueError: an unknown model name.
  """
  kwargs = dict(config.model.to_dict() if hasattr(config.model, 'to_dict') else config.model)
  name = kwargs.pop('name')
  if not hasattr(models, name):
    raise ValueError(f'unknown model {name!r} in config.model.name')
  kwargs = {k: tuple(map(tuple, v)) if k == 'stages' else tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  return getattr(models, name)(num_classes=num_classes, **kwargs, rngs=nnx.Rngs(config.seed))


def make_schedule(t) -> optax.Schedule:
  """The learning-rate schedule of config.train.

  'cosine' (after `warmup_steps` of linear warm-up), 'step' (x0.1 at 50% and 75% of the steps) or
  'constant'.

  Args:
    t: config.train.

  Returns:
    An optax schedule.

  Raises:
    ValueError: an unknown schedule.
  """
  if t.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps,
                                              max(t.steps, t.warmup_steps + 1))
  if t.schedule == 'step':
    return optax.piecewise_constant_schedule(t.learning_rate, {t.steps // 2: 0.1, 3 * t.steps // 4: 0.1})
  if t.schedule == 'constant':
    return optax.constant_schedule(t.learning_rate)
  raise ValueError(f"config.train.schedule must be 'cosine', 'step' or 'constant', got {t.schedule!r}")


def make_optimizer(t) -> optax.GradientTransformation:
  """The optimiser of config.train: 'adamw' or 'sgd' (momentum, decoupled weight decay as the paper's SGD).

  Args:
    t: config.train.

  Returns:
    An optax gradient transformation.

  Raises:
    ValueError: an unknown optimizer.
  """
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
                      if jnp.issubdtype(t.dtype, jax.dtypes.prng_key) else jnp.asarray(r, t.dtype),
                      target, restored)


def _state(model, optimizer) -> dict:
  return {'model': nnx.to_pure_dict(nnx.state(model)), 'optimizer': nnx.to_pure_dict(nnx.state(optimizer))}


def _load_state(model, optimizer, pure: dict) -> None:
  for obj, part in ((model, 'model'), (optimizer, 'optimizer')):
    state = nnx.state(obj)
    nnx.replace_by_pure_dict(state, pure[part])
    nnx.update(obj, state)


# ----------------------------------------------------------------------------- a workdir's config


FINGERPRINT = 'fingerprint.json'  # in workdir/checkpoints, beside the orbax steps
# Settings that do not change the weights: where the data lies, whether it is read on demand
# (streamed batches equal loaded ones), which test records are evaluated (`data.splits`; the synthetic
# set's test and validation images are drawn apart from its training images), how often to log and
# checkpoint.
_NOT_WEIGHTS = {'data': ('data_dir', 'boxes_dir', 'stream', 'part', 'part_seed', 'selection_fraction',
                         'num_validation', 'num_test'),
                'train': ('log_every', 'checkpoint_every')}


def _as_dict(section) -> dict:
  return dict(section.to_dict() if hasattr(section, 'to_dict') else section)


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def fingerprint(config) -> dict:
  """The settings that determine the trained weights: {'seed': 0, 'train.learning_rate': 0.003, ...}.

  config.seed, num_classes, model, data and train (JSON values: tuples as lists), less the settings of
  `_NOT_WEIGHTS`. Everything else (localisation, figures, num_eval, workers) may change freely.

  Args:
    config: the job's config.

  Returns:
    {dotted key: value}.
  """
  tree = {'seed': config.seed, 'num_classes': config.num_classes}
  for part in ('model', 'data', 'train'):
    if config.get(part) is not None:
      tree[part] = {k: v for k, v in _as_dict(config[part]).items() if k not in _NOT_WEIGHTS.get(part, ())}
  return _flat(json.loads(json.dumps(tree, default=str)))


def _has_steps(directory: pathlib.Path) -> bool:
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_fingerprint(config, workdir) -> None:
  """Raises when the workdir's checkpoints were trained under other settings than the config's.

  Args:
    config: the job's config (`fingerprint`).
    workdir: the job's workdir (its checkpoints/fingerprint.json).

  Raises:
    UserError: naming each differing key with its old and new value, or a damaged fingerprint file.
  """
  directory = pathlib.Path(workdir) / 'checkpoints'
  path = directory / FINGERPRINT
  if not (path.is_file() and _has_steps(directory)):
    return
  ignored = {f'{part}.{key}' for part, keys in _NOT_WEIGHTS.items() for key in keys}
  # older versions kept more settings
  try:
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ignored}
  except (OSError, ValueError, AttributeError) as e:
    raise UserError(f'{path} is damaged ({type(e).__name__}): it records the settings the checkpoints '
                    f'beside it were trained under; restore it, or delete {directory} to train '
                    'again') from None
  new = fingerprint(config)
  absent = '(absent)'
  changed = [f'{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}' for k in sorted(old.keys() | new.keys())
             if old.get(k, absent) != new.get(k, absent)]
  if changed:
    log = directory.parent / 'train_log.jsonl'
    raise UserError(f'{directory} holds a model trained under another config ({"; ".join(changed)}): use '
                    f'another --workdir (or delete {directory} and {log} to retrain here)')


def _write_fingerprint(config, directory: pathlib.Path) -> None:
  path = directory / FINGERPRINT
  if path.is_file() and _has_steps(directory):
    return  # `check_fingerprint` passed: the same settings
  if not path.is_file() and _has_steps(directory):
    warnings.warn(f'{directory} has no {FINGERPRINT} (written by an older version): assuming its checkpoints '
                  'were trained under this config', stacklevel=3)
  store.write_atomic(path, json.dumps(fingerprint(config), indent=2, sort_keys=True) + '\n')


def _shapes(tree) -> dict:
  """{'model/convs/0/kernel': shape, ...} of the arrays of a pytree (or of orbax's metadata of one)."""
  def name(k):
    return str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k))))
  return {'/'.join(map(name, path)): tuple(getattr(x, 'shape', ())) for path, x in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_architecture(saved, target: dict, where: pathlib.Path) -> None:
  """Raises ValueError when a checkpoint's arrays do not fit this config's model and optimizer.

  Names the first differences, from orbax's metadata (orbax's own error would only suggest
  `strict=False`).
  """
  have = {k: v for k, v in _shapes(saved).items() if k.startswith(('model/', 'optimizer/'))}
  want = _shapes(target)
  def show(shapes, k):
    return f'shape {shapes[k]}' if k in shapes else 'absent'
  diff = [k for k in sorted(have.keys() | want.keys()) if have.get(k) != want.get(k)]
  if not diff:
    return
  model = any(k.startswith('model/') for k in diff)
  what = 'another architecture than config.model' if model else 'another optimizer than config.train'
  first = '; '.join(f'{k}: {show(have, k)} there, {show(want, k)} here' for k in diff[:3])
  raise UserError(f'{where} holds a checkpoint of {what} ({len(diff)} arrays differ, first {first}): use '
                  f'another --workdir')


def check_labels(labels, num_classes: int, class_names=()) -> None:
  """Raises unless the training labels lie in [0, num_classes) and every class has an example.

  A label outside makes the cross-entropy NaN; a class without examples (an empty class folder) gives a
  net that never predicts it, and a one-class net a test accuracy of 1.

  Args:
    labels: int [N].
    num_classes: K.
    class_names: the classes' names, for the error.

  Raises:
    UserError: labels outside [0, K), or classes without an example.
  """
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise UserError(f'config.num_classes is {num_classes}, but the training labels run from {labels.min()} '
                    f'to {labels.max()}: set num_classes to the number of classes of the data '
                    f'({labels.max() + 1}?)')
  missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
  if missing:
    names = [f'{c} ({class_names[c]})' if c < len(class_names) else str(c) for c in missing[:10]]
    raise UserError(f'{len(missing)} of the {num_classes} classes have no training example: '
                    f'{", ".join(names)} (an empty class folder, or config.num_classes larger than the '
                    'data\'s classes?)')


def diverged(loss: float, step: int, t) -> UserError:
  """The error for a loss that is not finite, naming the likely setting.

  Args:
    loss: the loss.
    step: the step it was reached at.
    t: config.train.

  Returns:
    A `UserError`.
  """
  rate = t.learning_rate
  hint = ('config.train.learning_rate is not a finite number' if not np.isfinite(rate) else
          f'config.train.learning_rate {rate:g} too large for config.train.optimizer {t.optimizer!r}?')
  return UserError(f'training diverged: the loss is {loss} at step {step + 1}, so every later step and the '
                   f'evaluation would be meaningless; {hint} The checkpoints before the step are kept: use '
                   'another --workdir with corrected settings')


def _restore(manager, step: int, model, optimizer, directory: pathlib.Path) -> list[float]:
  """Loads checkpoint `step` into model and optimizer; returns the losses kept with it."""
  target = _saveable(_state(model, optimizer))
  saved = manager.item_metadata(step)  # the arrays' names and shapes (None: not recorded)
  if saved is not None:
    _check_architecture(saved, target, directory / str(step))
    if 'losses' in saved:  # checkpoints of older versions hold no losses
      target['losses'] = np.zeros(saved['losses'].shape, np.float32)
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  losses = [float(x) for x in np.asarray(restored.pop('losses', []))]
  _load_state(model, optimizer, _restore_into(_state(model, optimizer), restored))
  return losses


def _set_aside(manager, directory: pathlib.Path, step: int, error: Exception) -> None:
  """A damaged checkpoint step, renamed out of the way so that training resumes from the step before.

  Kept for inspection; training resumes from the step before it (or from the start); said on stderr. With
  several processes, an error instead.
  """
  what = f'{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ""}'
  if jax.process_count() > 1:
    raise UserError(f'checkpoint step {step} in {directory} is damaged ({what}): move '
                    f'{directory / str(step)} away and rerun, to resume from the step before it') from None
  aside = directory / f'damaged-step-{step}'
  while aside.exists():
    aside = aside.with_name(aside.name + '-again')
  (directory / str(step)).rename(aside)
  manager.reload()
  before = max((s for s in manager.all_steps() if s < step), default=None)
  resume = (f'resuming from step {before}' if before is not None
            else 'no intact step is left: training from the start')
  print(f'checkpoint step {step} in {directory} is damaged ({what}); moved to {aside.name}, {resume}',
        file=sys.stderr)


def _keep_log(path: pathlib.Path, step: int) -> None:
  """Drops the records of train_log.jsonl after `step`, so that a resumed run logs each step once.

  `step` is the restored checkpoint's; a line cut short by a kill goes too.
  """
  if not path.is_file():
    return
  lines = path.read_text().splitlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      continue
  if len(kept) < len(lines):
    store.write_atomic(path, ''.join(line + '\n' for line in kept))


@contextlib.contextmanager
def _deferred_signals():
  """While training, SIGINT and SIGTERM only append their number to the list this yields.

  The loop stops at the next step boundary, never inside an update or a checkpoint write. (Signals reach
  the main thread only; elsewhere nothing is deferred.)
  """
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return
  previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in
              (signal.SIGINT, signal.SIGTERM)}
  try:
    yield received
  finally:
    for s, handler in previous.items():
      signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _stop(received: list) -> bool:
  """Whether to stop before the next step: a signal reached this process or, with several, any.

  With several processes they agree (`_deferred_signals`), so that all stop at the same step and save
  together.
  """
  if jax.process_count() == 1:
    return bool(received)
  from jax.experimental import multihost_utils
  anyone = bool(np.asarray(multihost_utils.process_allgather(np.int32(len(received)))).any())
  if anyone and not received:
    received.append(signal.SIGTERM)
  return anyone


def train_and_evaluate(config, workdir, data: dict, *, progress: bool = True, stop_at: int | None = None):
  """Trains (or resumes) the config's model on data['train'], evaluates on data['test'] (when given).

  Several processes (`parallel.initialize`): every process runs this with the same config and workdir;
  the steps run on `parallel.global_mesh`, each process reading only its rows of every global batch (the
  rows of `transforms.batch_indices`, so that any number of processes trains on the batches one process
  would), and every process saves and restores the orbax checkpoints. The model comes back on this
  process's local devices.

  Args:
    config: seed, model (name + arguments), train (optimizer, learning_rate, momentum, weight_decay,
      schedule, warmup_steps, steps, batch_size, max_shift, crop (random crops of that size in training,
      the centred one for evaluation; 0: whole images), checkpoint_every, log_every), num_classes.
    workdir: where the checkpoints go (resumed from when there).
    data: {'train': {'images' float32 [N, H, W, C] normalised, 'labels' [N]} or a
      `transforms.Streamed` (read on demand), 'test' (optional): arrays as for train}.
    progress: draw a progress bar.
    stop_at: end after that step, checkpointed, as an interruption would (tests; chunked runs).

  Returns:
    (model in inference mode, {'test_accuracy' (with data['test']), 'steps', 'resumed_from',
    'final_loss'}).

  Raises:
    ValueError: a batch size that does not split over the devices, checkpoints trained under another
      config (`check_fingerprint`) or of another architecture.
    UserError: the loss diverged.
    KeyboardInterrupt: SIGINT, once the steps done before it are checkpointed.
    SystemExit: SIGTERM (code 143), once the steps done before it are checkpointed.
  """
  t = config.train
  workdir = pathlib.Path(workdir)
  directory = (workdir / 'checkpoints').absolute()
  check_fingerprint(config, workdir)
  model = make_model(config, config.num_classes)
  optimizer = nnx.Optimizer(model, make_optimizer(t), wrt=nnx.Param)
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
  start, losses = 0, []
  handler = ocp.StandardCheckpointHandler()
  with ocp.CheckpointManager(directory, options=options, item_handlers=handler) as manager:
    for step in sorted(manager.all_steps(), reverse=True):  # the latest intact checkpoint
      try:
        losses = _restore(manager, step, model, optimizer, directory)
      except UserError:  # another architecture or optimizer: not damage
        raise
      except Exception as e:  # orbax / TensorStore / JSON errors of a damaged step
        _set_aside(manager, directory, step, e)
        continue
      start = step
      break
    end = t.steps if stop_at is None else min(stop_at, t.steps)
    if t.batch_size % parallel.global_size():
      raise ValueError(f'train.batch_size {t.batch_size} must be a multiple of the number of devices, '
                       f'{parallel.global_size()} (the batch is sharded over them)')
    lead = jax.process_index() == 0
    if lead:
      _write_fingerprint(config, directory)
    parallel.replicate_global(model)
    parallel.replicate_global(optimizer)
    train = data['train']
    if isinstance(train, dict):
      check_labels(train['labels'], config.num_classes, tuple(config.get('class_names') or ()))
      num, fetch = len(train['labels']), lambda idx: (train['images'][idx], train['labels'][idx])
    else:  # transforms.Streamed
      num, fetch = len(train), train.__getitem__
    key = jax.random.key(config.seed)
    log_path = workdir / 'train_log.jsonl'
    if lead:
      _keep_log(log_path, start)
    model.train()
    done = start  # steps applied to the model and the optimizer
    bar = tqdm(total=t.steps, initial=start, desc='train', disable=not (progress and lead), mininterval=2.0)
    mine = parallel.process_rows(t.batch_size)  # this process's rows of every global batch
    def saveable():
      return {**_saveable(_state(model, optimizer)), 'losses': np.asarray(losses[-50:], np.float32)}
    failed = bad_loss = False
    with _deferred_signals() as received, (log_path.open('a') if lead else contextlib.nullcontext()) as log:
      try:
        for step in range(start, end):
          if _stop(received):
            break
          images, labels = fetch(transforms.batch_indices(num, t.batch_size, step, config.seed)[mine])
          images, labels = parallel.global_batch((jnp.asarray(images), jnp.asarray(labels)), t.batch_size)
          loss, acc = train_step(model, optimizer, jax.random.fold_in(key, step), images, labels,
                                 max_shift=t.max_shift, crop=t.get('crop', 0))
          loss = float(parallel.local(loss))
          if not np.isfinite(loss):  # the model has taken the step: it is not checkpointed
            bad_loss = True
            raise diverged(loss, step, t)
          done = step + 1
          losses.append(loss)
          bar.update()
          if done % t.log_every == 0 or done == end:
            if lead:
              log.write(json.dumps({'step': done, 'loss': losses[-1],
                                    'batch_accuracy': float(parallel.local(acc))}) + '\n')
              log.flush()
            bar.set_postfix(loss=f'{np.mean(losses[-t.log_every:]):.3f}', refresh=False)
          if done % t.checkpoint_every == 0 and done < end:
            manager.save(done, args=ocp.args.StandardSave(saveable()))
      except BaseException:
        failed = True
        raise
      finally:  # an interruption (or, with one process, an error) keeps the finished steps
        bar.close()
        # several processes save together: after an error in one of them the others never join
        if done > (manager.latest_step() or 0) and not (failed and jax.process_count() > 1) and not bad_loss:
          manager.save(done, args=ocp.args.StandardSave(saveable()), force=True)
        manager.wait_until_finished()
  if received:
    message = (f'training stopped by {signal.Signals(received[0]).name} after step {done} of {end}, '
               f'checkpointed in {directory}: rerun the same command to resume')
    if received[0] == signal.SIGINT:
      raise KeyboardInterrupt(message)
    print(message, file=sys.stderr)
    raise SystemExit(128 + signal.SIGTERM)
  if jax.process_count() > 1:  # evaluation is per process, on its local devices
    parallel.to_local(model)
  model.eval()
  result = {'steps': int(done), 'resumed_from': int(start),
            'final_loss': float(np.mean(losses[-50:])) if losses else None}
  if done == t.steps and 'test' in data:
    test = data['test']
    result['test_accuracy'] = accuracy(model, test['images'], test['labels'], crop=t.get('crop', 0))
  return model, result


def fit(model, images: np.ndarray, labels: np.ndarray, *, steps: int, batch_size: int, learning_rate: float,
        weight_decay: float, seed: int, progress: bool = True) -> list[dict]:
  """Trains a model in place with AdamW and a cosine schedule.

  Batches come from `transforms.batch_indices`, keys from `jax.random.key(seed)`.

  Args:
    model: the NNX model.
    images: float32 [N, H, W, C], normalised.
    labels: int [N].
    steps: optimiser steps.
    batch_size: images per step.
    learning_rate: the peak learning rate.
    weight_decay: AdamW's decoupled weight decay.
    seed: the batches' and augmentation's seed.
    progress: draw a progress bar.

  Returns:
    The per-step log: [{'step', 'loss', 'accuracy'}].

  Raises:
    UserError: the loss diverged.
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
    if not np.isfinite(float(loss)):
      raise UserError(f'training diverged: the loss is {float(loss)} at step {step + 1}; learning_rate '
                      f'{learning_rate:g} too large, or labels outside the model\'s classes?')
    log.append({'step': step, 'loss': float(loss), 'accuracy': float(acc)})
  model.eval()
  return log
