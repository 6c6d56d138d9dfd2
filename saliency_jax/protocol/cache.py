"""What the protocol keeps on disk and how it knows it is still true: ragged arrays packed into npz
(`pack` / `unpack`), and digests of the package's source (`source_digest`, `code_digest`) and of a
model's weights (`weights_digest`), which key every kept result so that results made by other code or
other weights are never reused. The evaluation's chunks: `protocol.chunks`."""

import functools
import hashlib
import inspect
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import parallel


def pack(pieces) -> tuple[np.ndarray, np.ndarray]:
  """A ragged list of arrays (e.g. each image's boxes) -> (counts [n], values: the pieces concatenated).
  The one encoding of ragged per-image data on disk (the data cache, the evaluation's chunks)."""
  pieces = [np.asarray(p) for p in pieces]
  return np.array([len(p) for p in pieces], np.int64), np.concatenate(pieces) if pieces else np.zeros(0)


def unpack(counts: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
  """`pack`'s inverse."""
  return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


@functools.cache
def source_digest(folder: str = '') -> str:
  """A digest of every source file of the saliency_jax package (or of its `folder`, e.g. 'data'), read
  once per process: results kept on disk by other code are never taken for this code's."""
  root = pathlib.Path(__file__).resolve().parents[1]
  h = hashlib.sha256()
  for source in sorted((root / folder).rglob('*.py')):
    h.update(source.relative_to(root).as_posix().encode())
    h.update(source.read_bytes())
  return h.hexdigest()[:16]


def code_modules(*modules) -> list[str]:
  """The names of `modules` and of every saliency_jax module they import (a module, or a function or
  class of it), transitively, sorted; a module of `saliency_jax.jobs` is taken alone (a job imports
  every layer below it)."""
  found, todo = set(), list(modules)
  while todo:
    module = todo.pop()
    if module.__name__ in found:
      continue
    found.add(module.__name__)
    if module.__name__.startswith('saliency_jax.jobs'):
      continue
    for value in vars(module).values():
      name = (value.__name__ if inspect.ismodule(value)
              else value.__module__ if inspect.isclass(value) or inspect.isfunction(value) else '')
      if name.startswith('saliency_jax.') and name not in found:
        todo.append(sys.modules[name])
  return sorted(found)


def code_digest(*modules) -> str:
  """A digest of the source of `code_modules(*modules)`: kept results made by other code are not reused."""
  sources = [inspect.getsource(sys.modules[name]) for name in code_modules(*modules)]
  return hashlib.sha256(json.dumps(sources).encode()).hexdigest()[:16]


def weights_digest(model) -> str:
  """A digest of a model's arrays (an NNX module's state, or a pytree such as `rules.Function`): results
  computed with other weights are never taken for this model's."""
  from flax import nnx
  state = nnx.state(model) if isinstance(model, nnx.Module) else model
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    if not hasattr(leaf, 'shape'):
      continue
    value = np.asarray(jax.device_get(parallel.local(leaf)))
    h.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}'.encode())
    h.update(np.ascontiguousarray(value).tobytes())
  return h.hexdigest()[:16]
