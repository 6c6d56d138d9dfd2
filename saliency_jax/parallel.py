"""Data parallelism: a 1-D ('data',) mesh over every device, batches sharded, parameters replicated.

With more than one device, every batched function of the package (saliency maps, input gradients,
10-crop and top-k maps, attribution methods, deletion / insertion, class models) and the training
step shard their batch over all devices: `shard` pads the batch to a multiple of the device count
(repeating its first row), places it with `NamedSharding(mesh, P('data'))`, and the padded rows are
trimmed from the outputs. `jax.jit` partitions the computation from the input shardings (no pmap);
parameters are replicated (`replicate`). With one device nothing moves and nothing is padded.

Set `SALIENCY_JAX_DEVICES=1` to keep everything on the first device (of each process).

Several processes (`initialize`: `jax.distributed`, one per host of a pod slice or GPU cluster): the
batched functions above still shard over each process's own local devices (evaluation splits the
images between processes), while training runs on one global mesh over every process's devices
(`global_mesh`): each process puts its rows of the global batch there (`global_batch`, with
`jax.make_array_from_process_local_data`) and every process holds the replicated parameters
(`replicate_global`); `local` brings a replicated global array back to this process alone.
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
  """The devices batches are sharded over: this process's local devices.

  All of them, or the first only with SALIENCY_JAX_DEVICES=1.

  Returns:
    A list of JAX devices.
  """
  local = jax.local_devices()
  return local[:1] if os.environ.get('SALIENCY_JAX_DEVICES') == '1' else local


@functools.cache
def _mesh(ids: tuple[int, ...]) -> Mesh:
  by_id = {d.id: d for d in jax.devices()}
  return Mesh(np.array([by_id[i] for i in ids]), (AXIS,))


def mesh() -> Mesh:
  """The 1-D ('data',) mesh over `devices()`.

  Returns:
    A `jax.sharding.Mesh`.
  """
  return _mesh(tuple(d.id for d in devices()))


def size() -> int:
  """The number of devices batches are sharded over.

  Returns:
    len(devices()).
  """
  return len(devices())


def batch_sharding() -> NamedSharding:
  """The sharding of a batch over `mesh()`: the leading axis split along 'data'.

  Returns:
    A `NamedSharding`.
  """
  return NamedSharding(mesh(), PartitionSpec(AXIS))


def replicated() -> NamedSharding:
  """The sharding that replicates an array on every device of `mesh()`.

  Returns:
    A `NamedSharding`.
  """
  return NamedSharding(mesh(), PartitionSpec())


def padded_size(n: int, multiple: int | None = None) -> int:
  """N rounded up to a multiple of the device count (or of `multiple`).

  Args:
    n: a batch size.
    multiple: the multiple (default: the device count).

  Returns:
    The rounded size.
  """
  m = size() if multiple is None else multiple
  return -(-n // m) * m


def shard(arrays):
  """Pads arrays along the batch axis to a multiple of the device count and shards them over the mesh.

  Args:
    arrays: a tuple of arrays [B, ...] (None entries pass).

  Returns:
    (the sharded arrays, B the true batch size).
  """
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
  """Trims the padded rows from a pytree of batch-major outputs.

  Args:
    outputs: a pytree of arrays [B', ...].
    n: the true batch size.

  Returns:
    The pytree with [n, ...] arrays.
  """
  return jax.tree.map(lambda o: o[:n], outputs)


def replicate(model):
  """Places a model's state on every device of the mesh; a no-op on one device.

  Args:
    model: an NNX module or optimizer (placed in place), or any pytree of arrays.

  Returns:
    The model.
  """
  if size() == 1:
    return model
  if isinstance(model, nnx.Pytree):  # a module or an optimizer: updated in place
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, replicated()))
    return model
  return jax.device_put(model, replicated())


def initialize(coordinator_address: str | None = None, num_processes: int = 1, process_id: int = 0,
               timeout_s: int = 300) -> None:
  """Joins a multi-host run (`jax.distributed.initialize`) when num_processes > 1; one process: nothing.

  Args:
    coordinator_address: 'host:port' of process 0.
    num_processes: the number of processes.
    process_id: this process's index.
    timeout_s: how long a process that is done waits at exit for the others (process 0 still merging,
      scoring and drawing after the others' last chunk).
  """
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, shutdown_timeout_seconds=int(timeout_s))


def global_devices() -> list:
  """Every process's devices, grouped by process: the rows of a global batch are laid out process by process.

  The first device of each process with SALIENCY_JAX_DEVICES=1.

  Returns:
    A list of JAX devices.
  """
  every = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  if os.environ.get('SALIENCY_JAX_DEVICES') == '1':
    first = {}
    for d in every:
      first.setdefault(d.process_index, d)
    every = list(first.values())
  return every


def global_mesh() -> Mesh:
  """The 1-D ('data',) mesh over `global_devices()`; with one process, `mesh()`.

  Returns:
    A `jax.sharding.Mesh`.
  """
  return _mesh(tuple(d.id for d in global_devices()))


def global_size() -> int:
  """The number of devices of every process together.

  Returns:
    len(global_devices()).
  """
  return len(global_devices())


def global_batch(arrays, global_rows: int):
  """This process's rows of a global batch as global arrays sharded over `global_mesh`.

  Process p of P holds rows p * rows / P ... (`jax.make_array_from_process_local_data`). One process:
  `shard`.

  Args:
    arrays: a tuple of this process's arrays [rows / P, ...].
    global_rows: the global batch's rows.

  Returns:
    A tuple of global arrays [rows, ...].
  """
  if jax.process_count() == 1:
    return shard(arrays)[0]
  sharding = NamedSharding(global_mesh(), PartitionSpec(AXIS))
  return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a), (global_rows, *a.shape[1:]))
               for a in arrays)


def process_rows(rows: int) -> slice:
  """The rows of a global batch this process provides (`global_batch`).

  Args:
    rows: the global batch's rows.

  Returns:
    A slice.

  Raises:
    ValueError: rows that do not split evenly over the processes.
  """
  if rows % jax.process_count():
    raise ValueError(f'a global batch of {rows} rows does not split over {jax.process_count()} processes')
  per = rows // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def replicate_global(model):
  """`replicate` on `global_mesh`; one process: `replicate`.

  Every process must hold the same values (e.g. the same seed's initialisation or the same checkpoint).

  Args:
    model: an NNX module or optimizer, or any pytree of arrays.

  Returns:
    The model, its arrays global and replicated.
  """
  if jax.process_count() == 1:
    return replicate(model)
  sharding = NamedSharding(global_mesh(), PartitionSpec())

  def place(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # dropout streams: their raw key data
      return jax.random.wrap_key_data(place(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(local(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  if isinstance(model, nnx.Pytree):  # a module or an optimizer: updated in place
    nnx.update(model, jax.tree.map(place, nnx.state(model)))
    return model
  return jax.tree.map(place, model)


def local(x):
  """A (replicated) global array as this process's copy on its first local device; other values pass.

  Args:
    x: any value.

  Returns:
    The local copy, or x.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return x.addressable_data(0)
  return x


def to_local(model):
  """Every array of a model as this process's copy, replicated over the local devices.

  After training on `global_mesh`, evaluation is per process.

  Args:
    model: an NNX module (in place) or a pytree.

  Returns:
    The model.
  """
  if isinstance(model, nnx.Pytree):  # a module or an optimizer: updated in place
    nnx.update(model, jax.tree.map(local, nnx.state(model)))
    return replicate(model)
  return replicate(jax.tree.map(local, model))


def chunked(fn: Callable, arrays, chunk_size: int | None):
  """Applies fn to leading-axis chunks of arrays, sharded over the devices.

  The last chunk is padded to full size by repeating its first row, so that one compiled program serves
  every chunk; padded rows are dropped. With several devices each chunk is rounded up to a multiple of the
  device count and sharded over them (batch axis), so `chunk_size` bounds the images per call on all
  devices together.

  Args:
    fn: a function of the arrays' chunks returning a pytree of batch-major arrays.
    arrays: a tuple of arrays [B, ...] (None entries passed through).
    chunk_size: rows per call (None: all at once).

  Returns:
    fn's outputs concatenated over the chunks, [B, ...].

  Raises:
    ValueError: a chunk size that is not a positive integer.
  """
  n = next(a.shape[0] for a in arrays if a is not None)
  if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or isinstance(chunk_size, bool)
                                 or chunk_size < 1):
    raise ValueError(f'chunk_size must be a positive integer number of images (None: all at once), got '
                     f'{chunk_size!r}')
  step = padded_size(n if chunk_size is None else min(chunk_size, n))
  if step == n:  # one chunk (no slicing: each slice of a JAX array is a dispatch of its own)
    part, _ = shard(tuple(arrays))
    return fn(*part)
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
