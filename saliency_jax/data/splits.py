"""Selection and report parts of an evaluation set: settings are chosen on one, reported on the other.

A record's part is a pure function of its id (the image file's stem for VOC / ILSVRC folders) and a
seed: sha256 of `f'{seed}:{id}'`, read as a number in [0, 1), is below `fraction` for the
selection part. So the same image falls in the same part in any folder, in any order, on any
machine, and a new folder of images of the same kind is split the same way.

`config.data.part` picks what the main job evaluates: 'all' (the default), 'selection' or 'report';
`config.data.part_seed` (default `SEED`) and `config.data.selection_fraction` (default `FRACTION`)
fix the split (`data.make_source` applies it to the test split).
"""

import hashlib

import numpy as np

PARTS = ('all', 'selection', 'report')
SEED = 0
FRACTION = 0.5


def check_part(part: str) -> str:
  if part not in PARTS:
    raise ValueError(f'config.data.part must be one of {PARTS}, got {part!r}')
  return part


def position(record_id: str, *, seed: int) -> float:
  """The record's place in [0, 1): the first 8 bytes of sha256(f'{seed}:{record_id}') over 2**64."""
  digest = hashlib.sha256(f'{seed}:{record_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def part_of(record_ids, part: str, *, seed: int, fraction: float = FRACTION) -> np.ndarray:
  """bool [N]: which of the records `record_ids` (N strings) belong to `part`.

  'selection': position(id) < fraction; 'report': the rest; 'all': every record.
  """
  check_part(part)
  if not 0 < fraction < 1:
    raise ValueError(f'the selection fraction must lie in (0, 1), got {fraction}')
  ids = [str(i) for i in record_ids]
  if part == 'all':
    return np.ones(len(ids), bool)
  selection = np.array([position(i, seed=seed) < fraction for i in ids], bool)
  return selection if part == 'selection' else ~selection
