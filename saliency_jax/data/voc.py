"""PASCAL VOC style folders (`JPEGImages/*.jpg` + `Annotations/*.xml`) as a random-access source.

`VOCSource(root)`: `len(source)`, `source[i]` -> {'image' uint8 [H, W, 3], 'label' (the first
object's class index), 'boxes' float32 [N, 4] (x0, y0, x1, y1) in pixels of the image as read,
x1 / y1 exclusive, 'box_labels' int32 [N], 'id'}. VOC XML indices are 1-based; when the XML's
<size> differs from the image read (a resized copy), boxes are rescaled to the image read.
"""

import os
import pathlib

import numpy as np

from saliency_jax.data import imagenet

_SUFFIXES = ('.jpg', '.jpeg', '.png')


class VOCSource:
  """A VOC folder. `classes`: the class names in label order (default: sorted names found)."""

  def __init__(self, root: str | os.PathLike, classes=None):
    self.root = pathlib.Path(root)
    images_dir, annotations_dir = self.root / 'JPEGImages', self.root / 'Annotations'
    for d in (images_dir, annotations_dir):
      if not d.is_dir():
        raise FileNotFoundError(f'{d} is not a folder (expected {self.root}/JPEGImages and Annotations)')
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in _SUFFIXES}
    missing = sorted(i for i in images if not (annotations_dir / f'{i}.xml').is_file())
    if missing:
      raise ValueError(f'{len(missing)} images in {images_dir} have no annotation: {", ".join(missing[:5])}')
    self.ids = sorted(images)
    self._images = images
    if classes is None:
      names = set()
      for i in self.ids:
        names.update(imagenet.read_annotation(self._annotation(i), one_based=True)['names'])
      classes = sorted(names)
    self.classes = tuple(classes)

  def _annotation(self, image_id: str) -> pathlib.Path:
    return self.root / 'Annotations' / f'{image_id}.xml'

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int) -> dict:
    image_id = self.ids[i]
    image = imagenet.load_image(self._images[image_id])
    h, w = image.shape[:2]
    annotation = imagenet.read_annotation(self._annotation(image_id), image_size=(w, h), one_based=True)
    unknown = sorted(set(annotation['names']) - set(self.classes))
    if unknown:
      raise ValueError(f'{self._annotation(image_id)}: classes {unknown} not in {self.classes}')
    box_labels = np.asarray([self.classes.index(n) for n in annotation['names']], np.int32)
    return {'image': image, 'label': int(box_labels[0]) if len(box_labels) else -1,
            'boxes': annotation['boxes'].astype(np.float32), 'box_labels': box_labels, 'id': image_id}
