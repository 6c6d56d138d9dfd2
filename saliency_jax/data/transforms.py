"""What every source shares: resizing, crops, flips, normalisation, loading, batching.

Resizing takes the boxes and masks with the image; the batcher is deterministic and seedable.

A source is anything random-access: `len(source)` and `source[i]` -> {'image' uint8 [H, W, 3],
'label', 'boxes' [N, 4] (x0, y0, x1, y1, pixels, x1 / y1 exclusive), 'box_labels' [N], 'id'},
optionally 'mask' bool [H, W] and 'difficult' bool [N].
"""

import numpy as np
from PIL import Image
from tqdm import tqdm

from saliency_jax.data.records import BadRecord


def resize(example: dict, size: int | tuple[int, int]) -> dict:
  """An example with its image resized (squashed) and its boxes and mask scaled with it.

  Args:
    example: a source's example.
    size: an int or (H, W).

  Returns:
    The resized example.
  """
  h, w = (size, size) if isinstance(size, int) else size
  image = example['image']
  ih, iw = image.shape[:2]
  out = dict(example)
  if (ih, iw) != (h, w):
    out['image'] = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    boxes = np.asarray(example['boxes'], np.float32).reshape(-1, 4)
    out['boxes'] = boxes * np.array([w / iw, h / ih, w / iw, h / ih], np.float32)
    if 'mask' in example:
      out['mask'] = np.asarray(Image.fromarray(example['mask']).resize((w, h), Image.Resampling.NEAREST))
  return out


def normalise(images, mean, std=(1.0, 1.0, 1.0)) -> np.ndarray:
  """8-bit or [0, 1] float images as float32 (x - mean) / std, with x in [0, 1].

  Integer images (uint8, or 8-bit pixels stored in a wider integer type) are divided by 255; float images
  must already lie in [0, 1].

  Args:
    images: [..., 3], integers 0..255 or floats in [0, 1].
    mean: the per-channel mean.
    std: the per-channel std.

  Returns:
    float32, images' shape.

  Raises:
    ValueError: integers outside 0..255, floats outside [0, 1] or not finite (0..255 floats would be
      normalised as if they were in [0, 1]), or another dtype.
  """
  images = np.asarray(images)
  if np.issubdtype(images.dtype, np.integer):
    if images.size and (images.min() < 0 or images.max() > 255):
      raise ValueError(f'integer images must hold 8-bit pixels 0..255, got {images.min()}..{images.max()} '
                       f'({images.dtype})')
    x = images.astype(np.float32) / 255.0
  elif np.issubdtype(images.dtype, np.floating):
    x = images.astype(np.float32)
    if not np.all(np.isfinite(x)):
      raise ValueError(f'images hold {int(np.sum(~np.isfinite(x)))} NaN or infinite values')
    if x.size and (x.min() < 0 or x.max() > 1):
      raise ValueError(f'float images must lie in [0, 1], got {x.min():g}..{x.max():g}: pass 8-bit pixels as '
                       'an integer type, or divide by 255')
  else:
    raise ValueError(f'images must be 8-bit integers or [0, 1] floats, got {images.dtype}')
  return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def centre_crop(images, size: int) -> np.ndarray:
  """The centred size x size crop of images.

  Args:
    images: [..., H, W, C].
    size: the crop's side.

  Returns:
    [..., size, size, C].

  Raises:
    ValueError: a crop larger than the images.
  """
  h, w = images.shape[-3:-1]
  if size > min(h, w):
    raise ValueError(f'crop size {size} is larger than the images ({h}x{w})')
  top, left = (h - size) // 2, (w - size) // 2
  return images[..., top:top + size, left:left + size, :]


def random_crop_and_flip(rng: np.random.Generator, images: np.ndarray, size: int,
                         flip: bool = True) -> np.ndarray:
  """A random size x size crop of each image, mirrored with probability 1/2.

  Args:
    rng: a NumPy generator.
    images: [B, H, W, C].
    size: the crop's side.
    flip: mirror at random.

  Returns:
    [B, size, size, C].

  Raises:
    ValueError: a crop larger than the images.
  """
  b, h, w = images.shape[:3]
  if size > min(h, w):
    raise ValueError(f'crop size {size} is larger than the images ({h}x{w})')
  tops, lefts = rng.integers(0, h - size + 1, b), rng.integers(0, w - size + 1, b)
  flips = rng.uniform(size=b) < 0.5 if flip else np.zeros(b, bool)
  out = np.empty((b, size, size) + images.shape[3:], images.dtype)
  for i in range(b):
    crop = images[i, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size]
    out[i] = crop[:, ::-1] if flips[i] else crop
  return out


def load(source, size: int | None = None, *, skip_bad: bool = False, progress: bool = False,
         desc: str = 'load', allow_empty: bool = False) -> dict:
  """Every example of a source, resized to `size` (None: as read; all must then share one size).

  A record that fails to load, or has no label (< 0: no object), raises an error naming it, or with
  skip_bad is left out and listed in 'bad' (`records.BadRecord`; reason 'unreadable' for other errors,
  whose record is the index).

  Args:
    source: a random-access source.
    size: the side images are resized to, or None.
    skip_bad: leave bad records out instead of raising.
    progress: draw a progress bar.
    desc: the progress bar's label.
    allow_empty: no usable record gives arrays of 0 rows (needs `size`) instead of an error.

  Returns:
    {'images' uint8 [N, H, W, 3], 'labels' int32 [N], 'boxes' list of [M, 4], 'box_labels' list of [M],
    'difficult' list of bool [M], 'ids' list, 'masks' bool [N, H, W] when every example has one,
    'indices' int64 [N] (each example's record index in the source), 'bad' [{'index', 'record',
    'reason', 'message'}]}.

  Raises:
    BadRecord: a bad record, without skip_bad.
    ValueError: a record that fails to load, images of different sizes without `size`, or no usable
      record.
  """
  items, kept, bad = [], [], []
  for i in tqdm(range(len(source)), desc=desc, disable=not progress, mininterval=2.0):
    try:
      example = source[i]
      if int(example['label']) < 0:  # cross-entropy would read -1 as the last class
        raise BadRecord(example['id'], 'no_object', f'{example["id"]} has no object, so no label')
    except (OSError, ValueError) as e:
      if not skip_bad:
        message = f'record {i} of {type(source).__name__}: {e}'
        if isinstance(e, BadRecord):
          raise BadRecord(e.record, e.reason, f'{message} (skip_bad=True leaves such records out)') from e
        raise ValueError(message) from e
      found = e if isinstance(e, BadRecord) else BadRecord(i, 'unreadable', str(e))
      bad.append({'index': i, **found.as_dict()})
      continue
    items.append(resize(example, size) if size else example)
    kept.append(i)
  if not items and allow_empty and size:
    h, w = (size, size) if isinstance(size, int) else size
    return {'images': np.zeros((0, h, w, 3), np.uint8), 'labels': np.zeros(0, np.int32), 'boxes': [],
            'box_labels': [], 'difficult': [], 'ids': [], 'indices': np.zeros(0, np.int64), 'bad': bad}
  if not items:
    raise ValueError(f'no usable records in {type(source).__name__} ({len(bad)} bad)')
  shapes = {e['image'].shape for e in items}
  if len(shapes) > 1:
    raise ValueError(f'images of different sizes {sorted(shapes)[:3]}...: pass a size')
  out = {'images': np.stack([e['image'] for e in items]),
         'labels': np.asarray([e['label'] for e in items], np.int32),
         'boxes': [np.asarray(e['boxes'], np.float32).reshape(-1, 4) for e in items],
         'box_labels': [np.asarray(e['box_labels'], np.int32) for e in items],
         'difficult': [np.asarray(e.get('difficult', np.zeros(len(e['box_labels']))), bool) for e in items],
         'ids': [e['id'] for e in items], 'indices': np.asarray(kept, np.int64), 'bad': bad}
  if all('mask' in e for e in items):
    out['masks'] = np.stack([e['mask'] for e in items])
  return out


def batch_indices(num: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """The example indices of training batch `step`: a pure function of (num, batch_size, step, seed).

  Epoch e visits a permutation drawn from (seed, e) without replacement; a batch never spans two epochs
  (the epoch's last incomplete batch is dropped). Pure, so a resumed run sees the batches an
  uninterrupted one would.

  Args:
    num: the number of examples.
    batch_size: examples per batch.
    step: the training step.
    seed: the permutations' seed.

  Returns:
    int [batch_size].

  Raises:
    ValueError: a batch size outside 1..num.
  """
  if not 0 < batch_size <= num:
    raise ValueError(f'batch_size must be in 1..{num} (the number of examples), got {batch_size}')
  per_epoch = num // batch_size
  epoch, pos = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num)
  return order[pos * batch_size:(pos + 1) * batch_size]


def batches(arrays: dict, batch_size: int, *, seed: int, start_step: int = 0, num_steps: int | None = None):
  """Training batches of equal-length arrays, in `batch_indices`' order.

  Args:
    arrays: {name: array [N, ...]} (e.g. images and labels).
    batch_size: examples per batch.
    seed: the permutations' seed.
    start_step: the first step.
    num_steps: how many steps (None: without end).

  Yields:
    (step, {name: array[batch indices]}).
  """
  num = len(next(iter(arrays.values())))
  step = start_step
  while num_steps is None or step < start_step + num_steps:
    idx = batch_indices(num, batch_size, step, seed)
    yield step, {k: v[idx] for k, v in arrays.items()}
    step += 1


class Streamed:
  """A source read on demand for training, by a thread pool.

  `streamed[idx]` -> (images float32 [B, S, S, 3], labels int32 [B]) for an index array, resized to
  `size` and normalised. For sets too large for memory (ImageNet); `train.train_and_evaluate` takes it
  in place of arrays.
  """

  def __init__(self, source, size: int, mean, std, *, workers: int = 8):
    import concurrent.futures
    self.source, self.size, self.mean, self.std = source, size, mean, std
    self._pool = concurrent.futures.ThreadPoolExecutor(workers)

  def __len__(self) -> int:
    return len(self.source)

  def _one(self, i: int):
    ex = resize(self.source[int(i)], self.size)
    return ex['image'], ex['label']

  def __getitem__(self, idx) -> tuple[np.ndarray, np.ndarray]:
    items = list(self._pool.map(self._one, np.asarray(idx).reshape(-1)))
    images = normalise(np.stack([im for im, _ in items]), self.mean, self.std)
    return images, np.asarray([label for _, label in items], np.int32)
