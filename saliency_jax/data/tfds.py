"""tensorflow-datasets sources through `tfds.data_source`, for users who have prepared them.

Random-access (array_record files), no TensorFlow needed; `tensorflow-datasets` is the `tfds`
extra. `TfdsSource(name, split)` gives the examples in this package's format:
- detection sets with `objects` (voc/2007, voc/2012, ...): every box, in pixels, with its label;
  'label' is the first object's;
- sets with one `bbox` per image (caltech_birds2011): that box and the image label;
- imagenet2012 (labels only): boxes read from the ILSVRC validation XMLs in `boxes_dir`
  (`<file stem>.xml`, 0-based, <size> the original image, which tfds holds: a <size> that disagrees
  with it is a bad record, `records.BadRecord`), classes by WordNet id.
tfds boxes are normalised (ymin, xmin, ymax, xmax); here they become (x0, y0, x1, y1) pixels.
"""

import os
import pathlib

import numpy as np

from saliency_jax.data import imagenet
from saliency_jax.data.records import BadRecord


def _tfds():
  try:
    import tensorflow_datasets
  except ImportError as e:
    raise ImportError("tfds sources need tensorflow-datasets: pip install 'saliency-jax[tfds]'") from e
  return tensorflow_datasets


def _pixels(bbox, h: int, w: int) -> np.ndarray:
  """Normalised (ymin, xmin, ymax, xmax) [N, 4] -> (x0, y0, x1, y1) pixels float32 [N, 4]."""
  b = np.asarray(bbox, np.float32).reshape(-1, 4)
  return np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1).astype(np.float32)


class TfdsSource:
  """One split of a prepared tfds dataset. `boxes_dir`: ILSVRC XMLs for imagenet2012."""

  def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike | None = None,
               boxes_dir: str | os.PathLike | None = None):
    tfds = _tfds()
    self.name, self.split = name, split
    self._source = tfds.data_source(name, split=split, data_dir=data_dir)
    features = self._source.dataset_info.features
    label = features['label'] if 'label' in features else features['objects']['label']
    self.classes = tuple(label.names)
    self.boxes_dir = None if boxes_dir is None else pathlib.Path(boxes_dir)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    ex = self._source[i]
    image = np.asarray(ex['image'], np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    h, w = image.shape[:2]
    name = ex.get('image/filename', ex.get('file_name', str(i)))
    name = name.decode() if isinstance(name, bytes) else str(name)
    if 'objects' in ex:
      labels = np.asarray(ex['objects']['label'], np.int32).reshape(-1)
      boxes = _pixels(ex['objects']['bbox'], h, w)
      n = min(len(labels), len(boxes))
      boxes, labels = boxes[:n], labels[:n]
      label = int(ex['label']) if 'label' in ex else int(labels[0]) if n else -1
    elif 'bbox' in ex:
      label = int(ex['label'])
      boxes, labels = _pixels(ex['bbox'], h, w), np.array([label], np.int32)
    elif self.boxes_dir is not None:
      label = int(ex['label'])
      path = self.boxes_dir / f'{pathlib.Path(name).stem}.xml'
      annotation = imagenet.read_annotation(path, image_size=(w, h))
      imagenet.check_size(annotation, (w, h), path, record=name)  # the original images: no rescaling
      unknown = sorted(set(annotation['names']) - set(self.classes))
      if unknown:
        raise BadRecord(name, 'unknown_class', f'{path}: classes {unknown} not in {self.name}')
      boxes = annotation['boxes']
      labels = np.asarray([self.classes.index(c) for c in annotation['names']], np.int32)
    else:
      label = int(ex['label'])
      boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
    return {'image': image, 'label': label, 'boxes': boxes, 'box_labels': labels, 'id': name}
