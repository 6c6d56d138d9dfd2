"""The one place where several processes' results meet: each writes its share, process 0 merges.

A share is a nested dict of one process's per-image results: arrays with one row per image (its
'indices', the record index of each image, among them), ragged lists (one array per image, e.g. its
ground-truth boxes) and 0-d totals. `merge` puts the rows of all shares in index order and sums the
totals. On one host nothing here runs. On disk a share is one npz (`write` / `read`): nested keys
joined by '/', ragged lists in `stages.pack`'s encoding (counts and values).
"""

import pathlib
import time

import numpy as np

from saliency_jax.jobs import stages

_RAGGED = '#ragged'


def flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  """A share -> flat {'a/b': array} for npz; a ragged list becomes 'key#ragged/counts' and '.../values'."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(flatten(value, f'{name}/'))
    elif isinstance(value, list):
      out[f'{name}{_RAGGED}/counts'], out[f'{name}{_RAGGED}/values'] = stages.pack(value)
    else:
      out[name] = np.asarray(value)
  return out


def unflatten(arrays: dict[str, np.ndarray]) -> dict:
  """`flatten`'s inverse."""
  tree = {}
  for name, value in arrays.items():
    if name.endswith(f'{_RAGGED}/values'):
      continue
    if name.endswith(f'{_RAGGED}/counts'):
      base = name[:-len(f'{_RAGGED}/counts')]
      value = stages.unpack(value, arrays[f'{base}{_RAGGED}/values'])
      name = base
    *path, leaf = name.split('/')
    node = tree
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def merge(shares: list[dict]) -> dict:
  """Every share's rows in index order (by 'indices'), ragged lists likewise, 0-d totals summed."""
  order = np.argsort(np.concatenate([np.asarray(s['indices']) for s in shares]), kind='stable')

  def join(values):
    first = values[0]
    if isinstance(first, dict):
      return {key: join([v[key] for v in values]) for key in first}
    if isinstance(first, list):
      pieces = [p for v in values for p in v]
      return [pieces[i] for i in order]
    if np.ndim(first) == 0:
      return sum(np.asarray(v).item() for v in values)
    return np.concatenate([np.asarray(v) for v in values])[order]

  return join(shares)


def path(workdir: pathlib.Path, process: int, num_processes: int) -> pathlib.Path:
  return workdir / 'hosts' / f'part-{process}-of-{num_processes}.npz'


def write(target: pathlib.Path, share: dict) -> None:
  """The share to `target`, atomically."""
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f'.{target.name}.tmp.npz')
  np.savez(tmp, **flatten(share))
  tmp.replace(target)


def read(source: pathlib.Path) -> dict:
  with np.load(source, allow_pickle=False) as f:
    return unflatten(dict(f))


def gather(workdir: pathlib.Path, mine: dict, num_processes: int, since: float, timeout_s: float) -> dict:
  """Process 0: its own share plus every other process's (written after `since`), merged."""
  paths = [path(workdir, p, num_processes) for p in range(1, num_processes)]
  deadline = time.time() + timeout_s
  def ready(p):
    return p.exists() and p.stat().st_mtime >= since
  while not all(ready(p) for p in paths):
    if time.time() > deadline:
      raise TimeoutError(f'no result from the other processes after {timeout_s} s: '
                         f'{[str(p) for p in paths if not ready(p)]}')
    time.sleep(1.0)
  return merge([mine] + [read(p) for p in paths])
