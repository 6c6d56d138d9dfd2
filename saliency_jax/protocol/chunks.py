"""The main job's evaluation on disk, chunk by chunk: bounded in memory, resumable, shared.

Shared between processes.

The test records are cut into chunks of consecutive records (`plan`). A chunk's results are one npz,
written atomically and durably (`write`, `store.save`), in a folder named by everything the results
depend on (`folder`: the config's settings, a digest of the weights and one of the package's source),
so that a rerun under another config, another net or other code never reads them (the main job says
so when it finds chunks of other code: `made_by_other_code`). Each chunk carries its folder, its
number and its records, and a checksum of its arrays, checked whenever it is read (`read`): a chunk
copied over another, changed, truncated or unreadable is never used. A run skips the chunks already
on disk and intact (`intact`: a killed evaluation resumes at the first unfinished chunk, a damaged one
is made again, written over it); with several processes, process p takes chunks p, p + P, ... and
process 0 waits for all of them (`wait`) and merges them (`merge`).

A chunk's results: {'rows': per-image results (arrays with one row per image, ragged lists with one
array per image, nested dicts of those), 'totals': numbers summed over chunks, 'bad': the records the
chunk left out}. On disk nested keys are joined by '/', ragged lists in `pack`'s encoding
(counts and values), 'bad' a JSON string.
"""

import hashlib
import json
import pathlib
import time

import numpy as np

from saliency_jax import store
from saliency_jax.protocol.cache import pack, unpack

_RAGGED = '#ragged'


def flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  """A nested dict of arrays as a flat {'a/b': array} for npz; a ragged list becomes counts and values.

  A ragged list under 'key' is stored as 'key#ragged/counts' and 'key#ragged/values' (`pack`).

  Args:
    tree: {name: array, ragged list or dict}.
    prefix: prepended to every key.

  Returns:
    {key: array}.
  """
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(flatten(value, f'{name}/'))
    elif isinstance(value, list):
      out[f'{name}{_RAGGED}/counts'], out[f'{name}{_RAGGED}/values'] = pack(value)
    else:
      out[name] = np.asarray(value)
  return out


def unflatten(arrays: dict[str, np.ndarray]) -> dict:
  """`flatten`'s inverse.

  Args:
    arrays: {key: array}.

  Returns:
    The nested dict.
  """
  tree = {}
  for name, value in arrays.items():
    if name.endswith(f'{_RAGGED}/values'):
      continue
    if name.endswith(f'{_RAGGED}/counts'):
      base = name[:-len(f'{_RAGGED}/counts')]
      value = unpack(value, arrays[f'{base}{_RAGGED}/values'])
      name = base
    *path, leaf = name.split('/')
    node = tree
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def plan(num_records: int, size: int) -> list[tuple[int, int]]:
  """The chunks of `size` consecutive records covering range(num_records).

  Args:
    num_records: the records.
    size: records per chunk.

  Returns:
    [(start, stop)].

  Raises:
    ValueError: a size that is not positive.
  """
  if size < 1:
    raise ValueError(f'config.eval_chunk must be a positive number of records, got {size}')
  return [(a, min(a + size, num_records)) for a in range(0, num_records, size)]


def folder(root: pathlib.Path, settings: dict, weights: str, code: str) -> pathlib.Path:
  """The folder of a run's chunks: root/<digest of the settings, the weights' digest and the code's>.

  settings.json is written beside the chunks.

  Args:
    root: the evaluation's folder.
    settings: the settings the results depend on.
    weights: the weights' digest.
    code: the code's digest.

  Returns:
    The folder (made if absent).
  """
  text = json.dumps({'settings': settings, 'weights': weights, 'code': code}, sort_keys=True, default=str)
  where = pathlib.Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]
  where.mkdir(parents=True, exist_ok=True)
  if not (where / 'settings.json').is_file():
    store.write_atomic(where / 'settings.json', text + '\n')
  return where


def made_by_other_code(where: pathlib.Path) -> list[pathlib.Path]:
  """The folders beside `where` that hold chunks of the same settings and weights made by other code.

  They are not reused: a rerun after a code change evaluates again.

  Args:
    where: a chunks' folder (`folder`).

  Returns:
    The folders.
  """
  def made_by(f):
    try:
      return json.loads((f / 'settings.json').read_text())
    except (OSError, ValueError):
      return {}

  mine = made_by(where)
  found = []
  for f in sorted(where.parent.iterdir()):
    other = made_by(f)
    if (f != where and any(f.glob('chunk-*.npz')) and other.get('code') != mine['code']
        and all(other.get(key) == mine[key] for key in ('settings', 'weights'))):
      found.append(f)
  return found


def path(where: pathlib.Path, chunk: int) -> pathlib.Path:
  """The file of a chunk.

  Args:
    where: the chunks' folder (`folder`).
    chunk: the chunk's number.

  Returns:
    where/chunk-NNNNNN.npz.
  """
  return where / f'chunk-{chunk:06d}.npz'


def meta(where: pathlib.Path, chunk: int, span: tuple[int, int]) -> dict:
  """What a chunk file is: its folder (the digest of what made it), its number and its records.

  Args:
    where: the chunks' folder (`folder`).
    chunk: the chunk's number.
    span: (start, stop) of its records.

  Returns:
    The dict `store.save` records.
  """
  return {'kind': 'evaluation chunk', 'folder': where.name, 'chunk': int(chunk),
          'records': [int(span[0]), int(span[1])]}


def write(where: pathlib.Path, chunk: int, span: tuple[int, int], result: dict) -> None:
  """A chunk's results to its file, atomically and durably, with `meta` and a checksum (`store.save`).

  Args:
    where: the chunks' folder (`folder`).
    chunk: the chunk's number.
    span: (start, stop) of its records.
    result: the chunk's results (nested dicts of arrays and ragged lists, and 'bad').
  """
  arrays = flatten({'rows': result['rows'], 'totals': result['totals']})
  store.save(path(where, chunk), {**arrays, 'bad': np.asarray(json.dumps(result['bad']))},
             meta=meta(where, chunk, span))


def read(where: pathlib.Path, chunk: int, span: tuple[int, int]) -> dict:
  """A chunk's results, checked.

  Args:
    where: the chunks' folder (`folder`).
    chunk: the chunk's number.
    span: (start, stop) of its records.

  Returns:
    The results, with 'bad'.

  Raises:
    store.DamagedFile: naming the file when it is not that chunk, has changed, or cannot be read.
  """
  arrays = store.load(path(where, chunk), meta=meta(where, chunk, span))
  bad = json.loads(str(arrays.pop('bad')))
  return {**unflatten(arrays), 'bad': bad}


def intact(where: pathlib.Path, chunk: int, span: tuple[int, int], log=print) -> bool:
  """Whether a chunk is on disk and readable as itself; a damaged one is said through `log`, and made again.

  Args:
    where: the chunks' folder (`folder`).
    chunk: the chunk's number.
    span: (start, stop) of its records.
    log: where a damaged file is reported.

  Returns:
    A bool.
  """
  return store.load_or_none(path(where, chunk), meta=meta(where, chunk, span), log=log) is not None


def merge(results: list[dict]) -> dict:
  """Chunks' results, in chunk order, as one.

  Each group of rows is concatenated (a chunk may have none of a group), totals summed, bad records
  listed.

  Args:
    results: the chunks' results.

  Returns:
    The merged results.
  """
  def join(values):
    first = values[0]
    if isinstance(first, dict):
      return {key: join([v[key] for v in values]) for key in first}
    if isinstance(first, list):
      return [p for v in values for p in v]
    return np.concatenate([np.asarray(v) for v in values])

  def add(values):  # a key some chunks lack (a stage they had no image for) counts 0 there
    if isinstance(values[0], dict):
      keys = dict.fromkeys(key for v in values for key in v)
      return {key: add([v[key] for v in values if key in v]) for key in keys}
    return sum(np.asarray(v).item() for v in values)

  groups = dict.fromkeys(g for r in results for g in r['rows'])
  rows = {}
  for group in groups:  # a group's rows of the chunks that have any
    parts = [r['rows'][group] for r in results if r['rows'].get(group)]
    rows[group] = join(parts) if parts else {}
  return {'rows': rows, 'totals': add([r['totals'] for r in results]),
          'bad': [b for r in results for b in r['bad']]}


def wait(where: pathlib.Path, spans: list[tuple[int, int]], timeout_s: float) -> dict:
  """Every chunk of `where`, merged, once all are written (by any process).

  Args:
    where: the chunks' folder (`folder`).
    spans: one (start, stop) per chunk (`plan`).
    timeout_s: how long to wait for the others.

  Returns:
    The merged results.

  Raises:
    TimeoutError: chunks still missing after timeout_s.
  """
  paths = [path(where, c) for c in range(len(spans))]
  deadline = time.time() + timeout_s
  while not all(p.exists() for p in paths):
    if time.time() > deadline:
      missing = [p.name for p in paths if not p.exists()]
      raise TimeoutError(f'{len(missing)} chunks not written after {timeout_s} s (the other processes?): '
                         f'{missing[:5]} in {where}')
    time.sleep(1.0)
  return merge([read(where, c, span) for c, span in enumerate(spans)])
