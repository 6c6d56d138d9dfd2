"""Data parallelism: a 1-D ('data',) mesh over every device, batches sharded, parameters replicated.

With more than one device, every batched function of the package (saliency maps, input gradients,
10-crop and top-k maps, attribution methods, deletion / insertion, class models) and the training
step shard their batch over all devices: `shard` pads the batch to a multiple of the device count
(repeating its first row), places it with `NamedSharding(mesh, P('data'))`, and the padded rows are
trimmed from the outputs. `jax.jit` partitions the computation from the input shardings (no pmap);
parameters are replicated (`replicate`). With one device nothing moves and nothing is padded.

Set `SALIENCY_JAX_DEVICES=1` to keep everything on the first device. Several hosts: see
`initialize` (each process then shards over its own local devices).
"""

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = 'data'


def devices() -> list:
  """The devices batches are sharded over: this process's local devices (all of them, or the first
  only with SALIENCY_JAX_DEVICES=1)."""
  local = jax.local_devices()
  return local[:1] if os.environ.get('SALIENCY_JAX_DEVICES') == '1' else local


@functools.cache
def _mesh(ids: tuple[int, ...]) -> Mesh:
  by_id = {d.id: d for d in jax.local_devices()}
  return Mesh(np.array([by_id[i] for i in ids]), (AXIS,))


def mesh() -> Mesh:
  """The 1-D ('data',) mesh over `devices()`."""
  return _mesh(tuple(d.id for d in devices()))


def size() -> int:
  return len(devices())


def batch_sharding() -> NamedSharding:
  return NamedSharding(mesh(), PartitionSpec(AXIS))


def replicated() -> NamedSharding:
  return NamedSharding(mesh(), PartitionSpec())


def padded_size(n: int, multiple: int | None = None) -> int:
  """n rounded up to a multiple of the device count (or of `multiple`)."""
  m = size() if multiple is None else multiple
  return -(-n // m) * m


def shard(arrays):
  """Pads every array of the tuple `arrays` (None entries pass) along the batch axis to a multiple of
  the device count and shards it over the mesh; returns (arrays, n) with n the true batch size."""
  n = next(a.shape[0] for a in arrays if a is not None)
  if size() == 1:
    return arrays, n
  short = padded_size(n) - n
  sharding = batch_sharding()

  def place(a):
    if a is None:
      return None
    if short:
      a = jnp.concatenate([jnp.asarray(a), jnp.repeat(jnp.asarray(a)[:1], short, axis=0)])
    return jax.device_put(a, sharding)

  return tuple(place(a) for a in arrays), n


def unshard(outputs, n: int):
  """Trims the padded rows from a pytree of batch-major outputs."""
  return jax.tree.map(lambda o: o[:n], outputs)


def replicate(model):
  """Places `model`'s state (an NNX module, or any pytree of arrays) on every device of the mesh,
  in place for a module; returns it. A no-op on one device."""
  if size() == 1:
    return model
  if isinstance(model, nnx.Module):
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, replicated()))
    return model
  return jax.device_put(model, replicated())


def initialize(coordinator_address: str | None = None, num_processes: int = 1, process_id: int = 0) -> None:
  """Joins a multi-host run (`jax.distributed.initialize`) when num_processes > 1; one process: nothing."""
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def host_shard(n: int) -> np.ndarray:
  """The indices of an n-item data set this process handles (process i takes items i, i + P, ...)."""
  return np.arange(jax.process_index(), n, jax.process_count())


def chunked(fn: Callable, arrays, chunk_size: int | None):
  """Applies fn to leading-axis chunks of `arrays` (a tuple, None entries passed through).

  The last chunk is padded to full size by repeating its first row, so that one compiled
  program serves every chunk; padded rows are dropped. Outputs are pytrees of arrays. With
  several devices (`saliency_jax.parallel`) each chunk is rounded up to a multiple of the device
  count and sharded over them (batch axis), so `chunk_size` bounds the images per call on all
  devices together.
  """
  n = next(a.shape[0] for a in arrays if a is not None)
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f'chunk_size must be a positive number of images, got {chunk_size}')
  step = padded_size(n if chunk_size is None else min(chunk_size, n))
  outs = []
  for start in range(0, n, step):
    part = [None if a is None else a[start:start + step] for a in arrays]
    keep = next(p.shape[0] for p in part if p is not None)
    if step > keep:
      part = [None if p is None else jnp.concatenate([p, jnp.repeat(p[:1], step - keep, axis=0)])
              for p in part]
    part, _ = shard(tuple(part))
    out = fn(*part)
    outs.append(out if keep == step else unshard(out, keep))
  return outs[0] if len(outs) == 1 else jax.tree.map(lambda *o: jnp.concatenate(o), *outs)
