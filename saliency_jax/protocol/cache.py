"""What the protocol keeps on disk and how it knows it is still true.

Ragged arrays packed into npz (`pack` / `unpack`), and digests of the package's source (`source_digest`,
`code_digest`) and of a model's weights (`weights_digest`), which key every kept result so that results
made by other code or other weights are never reused. The evaluation's chunks: `protocol.chunks`.
"""

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
  """A ragged list of arrays (e.g. each image's boxes) as counts and concatenated values.

  The one encoding of ragged per-image data on disk (the data cache, the evaluation's chunks).

  Args:
    pieces: a list of arrays [n_i, ...].

  Returns:
    (counts int64 [n], values: the pieces concatenated).
  """
  pieces = [np.asarray(p) for p in pieces]
  return np.array([len(p) for p in pieces], np.int64), np.concatenate(pieces) if pieces else np.zeros(0)


def unpack(counts: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
  """`pack`'s inverse.

  Args:
    counts: int [n].
    values: the pieces concatenated.

  Returns:
    The list of pieces.
  """
  return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


@functools.cache
def source_digest(folder: str = '') -> str:
  """A digest of every source file of the saliency_jax package (or of one of its folders), once per process.

  Results kept on disk by other code are never taken for this code's.

  Args:
    folder: a folder of the package (e.g. 'data'), or '' for all of it.

  Returns:
    16 hex digits.
  """
  root = pathlib.Path(__file__).resolve().parents[1]
  h = hashlib.sha256()
  for source in sorted((root / folder).rglob('*.py')):
    h.update(source.relative_to(root).as_posix().encode())
    h.update(source.read_bytes())
  return h.hexdigest()[:16]


def code_modules(*modules) -> list[str]:
  """The names of modules and of every saliency_jax module they import, transitively, sorted.

  A module of `saliency_jax.jobs` is taken alone (a job imports every layer below it).

  Args:
    *modules: modules, or functions or classes of them.

  Returns:
    The module names.
  """
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
  """A digest of the source of `code_modules(*modules)`: kept results made by other code are not reused.

  Args:
    *modules: modules, or functions or classes of them.

  Returns:
    16 hex digits.
  """
  sources = [inspect.getsource(sys.modules[name]) for name in code_modules(*modules)]
  return hashlib.sha256(json.dumps(sources).encode()).hexdigest()[:16]


def weights_digest(model) -> str:
  """A digest of a model's arrays: results computed with other weights are never taken for this model's.

  Args:
    model: an NNX module, or a pytree such as `rules.Function`.

  Returns:
    16 hex digits.
  """
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
