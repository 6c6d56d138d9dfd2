"""PASCAL VOC / ILSVRC XML folders as a random-access source.

`VOCSource(root)`: `len(source)`, `source[i]` -> {'image' uint8 [H, W, 3], 'label' (the first
object's class index), 'boxes' float32 [N, 4] (x0, y0, x1, y1) in pixels of the image as read,
x1 / y1 exclusive, 'box_labels' int32 [N], 'id'}.

Layouts: PASCAL VOC (`JPEGImages/` + `Annotations/`, 1-based indices; the default) and ILSVRC
(`layout='ilsvrc'`: `images/` + `annotations/`, 0-based, e.g. ../shared/data/imagenet-val-sample).
When the XML's <size> differs from the image read (a resized copy, as in the ImageNet sample whose
<size> is the original), boxes are rescaled to the image read.

A malformed XML raises an error naming the file; with `skip_bad=True` such records are left out
and listed in `source.bad` ((id, message) pairs). An unreadable image raises, naming the file,
when it is read (`transforms.load(..., skip_bad=True)` skips and counts those).
"""

import os
import pathlib

import numpy as np

from saliency_jax.data import imagenet

_SUFFIXES = ('.jpg', '.jpeg', '.png')
LAYOUTS = {'voc': ('JPEGImages', 'Annotations', True), 'ilsvrc': ('images', 'annotations', False)}


class VOCSource:
  """An XML folder. `classes`: the class names in label order (default: sorted names found)."""

  def __init__(self, root: str | os.PathLike, classes=None, *, layout: str = 'voc', skip_bad: bool = False):
    if layout not in LAYOUTS:
      raise ValueError(f'layout must be one of {tuple(LAYOUTS)}, got {layout!r}')
    self.root = pathlib.Path(root)
    images_name, annotations_name, self.one_based = LAYOUTS[layout]
    images_dir, self._annotations_dir = self.root / images_name, self.root / annotations_name
    for d in (images_dir, self._annotations_dir):
      if not d.is_dir():
        raise FileNotFoundError(f'{d} is not a folder (expected {self.root}/{images_name} and {annotations_name})')
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in _SUFFIXES}
    missing = sorted(i for i in images if not self._annotation(i).is_file())
    if missing:
      raise ValueError(f'{len(missing)} images in {images_dir} have no annotation: {", ".join(missing[:5])}')
    self._images = images
    self.bad: list[tuple[str, str]] = []
    names, ids = set(), []
    for i in sorted(images):
      try:
        names.update(imagenet.read_annotation(self._annotation(i), one_based=self.one_based)['names'])
        ids.append(i)
      except ValueError as e:
        if not skip_bad:
          raise
        self.bad.append((i, str(e)))
    self.ids = ids
    self.classes = tuple(sorted(names) if classes is None else classes)

  def _annotation(self, image_id: str) -> pathlib.Path:
    return self._annotations_dir / f'{image_id}.xml'

  def __len__(self) -> int:
    return len(self.ids)

  def label(self, i: int) -> int:
    """Example i's label (its first object's class) from the annotation alone, without decoding the image."""
    names = imagenet.read_annotation(self._annotation(self.ids[i]), one_based=self.one_based)['names']
    return self.classes.index(names[0]) if names and names[0] in self.classes else -1

  def __getitem__(self, i: int) -> dict:
    image_id = self.ids[i]
    image = imagenet.load_image(self._images[image_id])
    h, w = image.shape[:2]
    annotation = imagenet.read_annotation(self._annotation(image_id), image_size=(w, h), one_based=self.one_based)
    unknown = sorted(set(annotation['names']) - set(self.classes))
    if unknown:
      raise ValueError(f'{self._annotation(image_id)}: classes {unknown} not in {self.classes}')
    box_labels = np.asarray([self.classes.index(n) for n in annotation['names']], np.int32)
    return {'image': image, 'label': int(box_labels[0]) if len(box_labels) else -1,
            'boxes': annotation['boxes'].astype(np.float32), 'box_labels': box_labels, 'id': image_id}
