"""PASCAL VOC / ILSVRC XML folders as a random-access source.

`VOCSource(root)`: `len(source)`, `source[i]` -> {'image' uint8 [H, W, 3], 'label' (the first
object's class index), 'boxes' float32 [N, 4] (x0, y0, x1, y1) in pixels of the image as read,
x1 / y1 exclusive, 'box_labels' int32 [N], 'difficult' bool [N] (VOC's <difficult> flags), 'id'}.

Layouts: PASCAL VOC (`JPEGImages/` + `Annotations/`, 1-based indices; the default) and ILSVRC
(`layout='ilsvrc'`: `images/` + `annotations/`, 0-based, e.g. ../shared/data/imagenet-val-sample).
Boxes are rescaled to the image read. An XML <size> that differs from the image by a pixel or more
is a bad record ('size_mismatch'), unless `squashed=True`: the folder's images are documented as
resized copies whose <size> is the original (the ImageNet sample, squashed to 227 x 227).

Bad records (`records.BadRecord`: an image without annotation or an annotation without image,
malformed XML, no <object>, a box outside the image, a class not in `classes`) raise an error
naming the file when the source is built; with `skip_bad=True` they are left out and listed in
`source.bad` ([{'record', 'reason', 'message'}]). An unreadable image or a <size> mismatch raises a
BadRecord when the record is read (`transforms.load(..., skip_bad=True)` skips and lists those).
"""

import os
import pathlib

import numpy as np

from saliency_jax.data import imagenet
from saliency_jax.data.records import BadRecord

_SUFFIXES = ('.jpg', '.jpeg', '.png')
LAYOUTS = {'voc': ('JPEGImages', 'Annotations', True), 'ilsvrc': ('images', 'annotations', False)}


class VOCSource:
  """An XML folder. `classes`: the class names in label order (default: sorted names found)."""

  def __init__(self, root: str | os.PathLike, classes=None, *, layout: str = 'voc', skip_bad: bool = False,
               squashed: bool = False):
    if layout not in LAYOUTS:
      raise ValueError(f'layout must be one of {tuple(LAYOUTS)}, got {layout!r}')
    self.root = pathlib.Path(root)
    images_name, annotations_name, self.one_based = LAYOUTS[layout]
    images_dir, self._annotations_dir = self.root / images_name, self.root / annotations_name
    for d in (images_dir, self._annotations_dir):
      if not d.is_dir():
        raise FileNotFoundError(f'{d} is not a folder (expected {self.root}/{images_name} and '
                                f'{annotations_name})')
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in _SUFFIXES}
    annotated = {p.stem for p in self._annotations_dir.glob('*.xml')}
    self._images, self.squashed = images, squashed
    problems = [BadRecord(i, 'no_image', f'{self._annotation(i)} has no image in {images_dir}')
                for i in sorted(annotated - set(images))]
    names = {}
    for i in sorted(images):
      try:
        if i not in annotated:
          raise BadRecord(i, 'no_annotation', f'{images[i]} has no annotation {self._annotation(i)}')
        names[i] = self._read(i)['names']
      except BadRecord as e:
        problems.append(e)
    self.classes = tuple(sorted(set().union(*names.values())) if classes is None else classes)
    for i, found in names.items():
      unknown = sorted(set(found) - set(self.classes))
      if unknown:
        problems.append(BadRecord(i, 'unknown_class',
                                  f'{self._annotation(i)}: classes {unknown} not in {self.classes}'))
    if problems and not skip_bad:  # the first one, and how many more
      more = f' (and {len(problems) - 1} more bad records in {self.root})' if len(problems) > 1 else ''
      raise BadRecord(problems[0].record, problems[0].reason,
                      f'{problems[0]}{more}; skip_bad=True leaves bad records out and lists them')
    self.bad = [e.as_dict() for e in problems]
    left_out = {e.record for e in problems}
    self.ids = [i for i in names if i not in left_out]

  def _annotation(self, image_id: str) -> pathlib.Path:
    return self._annotations_dir / f'{image_id}.xml'

  def _read(self, image_id: str, image_size: tuple[int, int] | None = None) -> dict:
    """`imagenet.read_annotation` of image_id, errors as BadRecords of image_id; no <object> is one."""
    path = self._annotation(image_id)
    try:
      annotation = imagenet.read_annotation(path, image_size=image_size, one_based=self.one_based)
    except BadRecord as e:
      raise BadRecord(image_id, e.reason, str(e)) from e
    if not annotation['names']:
      raise BadRecord(image_id, 'no_object', f'{path} has no <object>: no label for {image_id}')
    return annotation

  def __len__(self) -> int:
    return len(self.ids)

  def path(self, i: int) -> pathlib.Path:
    """Example i's image file.

    Args:
      i: the example's index.

    Returns:
      The file's path.
    """
    return self._images[self.ids[i]]

  def label(self, i: int) -> int:
    """Example i's label (its first object's class), from the annotation alone, without decoding the image.

    Args:
      i: the example's index.

    Returns:
      The class index.
    """
    return self.classes.index(self._read(self.ids[i])['names'][0])

  def __getitem__(self, i: int) -> dict:
    image_id = self.ids[i]
    try:
      image = imagenet.load_image(self._images[image_id])
    except (OSError, ValueError) as e:
      raise BadRecord(image_id, 'unreadable_image', str(e)) from e
    h, w = image.shape[:2]
    annotation = self._read(image_id, image_size=(w, h))
    if not self.squashed:
      imagenet.check_size(annotation, (w, h), self._annotation(image_id), record=image_id)
    box_labels = np.asarray([self.classes.index(n) for n in annotation['names']], np.int32)  # classes checked
    return {'image': image, 'label': int(box_labels[0]),
            'boxes': annotation['boxes'].astype(np.float32), 'box_labels': box_labels,
            'difficult': annotation['difficult'], 'id': image_id}
