"""The embedded default data: a localisation benchmark of drawn objects on real photos.

No download. Each example is a pure function of (seed, split, index): an object of one of
`num_classes` classes (default 10), pasted on a crop of a photo that scikit-image ships, with its
exact mask and box. Train and test crop disjoint photos (`TRAIN_PHOTOS`, `TEST_PHOTOS`), so a net
cannot win by recognising backgrounds. The 'validation' split draws other images of the test
split's kind (test photos, its own random stream): settings are chosen on it and reported on 'test'.

A class is a shape with its own texture and colour family (`CLASSES`): the hue is drawn from the
class's 30-degree band, saturation, brightness, texture phase and frequency at random. The object
is scaled to `scale` of the image side (its diameter; default 20-60%), rotated, placed at random,
and with probability `occlusion` partly hidden by a patch of another photo crop that covers 15-40%
of its extent from one side. The mask is the visible part; the box is the mask's bounding box
(x0, y0, x1, y1) in pixels, x1 / y1 exclusive. Any resolution (`image_size`).

`SyntheticSource(num, split=..., ...)` is random-access like every source of `saliency_jax.data`:
`len(source)`, `source[i]` -> {'image' uint8 [S, S, 3], 'label', 'boxes' float32 [1, 4],
'box_labels' int32 [1], 'mask' bool [S, S], 'id'}.
"""

import dataclasses
import functools

import numpy as np
import skimage.data
import skimage.draw
import skimage.transform

# (shape, texture, hue band start in degrees); the band is 30 degrees wide.
CLASS_SPECS = (
    ('disc', 'plain', 0),
    ('square', 'stripes', 36),
    ('triangle', 'checker', 72),
    ('ring', 'dots', 108),
    ('cross', 'gradient', 144),
    ('star', 'noise', 180),
    ('crescent', 'diagonal', 216),
    ('hexagon', 'rings', 252),
    ('arrow', 'grid', 288),
    ('diamond', 'waves', 324),
)
CLASSES = tuple(shape for shape, _, _ in CLASS_SPECS)
TRAIN_PHOTOS = ('astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                'stereo_motorcycle', 'brick', 'grass', 'coins', 'moon', 'clock')
TEST_PHOTOS = ('chelsea', 'retina', 'gravel', 'camera', 'cell', 'text')
SPLITS = {'train': 0, 'test': 1, 'validation': 2}


@functools.cache
def photo(name: str) -> np.ndarray:
  """A scikit-image photo as uint8 RGB, shorter side <= 256 (grey repeated over channels).

  Args:
    name: the `skimage.data` function's name.

  Returns:
    uint8 [H, W, 3].
  """
  image = getattr(skimage.data, name)()
  if isinstance(image, tuple):  # stereo pairs: the left view
    image = image[0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3]
  factor = 256 / min(image.shape[:2])  # crops are shrunk to a few hundred px at most anyway
  if factor < 1:
    size = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    image = (skimage.transform.resize(image, size, anti_aliasing=True) * 255).round().astype(np.uint8)
  return np.ascontiguousarray(image)


def _unit_polygon(kind: str) -> np.ndarray:
  """Vertices [N, 2] (row, col) of a shape centred on 0 with radius about 1."""
  if kind == 'square':
    return np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) / np.sqrt(2)
  if kind in ('triangle', 'hexagon'):
    n = 3 if kind == 'triangle' else 6
    a = np.pi / 2 + np.arange(n) * 2 * np.pi / n
    return np.stack([np.sin(a), np.cos(a)], 1)
  if kind == 'star':
    a = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.sin(a), r * np.cos(a)], 1)
  if kind == 'cross':
    u, v = 1.0, 0.33
    return np.array([[-u, -v], [-u, v], [-v, v], [-v, u], [v, u], [v, v], [u, v], [u, -v], [v, -v],
                     [v, -u], [-v, -u], [-v, -v]])
  if kind == 'arrow':
    return np.array([[-0.3, -1], [-0.3, 0.1], [-0.75, 0.1], [0, 1], [0.75, 0.1], [0.3, 0.1], [0.3, -1]])
  if kind == 'diamond':
    return np.array([[-1, 0], [0, 0.55], [1, 0], [0, -0.55]])
  raise ValueError(f'unknown polygon shape {kind!r}')


def shape_mask(kind: str, size: int, centre, radius: float, angle: float) -> np.ndarray:
  """The mask of one shape of `radius` px at `centre`, rotated by `angle`.

  Args:
    kind: the shape (a class of `CLASS_SPECS`).
    size: the image's side.
    centre: (row, col).
    radius: in pixels.
    angle: in radians.

  Returns:
    bool [size, size].
  """
  mask = np.zeros((size, size), bool)
  if kind in ('disc', 'ring', 'crescent'):
    mask[skimage.draw.disk(centre, radius, shape=mask.shape)] = True
    if kind == 'ring':
      mask[skimage.draw.disk(centre, radius * 0.55, shape=mask.shape)] = False
    elif kind == 'crescent':
      offset = 0.45 * radius * np.array([np.sin(angle), np.cos(angle)])
      mask[skimage.draw.disk(np.asarray(centre) + offset, radius * 0.85, shape=mask.shape)] = False
    return mask
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  pts = np.asarray(centre) + radius * _unit_polygon(kind) @ rot.T
  mask[skimage.draw.polygon(pts[:, 0], pts[:, 1], shape=mask.shape)] = True
  return mask


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """A texture in [0, 1]; frequency, phase and orientation drawn from rng.

  Args:
    kind: the texture's kind.
    size: the side.
    rng: a NumPy generator.

  Returns:
    [size, size].

  Raises:
    ValueError: an unknown kind.
  """
  y, x = np.mgrid[0:size, 0:size] / size
  t = rng.uniform(0, np.pi)
  u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
  f = rng.uniform(4, 7)
  phase = rng.uniform(0, 2 * np.pi)
  if kind == 'plain':
    return np.full((size, size), 0.5)
  if kind == 'stripes':
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * f * u + phase))
  if kind == 'diagonal':
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * f * (u + v) / np.sqrt(2) + phase))
  if kind == 'checker':
    return ((np.floor(f * u + phase) + np.floor(f * v + phase)) % 2).astype(float)
  if kind == 'grid':
    return 1.0 - ((np.abs(np.sin(np.pi * f * u + phase)) < 0.3) | (np.abs(np.sin(np.pi * f * v)) < 0.3))
  if kind == 'dots':
    return (np.sin(2 * np.pi * f * u + phase) * np.sin(2 * np.pi * f * v) > 0.5).astype(float)
  if kind == 'rings':
    r = np.hypot(x - rng.uniform(0.3, 0.7), y - rng.uniform(0.3, 0.7))
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * f * r + phase))
  if kind == 'waves':
    return 0.5 + 0.5 * np.sin(2 * np.pi * f * u + 2.0 * np.sin(2 * np.pi * 2 * v) + phase)
  if kind == 'gradient':
    return np.clip(u - u.min(), 0, None) / max(np.ptp(u), 1e-6)
  if kind == 'noise':
    return (rng.uniform(size=(size, size)) > 0.5).astype(float)
  raise ValueError(f'unknown texture {kind!r}')


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  k = (np.array([5.0, 3.0, 1.0]) + h / 60.0) % 6
  return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _crop(name: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
  """A random square crop of a photo, resized to image_size, floats in [0, 1]."""
  src = photo(name)
  side = int(rng.integers(min(src.shape[:2]) // 3, min(src.shape[:2]) + 1))
  top, left = rng.integers(src.shape[0] - side + 1), rng.integers(src.shape[1] - side + 1)
  return skimage.transform.resize(src[top:top + side, left:left + side], (image_size, image_size),
                                  anti_aliasing=True)


MIN_SIZE = 16


def example(index: int, *, split: str = 'train', seed: int = 0, image_size: int = 64, num_classes: int = 10,
            scale=(0.2, 0.6), occlusion: float = 0.3) -> dict:
  """Example `index` of a split of the synthetic set (see the module docstring for the fields).

  Args:
    index: the example's index.
    split: 'train', 'validation' or 'test' (disjoint photos).
    seed: the set's seed.
    image_size: the side in pixels.
    num_classes: how many of the classes.
    scale: (low, high), the object's size as a fraction of the side.
    occlusion: the probability that a patch of another photo occludes part of the object.

  Returns:
    {'image' uint8 [H, W, 3], 'label', 'boxes' [1, 4], 'box_labels' [1], 'mask' bool [H, W], 'id'}.

  Raises:
    ValueError: an unknown split, or settings out of range.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {tuple(SPLITS)}, got {split!r}')
  if not 1 <= num_classes <= len(CLASS_SPECS):
    raise ValueError(f'num_classes must be in 1..{len(CLASS_SPECS)}, got {num_classes}')
  if not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f'scale must be (low, high) with 0 < low <= high <= 1, got {scale}')
  if not isinstance(image_size, int | np.integer) or image_size < MIN_SIZE:  # a shape under ~2 px has no box
    raise ValueError(f'image_size must be an integer >= {MIN_SIZE} (the shapes need a few pixels), got '
                     f'{image_size!r}')
  photos = TRAIN_PHOTOS if split == 'train' else TEST_PHOTOS
  rng = np.random.default_rng([seed, SPLITS[split], index])
  label = int(rng.integers(num_classes))
  shape, pattern, hue = CLASS_SPECS[label]
  background = _crop(photos[rng.integers(len(photos))], image_size, rng)

  radius = image_size * rng.uniform(*scale) / 2
  centre = rng.uniform(radius * 0.6, image_size - radius * 0.6, size=2)
  mask = shape_mask(shape, image_size, centre, radius, rng.uniform(0, 2 * np.pi))
  colour = _hsv_to_rgb(hue + rng.uniform(0, 30), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
  shade = texture(pattern, image_size, rng)[..., None]
  fill = colour * (0.55 + 0.45 * shade) + rng.normal(0, 0.03, size=(image_size, image_size, 1))
  image = np.where(mask[..., None], np.clip(fill, 0, 1), background)

  if rng.uniform() < occlusion and mask.any():
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    cover = rng.uniform(0.15, 0.4)
    occluder = np.zeros_like(mask)
    side = rng.integers(4)
    if side == 0:
      occluder[:, :c0 + int(cover * (c1 - c0))] = True
    elif side == 1:
      occluder[:, c1 - int(cover * (c1 - c0)):] = True
    elif side == 2:
      occluder[:r0 + int(cover * (r1 - r0))] = True
    else:
      occluder[r1 - int(cover * (r1 - r0)):] = True
    # The occluder is a patch of another crop, confined to a band a bit wider than the object.
    band = np.zeros_like(mask)
    pad = max(1, int(0.15 * image_size))
    if side < 2:
      band[max(0, r0 - pad):r1 + pad] = True
    else:
      band[:, max(0, c0 - pad):c1 + pad] = True
    occluder &= band
    patch = _crop(photos[rng.integers(len(photos))], image_size, rng)
    image = np.where(occluder[..., None], patch, image)
    mask = mask & ~occluder

  rows, cols = np.nonzero(mask)
  box = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
  return {'image': (image * 255).round().astype(np.uint8), 'label': label, 'boxes': box,
          'box_labels': np.array([label], np.int32), 'mask': mask, 'id': f'{split}-{seed}-{index}'}


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
  """`num` examples of a split, random-access; every field of `example` is a setting."""
  num: int
  split: str = 'train'
  seed: int = 0
  image_size: int = 64
  num_classes: int = 10
  scale: tuple = (0.2, 0.6)
  occlusion: float = 0.3

  def __post_init__(self):
    example(0, split=self.split, seed=self.seed, image_size=self.image_size, num_classes=self.num_classes,
            scale=tuple(self.scale), occlusion=self.occlusion)  # checks the settings now

  @property
  def classes(self) -> tuple[str, ...]:
    """The class names of this source.

    Returns:
      The first `num_classes` of `CLASSES`.
    """
    return CLASSES[:self.num_classes]

  def __len__(self) -> int:
    return self.num

  def __getitem__(self, i: int) -> dict:
    if not -self.num <= i < self.num:
      raise IndexError(f'index {i} out of range for {self.num} examples')
    return example(i % self.num, split=self.split, seed=self.seed, image_size=self.image_size,
                   num_classes=self.num_classes, scale=tuple(self.scale), occlusion=self.occlusion)
