"""Any folder of photos as a random-access source: no annotations, labels optional.

`ImageFolder(root)`: every JPEG / PNG under `root` (subfolders included), in sorted order of their paths
relative to root, which are the records' ids. `source[i]` -> {'image' uint8 [H, W, 3] (grey and RGBA
photos converted to RGB), 'label' (-1: none), 'boxes' [0, 4], 'box_labels' [0], 'id'}; `source.path(i)`
is the file.

Labels, when the photos have them (then e.g. top-1 / top-5 accuracy can be reported):
  labels='subfolders': a photo's label is the name of the first folder under root that holds it, read
    as a class of `classes` (by name, or by index when it is a number);
  labels='path/to/labels.csv': a CSV with a header row naming the columns 'image' (the id, or the file
    name when unique) and 'label' (a class name of `classes` or an index); photos it does not list have
    none.
A photo that cannot be decoded raises a BadRecord naming the file when read ('unreadable_image'); a
label that names no class is an error naming the photo and the label when the source is built.
"""

import csv
import os
import pathlib

import numpy as np

from saliency_jax.data import imagenet
from saliency_jax.data.records import BadRecord
from saliency_jax.errors import UserError

SUFFIXES = ('.jpg', '.jpeg', '.png')


class ImageFolder:
  """The photos under a folder (see the module docstring)."""

  def __init__(self, root: str | os.PathLike, *, labels: str = '', classes=()):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise UserError(f'{self.root} is not a folder of photos')
    self.files = sorted((p for p in self.root.rglob('*') if p.suffix.lower() in SUFFIXES and p.is_file()),
                        key=lambda p: p.relative_to(self.root).as_posix())
    if not self.files:
      raise UserError(f'{self.root} holds no JPEG or PNG photos ({", ".join(SUFFIXES)})')
    self.ids = [p.relative_to(self.root).as_posix() for p in self.files]
    self.classes = tuple(classes)
    self.labels = np.full(len(self.files), -1, np.int64)
    if labels == 'subfolders':
      for i, file_id in enumerate(self.ids):
        parts = file_id.split('/')
        if len(parts) < 2:
          raise UserError(f'{self.root / file_id}: labels from subfolders, but the photo is in no subfolder')
        self.labels[i] = self._class(parts[0], self.root / file_id)
    elif labels:
      self._read_csv(pathlib.Path(labels))

  def _class(self, name: str, where) -> int:
    if name.isdigit() and (not self.classes or int(name) < len(self.classes)):
      return int(name)
    if name in self.classes:
      return self.classes.index(name)
    shown = ', '.join(self.classes[:5]) + (', ...' if len(self.classes) > 5 else '')
    raise UserError(f'{where}: label {name!r} is no class index or name of the model ({shown})')

  def _read_csv(self, path: pathlib.Path) -> None:
    if not path.is_file():
      raise UserError(f'labels file {path} not found')
    by_id = {file_id: i for i, file_id in enumerate(self.ids)}
    by_name = {}
    for i, file_id in enumerate(self.ids):
      by_name.setdefault(pathlib.PurePosixPath(file_id).name, []).append(i)
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    if rows and not {'image', 'label'} <= set(rows[0]):
      raise UserError(f'{path}: the header must name the columns image and label, got {sorted(rows[0])}')
    for line, row in enumerate(rows, start=2):
      image = row['image'].strip()
      found = [by_id[image]] if image in by_id else by_name.get(image, [])
      if len(found) != 1:
        what = 'no photo' if not found else f'{len(found)} photos'
        raise UserError(f'{path}:{line}: {image!r} names {what} under {self.root}')
      self.labels[found[0]] = self._class(row['label'].strip(), f'{path}:{line}')

  def __len__(self) -> int:
    return len(self.files)

  def path(self, i: int) -> pathlib.Path:
    """Example i's image file.

    Args:
      i: the example's index.

    Returns:
      The file's path.
    """
    return self.files[i]

  def __getitem__(self, i: int) -> dict:
    try:
      image = imagenet.load_image(self.files[i])
    except (OSError, ValueError) as e:
      raise BadRecord(self.ids[i], 'unreadable_image', f'{self.files[i]}: {e}') from e
    return {'image': image, 'label': int(self.labels[i]), 'boxes': np.zeros((0, 4), np.float32),
            'box_labels': np.zeros(0, np.int32), 'id': self.ids[i]}
