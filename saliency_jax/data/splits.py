"""Selection and report parts of an evaluation set: settings are chosen on one, reported on the other.

A record's part is a pure function of its id (the image file's stem for VOC / ILSVRC folders) and a
seed: sha256 of `f'{seed}:{id}'`, read as a number in [0, 1), is below `fraction` for the
selection part. So the same image falls in the same part in any folder, in any order, on any
machine, and a new folder of images of the same kind is split the same way. Where the files are
known, records whose image files are identical (one photo under two ids) take the part of the
smallest of their ids (`identical_files`): a setting is never chosen on an image it is reported on.

`config.data.part` picks what the main job evaluates: 'all' (the default), 'selection' or 'report';
`config.data.part_seed` (default `SEED`) and `config.data.selection_fraction` (default `FRACTION`)
fix the split (`data.make_source` applies it to the test split).
"""

import collections
import hashlib
import os

import numpy as np

PARTS = ('all', 'selection', 'report')
SEED = 0
FRACTION = 0.5


def check_part(part: str) -> str:
  """A part's name, checked.

  Args:
    part: 'all', 'selection' or 'report'.

  Returns:
    part.

  Raises:
    ValueError: another name.
  """
  if part not in PARTS:
    raise ValueError(f'config.data.part must be one of {PARTS}, got {part!r}')
  return part


def position(record_id: str, *, seed: int) -> float:
  """A record's place in [0, 1): the first 8 bytes of sha256(f'{seed}:{record_id}') over 2**64.

  Args:
    record_id: the record's id.
    seed: the split's seed.

  Returns:
    A float in [0, 1).
  """
  digest = hashlib.sha256(f'{seed}:{record_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def identical_files(paths) -> list[list[int]]:
  """Groups of the indices of files that hold the same bytes (only files of equal size are read).

  Args:
    paths: file paths.

  Returns:
    Groups of 2 or more indices, each sorted.
  """
  by_size = collections.defaultdict(list)
  for i, path in enumerate(paths):
    by_size[os.path.getsize(path)].append(i)
  groups = []
  for same_size in by_size.values():
    if len(same_size) < 2:
      continue
    by_digest = collections.defaultdict(list)
    for i in same_size:
      with open(paths[i], 'rb') as f:
        by_digest[hashlib.sha256(f.read()).hexdigest()].append(i)
    groups += [sorted(g) for g in by_digest.values() if len(g) > 1]
  return sorted(groups)


def part_of(record_ids, part: str, *, seed: int, fraction: float = FRACTION, files=None) -> np.ndarray:
  """Which records belong to a part: 'selection' (position(id) < fraction), 'report' (the rest) or 'all'.

  Args:
    record_ids: N record ids (strings).
    part: 'selection', 'report' or 'all'.
    seed: the split's seed.
    fraction: the selection part's fraction.
    files: N paths (optional): records with identical files are placed by the smallest of their ids.

  Returns:
    bool [N].

  Raises:
    ValueError: a fraction outside (0, 1), or an unknown part.
  """
  check_part(part)
  if not 0 < fraction < 1:
    raise ValueError(f'the selection fraction must lie in (0, 1), got {fraction}')
  ids = [str(i) for i in record_ids]
  if part == 'all':
    return np.ones(len(ids), bool)
  if files is not None:
    for group in identical_files(files):
      first = min(ids[i] for i in group)
      for i in group:
        ids[i] = first
  selection = np.array([position(i, seed=seed) < fraction for i in ids], bool)
  return selection if part == 'selection' else ~selection
