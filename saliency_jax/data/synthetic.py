"""The embedded default data: shapes pasted on real photos, with exact masks and boxes.

No download: backgrounds are crops of the photos scikit-image ships; train and test draw on
disjoint photos, so a net cannot win by recognising backgrounds. Each example is a pure
function of (seed, split, index). Objects are filled shapes of one of `CLASSES`, in a random
colour (colour says nothing about the class), scaled to `scale` of the image side, rotated
and placed at random; the mask is exact and the box is the mask's bounding box.
"""

import functools

import numpy as np
import skimage.data
import skimage.draw
import skimage.transform

CLASSES = ('disc', 'square', 'triangle', 'ring', 'cross')
TRAIN_PHOTOS = ('astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                'stereo_motorcycle', 'brick', 'grass')
TEST_PHOTOS = ('chelsea', 'colorwheel', 'retina', 'gravel', 'camera')


@functools.cache
def photo(name: str) -> np.ndarray:
  """A scikit-image photo as uint8 RGB [H, W, 3], shorter side <= 256 (grey repeated over channels)."""
  image = getattr(skimage.data, name)()
  if isinstance(image, tuple):  # stereo pairs: the left view
    image = image[0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3]
  factor = 256 / min(image.shape[:2])  # crops are shrunk to <= 96 px anyway; keep the work small
  if factor < 1:
    size = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    image = (skimage.transform.resize(image, size, anti_aliasing=True) * 255).round().astype(np.uint8)
  return np.ascontiguousarray(image)


def _polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
  """Vertices [N, 2] (row, col) of a unit shape centred on 0, radius ~1, randomly rotated."""
  if kind == 'square':
    pts = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) / np.sqrt(2)
  elif kind == 'triangle':
    a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    pts = np.stack([np.sin(a), np.cos(a)], 1)
  elif kind == 'cross':
    u, v = 1.0, 0.33
    pts = np.array([[-u, -v], [-u, v], [-v, v], [-v, u], [v, u], [v, v], [u, v], [u, -v], [v, -v],
                    [v, -u], [-v, -u], [-v, -v]])
  else:
    raise ValueError(kind)
  t = rng.uniform(0, 2 * np.pi)
  rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
  return pts @ rot.T


def shape_mask(kind: str, size: int, centre, radius: float, rng: np.random.Generator) -> np.ndarray:
  """Boolean [size, size] mask of one shape."""
  mask = np.zeros((size, size), bool)
  if kind in ('disc', 'ring'):
    rr, cc = skimage.draw.disk(centre, radius, shape=mask.shape)
    mask[rr, cc] = True
    if kind == 'ring':
      rr, cc = skimage.draw.disk(centre, radius * 0.55, shape=mask.shape)
      mask[rr, cc] = False
  else:
    pts = centre + radius * _polygon(kind, rng)
    rr, cc = skimage.draw.polygon(pts[:, 0], pts[:, 1], shape=mask.shape)
    mask[rr, cc] = True
  return mask


def example(index: int, *, split: str = 'train', seed: int = 0, image_size: int = 64,
            scale=(0.3, 0.6)) -> dict:
  """One example: {'image' uint8 [S, S, 3], 'label', 'mask' bool [S, S], 'boxes' [1, 4], 'id'}.

  Boxes are (x0, y0, x1, y1) in pixels, x1 / y1 exclusive.
  """
  photos = {'train': TRAIN_PHOTOS, 'test': TEST_PHOTOS}[split]
  rng = np.random.default_rng([seed, {'train': 0, 'test': 1}[split], index])
  label = int(rng.integers(len(CLASSES)))
  src = photo(photos[rng.integers(len(photos))])
  side = int(rng.integers(min(src.shape[:2]) // 3, min(src.shape[:2]) + 1))
  top, left = rng.integers(src.shape[0] - side + 1), rng.integers(src.shape[1] - side + 1)
  background = skimage.transform.resize(src[top:top + side, left:left + side], (image_size, image_size),
                                        anti_aliasing=True)
  radius = image_size * rng.uniform(*scale) / 2
  centre = rng.uniform(radius * 0.6, image_size - radius * 0.6, size=2)
  mask = shape_mask(CLASSES[label], image_size, centre, radius, rng)
  colour = rng.uniform(0, 1, size=3)
  texture = rng.normal(0, 0.04, size=(image_size, image_size, 1))
  image = np.where(mask[..., None], np.clip(colour + texture, 0, 1), background)
  rows, cols = np.nonzero(mask)
  box = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
  return {'image': (image * 255).round().astype(np.uint8), 'label': label, 'mask': mask, 'boxes': box,
          'box_labels': np.array([label]), 'id': f'{split}-{seed}-{index}'}


def dataset(num: int, *, split: str = 'train', seed: int = 0, image_size: int = 64, scale=(0.3, 0.6)) -> dict:
  """`num` examples stacked: images uint8 [N, S, S, 3], labels [N], masks [N, S, S], boxes [N, 4]."""
  items = [example(i, split=split, seed=seed, image_size=image_size, scale=scale) for i in range(num)]
  return {'images': np.stack([e['image'] for e in items]), 'labels': np.array([e['label'] for e in items]),
          'masks': np.stack([e['mask'] for e in items]), 'boxes': np.concatenate([e['boxes'] for e in items])}
