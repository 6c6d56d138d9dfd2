"""Evaluation of saliency maps and weakly supervised localisation against ground truth.

Host-side numpy, one image at a time. Conventions shared by every function:

* A box is `(x0, y0, x1, y1)` in pixels, x1 / y1 EXCLUSIVE: a box covering pixel columns 0..9 has
  x0 = 0, x1 = 10, and area = (x1 - x0) * (y1 - y0). Float or int coordinates; they must be finite with
  x1 >= x0 and y1 >= y0 (a zero-area box is allowed).
* Rasterised (`mask_from_boxes`), a box covers the pixels whose centres (c + 0.5, r + 0.5) lie inside it:
  with integer coordinates exactly columns x0 .. x1 - 1 and rows y0 .. y1 - 1.
* Bad input (wrong shapes, NaN or inverted boxes, mismatched lengths) raises a ValueError that names it.

Protocols: the ILSVRC localisation rule (Russakovsky et al. 2015), used by Simonyan et al. 2013
Sect. 3.2 (`localisation_correct`, `localisation_error`); the "GT-known" box accuracy of CAM / Grad-CAM
style evaluations (`gt_known_hits`, `gt_known_accuracy`); the pointing game of Zhang et al. 2016 as run
by TorchRay (Fong et al. 2019) (`pointing_game` on boxes, `pointing_hits` on masks); the pixel ranks of
deletion / insertion (`pixel_ranks`) and the Spearman similarity of two maps (`spearman`); the weakly
supervised localisation metrics of Choe et al. 2020, MaxBoxAccV2 (`max_box_acc`, with wsolevaluation's
own box conventions, stated there) and PxAP (`pxap`). Scoring only: nothing here runs a model (the
metrics that do are in `faithfulness`; intervals and paired tests of per-image results: `stats`).
"""

import operator
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats

Box = tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------- validation


def _as_boxes(boxes, name: str, *, allow_empty: bool = False) -> np.ndarray:
  """float64 [..., 4] boxes, finite with x1 >= x0 and y1 >= y0; else a ValueError naming the bad box.

  With allow_empty, an empty sequence is no boxes, [0, 4].
  """
  try:
    b = np.asarray(boxes, np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must hold numeric boxes (x0, y0, x1, y1), got {boxes!r}') from e
  if allow_empty and b.size == 0:
    return b.reshape(0, 4)
  if b.ndim == 0 or b.shape[-1] != 4:
    raise ValueError(f'{name} must have shape [..., 4] (x0, y0, x1, y1), got shape {b.shape}')
  problems = (('is not finite', ~np.isfinite(b).all(-1)),
              ('has x1 < x0', b[..., 2] < b[..., 0]),
              ('has y1 < y0', b[..., 3] < b[..., 1]))
  for what, bad in problems:
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      where = f'{name}[{", ".join(map(str, idx))}]' if idx else name
      raise ValueError(f'{where} = {tuple(b[idx].tolist())} {what}: boxes are (x0, y0, x1, y1), '
                       'finite, with x1 >= x0 and y1 >= y0 (x1 / y1 exclusive)')
  return b


def _as_box_list(boxes, name: str) -> np.ndarray:
  """[M, 4] boxes; an empty sequence is [0, 4], a single box [4] is not accepted (ambiguous)."""
  b = _as_boxes(boxes, name, allow_empty=True)
  if b.ndim != 2:
    raise ValueError(f'{name} must be a list of boxes [M, 4], got shape {b.shape}')
  return b


def _as_box(box, name: str) -> np.ndarray:
  """One box [4]."""
  b = _as_boxes(box, name)
  if b.shape != (4,):
    raise ValueError(f'{name} must be one box (x0, y0, x1, y1), got shape {b.shape}')
  return b


def _ground_truth(labels, boxes, name: str) -> tuple[np.ndarray, np.ndarray]:
  """One image's objects: labels [M] and boxes [M, 4] of equal length."""
  b = _as_box_list(boxes, f'{name} boxes')
  lab = np.asarray(labels)
  if lab.size == 0:
    lab = lab.reshape(0)
  if lab.ndim != 1:
    raise ValueError(f'{name} labels must be one-dimensional [M], got shape {lab.shape}')
  if len(lab) != len(b):
    raise ValueError(f'{name} has {len(lab)} labels but {len(b)} boxes; they must pair up')
  return lab, b


def _as_float(x, name: str) -> float:
  try:
    return float(x)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must be a number, got {x!r}') from e


def _check_threshold(iou_threshold: float) -> float:
  t = _as_float(iou_threshold, 'iou_threshold')
  if not 0.0 <= t <= 1.0:  # also rejects NaN
    raise ValueError(f'iou_threshold must lie in [0, 1], got {iou_threshold!r}')
  return t


def _check_tolerance(tolerance: float) -> float:
  t = _as_float(tolerance, 'tolerance')
  if not (np.isfinite(t) and t >= 0):
    raise ValueError(f'tolerance must be a finite number of pixels >= 0, got {tolerance!r}')
  return t


def _as_mask(mask, name: str) -> np.ndarray:
  """A bool array; non-bool input must hold only 0 and 1."""
  m = np.asarray(mask)
  if m.dtype != bool:
    if not (np.issubdtype(m.dtype, np.number) and np.isin(m, (0, 1)).all()):
      raise ValueError(f'{name} must be a boolean mask (or hold only 0 / 1), got dtype {m.dtype}'
                       + ('' if m.dtype == object else ' with other values'))
    m = m.astype(bool)
  return m


def _same_length(name_a: str, a, name_b: str, b) -> None:
  if len(a) != len(b):
    raise ValueError(f'{name_a} has {len(a)} images but {name_b} has {len(b)}; they must pair up')


# --------------------------------------------------------------------------------------- box helpers


def box_iou(a, b) -> np.ndarray:
  """Intersection over union of boxes, broadcast over the leading axes.

  `box_iou(pred[:, None], gt[None])` is the [P, G] matrix. Boxes are (x0, y0, x1, y1), x1 / y1 exclusive,
  so boxes that only touch ([0, 0, 10, 10] and [10, 0, 20, 10]) have IoU 0. Where the union has zero area
  (two zero-area boxes) the IoU is 0, never NaN.

  Args:
    a: [..., 4] boxes.
    b: [..., 4] boxes.

  Returns:
    float64 of the broadcast shape (a NumPy scalar for two single boxes).

  Raises:
    ValueError: shapes that do not broadcast, or a box that is not finite or has x1 < x0 or y1 < y0.
  """
  a, b = _as_boxes(a, 'a'), _as_boxes(b, 'b')
  try:
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
  except ValueError as e:
    raise ValueError(f'box_iou: a {a.shape} and b {b.shape} do not broadcast over their leading axes') from e
  iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = iw * ih
  def area(x):
    return (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  iou = np.divide(inter, union, out=np.zeros(shape), where=union > 0)
  return iou[()]


def boxes_from_mask(mask) -> Box | None:
  """The box of a mask's True pixels; the inverse of `mask_from_boxes` for rectangular masks.

  Args:
    mask: bool [H, W] (or 0 / 1).

  Returns:
    (x0, y0, x1, y1) ints, x1 / y1 exclusive; None for an empty mask.

  Raises:
    ValueError: a mask that is not [H, W].
  """
  m = _as_mask(mask, 'mask')
  if m.ndim != 2:
    raise ValueError(f'mask must be [H, W], got shape {m.shape}')
  rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
  if not len(rows):
    return None
  return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_from_boxes(boxes, shape) -> np.ndarray:
  """The union mask of boxes, clipped to the image.

  A pixel (r, c) is covered when its centre (c + 0.5, r + 0.5) lies in [x0, x1) x [y0, y1): for integer
  coordinates, columns x0 .. x1 - 1 and rows y0 .. y1 - 1.

  Args:
    boxes: [M, 4] (M may be 0) or one box [4].
    shape: (H, W).

  Returns:
    bool [H, W].

  Raises:
    ValueError: a shape that is not two non-negative integers, or boxes of another shape.
  """
  try:
    h, w = (operator.index(s) for s in shape)
  except (TypeError, ValueError) as e:
    raise ValueError(f'shape must be two integers (H, W), got {shape!r}') from e
  if h < 0 or w < 0:
    raise ValueError(f'shape must be non-negative (H, W), got {shape!r}')
  b = _as_boxes(boxes, 'boxes', allow_empty=True)
  if b.ndim == 1:
    b = b[None]
  if b.ndim != 2:
    raise ValueError(f'boxes must be [M, 4] or one box [4], got shape {b.shape}')
  mask = np.zeros((h, w), bool)
  edges = np.ceil(b - 0.5).astype(np.int64)  # first covered index / one past the last
  x0, x1 = np.clip(edges[:, [0, 2]], 0, w).T
  y0, y1 = np.clip(edges[:, [1, 3]], 0, h).T
  for c0, r0, c1, r1 in zip(x0, y0, x1, y1):
    mask[r0:r1, c0:c1] = True
  return mask


def mask_iou(a, b, *, empty: float = 0.0) -> float:
  """Intersection over union of two boolean masks of the same shape (any number of dimensions).

  Args:
    a: a bool mask.
    b: a bool mask of a's shape.
    empty: what two empty masks (zero union) give: 0 by default (an IoU score should never reward
      predicting nothing, and 0 agrees with `box_iou`); 1.0 to compare two segmentations for agreement,
      NaN to leave such images out of a nanmean.

  Returns:
    The IoU, a float.

  Raises:
    ValueError: masks of different shapes.
  """
  a, b = _as_mask(a, 'a'), _as_mask(b, 'b')
  if a.shape != b.shape:
    raise ValueError(f'mask_iou: masks must have the same shape, got {a.shape} and {b.shape}')
  union = np.count_nonzero(a | b)
  if union == 0:
    return float(empty)
  return np.count_nonzero(a & b) / union


# ------------------------------------------------------------------------------- ILSVRC localisation


def _parse_guesses(guesses, name: str) -> list[tuple[object, np.ndarray | None]]:
  out = []
  for k, guess in enumerate(guesses):
    if isinstance(guess, str | bytes) or not isinstance(guess, Sequence | np.ndarray) or len(guess) != 2:
      raise ValueError(f'{name}[{k}] must be a (class, box) pair, got {guess!r}')
    cls, box = guess
    if np.ndim(cls) != 0:
      raise ValueError(f'{name}[{k}] class must be a single label, got {cls!r}')
    out.append((cls, None if box is None else _as_box(box, f'{name}[{k}] box')))
  return out


def _same_class(labels: np.ndarray, cls) -> np.ndarray:
  """Bool [M]: which ground-truth objects have class `cls`."""
  return np.array([label == cls for label in labels.tolist()], bool).reshape(len(labels))


def _class_match(labels: np.ndarray, boxes: np.ndarray, cls, box: np.ndarray, threshold: float) -> bool:
  """Does `box` reach IoU >= threshold with some ground-truth box of class `cls`?"""
  same = _same_class(labels, cls)
  return bool(same.any() and (box_iou(box, boxes[same]) >= threshold).any())


def _check_top_k(top_k) -> int:
  if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
    raise ValueError(f'top_k must be an integer >= 1, got {top_k!r}')
  return int(top_k)


def localisation_correct(guesses, gt_labels, gt_boxes, *, iou_threshold: float = 0.5) -> bool:
  """The ILSVRC localisation rule for one image: is some guess right in both class and box?

  Correct when some guess has the class of some ground-truth object and IoU >= `iou_threshold` with a
  ground-truth box of that class; a box matching an object of another class does not count. On ILSVRC
  CLS-LOC every object of an image has the image's one class, where this is exactly the official rule
  (Russakovsky et al. 2015, Sect. 4.2; Simonyan et al. 2013, Sect. 3.2). An image with no objects is
  never correct.

  Args:
    guesses: a sequence of (class, box) pairs, best first (ILSVRC allows 5); a box of None is a guess
      that cannot be correct.
    gt_labels: [M], the classes of all the image's objects.
    gt_boxes: [M, 4], their boxes.
    iou_threshold: the IoU a box needs.

  Returns:
    A bool.
  """
  threshold = _check_threshold(iou_threshold)
  labels, boxes = _ground_truth(gt_labels, gt_boxes, 'gt')
  parsed = _parse_guesses(guesses, 'guesses')
  return any(box is not None and _class_match(labels, boxes, cls, box, threshold) for cls, box in parsed)


def localisation_error(all_guesses, all_gt_labels, all_gt_boxes, *, top_k: int = 5,
                       iou_threshold: float = 0.5) -> float:
  """ILSVRC localisation error over a data set: the fraction of images not `localisation_correct`.

  Args:
    all_guesses: per image, a sequence of (class, box) pairs, best first.
    all_gt_labels: per image, labels [M_i].
    all_gt_boxes: per image, boxes [M_i, 4].
    top_k: how many guesses count (5: the top-5 localisation error of Sect. 3.2; 1: top-1).
    iou_threshold: the IoU a box needs.

  Returns:
    A float in [0, 1].

  Raises:
    ValueError: no images.
  """
  _check_top_k(top_k)
  _same_length('all_guesses', all_guesses, 'all_gt_labels', all_gt_labels)
  _same_length('all_guesses', all_guesses, 'all_gt_boxes', all_gt_boxes)
  if len(all_guesses) == 0:
    raise ValueError('localisation_error needs at least one image')
  correct = [localisation_correct(list(g)[:top_k], lab, box, iou_threshold=iou_threshold)
             for g, lab, box in zip(all_guesses, all_gt_labels, all_gt_boxes)]
  return 1.0 - float(np.mean(correct))


FAILURES = ('correct', 'wrong_classes', 'too_small', 'too_large', 'displaced')


def localisation_failure(guesses, gt_labels, gt_boxes, *, iou_threshold: float = 0.5,
                         area_ratio: float = 2.0) -> str:
  """Why one image's guesses pass or fail the ILSVRC rule (`localisation_correct`), one of `FAILURES`.

  'correct'; 'wrong_classes': no guess has a class of the image's objects; otherwise a guess has a right
  class but no such box reaches the IoU. Among those guesses, the box with the best IoU against a
  ground-truth box of its class is compared with that ground-truth box: area below 1 / area_ratio of it
  'too_small', above area_ratio times it 'too_large', else 'displaced'.

  Args:
    guesses: (class, box) pairs, best first.
    gt_labels: [M], the objects' classes.
    gt_boxes: [M, 4], their boxes.
    iou_threshold: the IoU a box needs.
    area_ratio: > 1, the area ratio beyond which a box is too small or too large.

  Returns:
    The category, a string.

  Raises:
    ValueError: area_ratio <= 1.
  """
  threshold = _check_threshold(iou_threshold)
  if not area_ratio > 1:
    raise ValueError(f'area_ratio must be > 1, got {area_ratio!r}')
  labels, boxes = _ground_truth(gt_labels, gt_boxes, 'gt')
  best = None  # over the guesses of a right class: (IoU, guessed box, the ground-truth box it overlaps most)
  for cls, box in _parse_guesses(guesses, 'guesses'):
    same = _same_class(labels, cls)
    if box is None or not same.any():
      continue
    ious = box_iou(box, boxes[same])
    j = int(np.argmax(ious))
    if best is None or ious[j] > best[0]:
      best = (float(ious[j]), box, boxes[same][j])
  if best is None:
    return 'wrong_classes'
  if best[0] >= threshold:  # the ILSVRC rule: some guess of a right class reaches the IoU
    return 'correct'
  def area(b):
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
  ratio = area(best[1]) / max(area(best[2]), 1e-12)
  return 'too_small' if ratio < 1 / area_ratio else 'too_large' if ratio > area_ratio else 'displaced'


def localisation_failures(all_guesses, all_gt_labels, all_gt_boxes, *, top_k: int = 5,
                          iou_threshold: float = 0.5, area_ratio: float = 2.0) -> dict:
  """`localisation_failure` of every image's first `top_k` guesses.

  Args:
    all_guesses: per image, (class, box) pairs, best first.
    all_gt_labels: per image, labels [M_i].
    all_gt_boxes: per image, boxes [M_i, 4].
    top_k: how many guesses count.
    iou_threshold: the IoU a box needs.
    area_ratio: as `localisation_failure` takes it.

  Returns:
    {'counts': {category: n} over `FAILURES`, 'per_image': [category]}; the share not 'correct' is the
    `localisation_error`.
  """
  _check_top_k(top_k)
  _same_length('all_guesses', all_guesses, 'all_gt_labels', all_gt_labels)
  _same_length('all_guesses', all_guesses, 'all_gt_boxes', all_gt_boxes)
  per_image = [localisation_failure(list(g)[:top_k], lab, box, iou_threshold=iou_threshold,
                                    area_ratio=area_ratio)
               for g, lab, box in zip(all_guesses, all_gt_labels, all_gt_boxes)]
  return {'counts': {c: per_image.count(c) for c in FAILURES}, 'per_image': per_image}


def gt_known_hits(boxes, gt_labels_per_image, gt_boxes_per_image, classes, *,
                  iou_threshold: float = 0.5) -> np.ndarray:
  """Per-image "GT-known" box hits: the class is given, only the box is judged.

  A hit when the box has IoU >= `iou_threshold` (0.5 in CAM / Grad-CAM) with some ground-truth box of the
  image's true class.

  Args:
    boxes: N predicted boxes (an [N, 4] array or a sequence), each for the true class `classes[i]`; a box
      of None (no localisation) is a miss.
    gt_labels_per_image: per image, labels [M_i].
    gt_boxes_per_image: per image, boxes [M_i, 4].
    classes: [N], each image's true class.
    iou_threshold: the IoU a box needs.

  Returns:
    bool [N].

  Raises:
    ValueError: a class that is not a single label, or an image with no ground-truth box of its class (the
      protocol presumes one).
  """
  threshold = _check_threshold(iou_threshold)
  _same_length('boxes', boxes, 'gt_labels_per_image', gt_labels_per_image)
  _same_length('boxes', boxes, 'gt_boxes_per_image', gt_boxes_per_image)
  _same_length('boxes', boxes, 'classes', classes)
  hits = np.zeros(len(boxes), bool)
  for i, (box, lab, gt, cls) in enumerate(zip(boxes, gt_labels_per_image, gt_boxes_per_image, classes)):
    labels, gt = _ground_truth(lab, gt, f'image {i} ground truth')
    if np.ndim(cls) != 0:
      raise ValueError(f'classes[{i}] must be a single label, got {cls!r}')
    if not any(label == cls for label in labels.tolist()):
      raise ValueError(f'image {i} has no ground-truth box of its class {cls!r} (labels {labels.tolist()})')
    if box is not None:
      hits[i] = _class_match(labels, gt, cls, _as_box(box, f'boxes[{i}]'), threshold)
  return hits


def gt_known_accuracy(boxes, gt_labels_per_image, gt_boxes_per_image, classes, *,
                      iou_threshold: float = 0.5) -> float:
  """"GT-known" box accuracy: the fraction of `gt_known_hits`.

  Args:
    boxes: as `gt_known_hits` takes them.
    gt_labels_per_image: as `gt_known_hits` takes them.
    gt_boxes_per_image: as `gt_known_hits` takes them.
    classes: as `gt_known_hits` takes them.
    iou_threshold: the IoU a box needs.

  Returns:
    A float in [0, 1].

  Raises:
    ValueError: no images, or as `gt_known_hits`.
  """
  hits = gt_known_hits(boxes, gt_labels_per_image, gt_boxes_per_image, classes, iou_threshold=iou_threshold)
  if not len(hits):
    raise ValueError('gt_known_accuracy needs at least one image')
  return float(hits.mean())


# ------------------------------------------------------------------------------------- pointing game


def _max_within(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> bool:
  """Is the (first) argmax of a 2-D map on the mask, or closer than `tolerance` px to it?

  TorchRay's test: squared Euclidean distance between pixel centres < tolerance ** 2, strictly, so a
  point exactly `tolerance` px away misses. Squared integer distances to the nearest mask pixel (from
  the exact distance transform) keep the boundary exact. On the mask is a hit even at tolerance 0,
  where TorchRay's strict test would accept nothing.
  """
  r, c = np.unravel_index(np.argmax(saliency), saliency.shape)
  _, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
  squared = (int(rows[r, c]) - r) ** 2 + (int(cols[r, c]) - c) ** 2
  return bool(squared == 0 or squared < tolerance ** 2)


def pointing_hits(maps, masks, *, tolerance: float = 0.0) -> np.ndarray:
  """The pointing game (Zhang et al. 2016) against masks: is each map's maximum on the object?

  A hit when the maximum (the first argmax) lies on the mask or less than `tolerance` pixels (Euclidean,
  strictly, as in TorchRay) from a mask pixel (TorchRay uses 15 px at ~224 px). An empty mask, and a flat
  map or one holding NaN or infinity (it points nowhere), is a miss. For boxes: `pointing_game`;
  summaries: `pointing_accuracy`.

  Args:
    maps: [N, H, W].
    masks: bool [N, H, W].
    tolerance: in pixels.

  Returns:
    bool [N].

  Raises:
    ValueError: maps and masks that are not both [N, H, W].
  """
  maps, masks = np.asarray(maps), np.asarray(masks, bool)
  if maps.shape != masks.shape or maps.ndim != 3:
    raise ValueError(f'maps {maps.shape} and masks {masks.shape} must both be [N, H, W]')
  hits = np.zeros(len(maps), bool)
  for i, (m, mask) in enumerate(zip(maps, masks)):
    m = m.astype(np.float64)
    if not mask.any() or not np.isfinite(m).all() or m.max() == m.min():
      continue
    hits[i] = _max_within(m, mask, tolerance)
  return hits


def pointing_game(maps, gt_boxes_per_image, *, tolerance: float = 15.0) -> np.ndarray:
  """The pointing game against boxes (Zhang et al. 2016, as in TorchRay, Fong et al. 2019).

  A hit when the map's maximum lies on the union of the boxes or less than `tolerance` pixels from it:
  Euclidean distance between pixel centres to the rasterised union (`mask_from_boxes`), strictly below the
  tolerance as in TorchRay (exactly `tolerance` px away misses). VOC's `difficult` objects stay in the
  union (as in TorchRay); leave out the images whose boxes of the class are all difficult
  (`pointing_played`). Ties: the first argmax (row-major) is the point. A map that is flat or holds any
  NaN or infinity points nowhere and is a miss. Summaries: `pointing_accuracy`.

  Args:
    maps: [N, H, W], or a list of N maps [H_i, W_i] of different sizes.
    gt_boxes_per_image: per image, the ground-truth boxes [M_i, 4] of the class its map is for (M_i >= 1:
      the game is only played on images that contain the class).
    tolerance: in pixels (TorchRay: 15 at ~224 px).

  Returns:
    bool [N].

  Raises:
    ValueError: maps of a bad shape or dtype, or an image with no box or with boxes covering no pixel.
  """
  tolerance = _check_tolerance(tolerance)
  if isinstance(maps, list | tuple):
    maps = [np.asarray(m) for m in maps]
    bad = [i for i, m in enumerate(maps) if m.ndim != 2]
    if bad:
      raise ValueError(f'maps[{bad[0]}] must be [H, W], got shape {maps[bad[0]].shape}')
  else:
    maps = np.asarray(maps)
    if maps.ndim != 3:
      raise ValueError(f'maps must be [N, H, W] or a list of [H, W] maps, got shape {maps.shape}')
  _same_length('maps', maps, 'gt_boxes_per_image', gt_boxes_per_image)
  hits = np.zeros(len(maps), bool)
  for i, (m, boxes) in enumerate(zip(maps, gt_boxes_per_image)):
    if not np.issubdtype(m.dtype, np.number) and m.dtype != bool:
      raise ValueError(f'maps[{i}] must be numeric, got dtype {m.dtype}')
    if m.size == 0:
      raise ValueError(f'maps[{i}] is empty, shape {m.shape}')
    b = _as_box_list(boxes, f'gt_boxes_per_image[{i}]')
    if not len(b):
      raise ValueError(f'image {i} has no ground-truth box: the pointing game is only played on images '
                       'that contain the class')
    mask = mask_from_boxes(b, m.shape)
    if not mask.any():
      raise ValueError(f'image {i}: its boxes {b.tolist()} cover no pixel of its map of shape {m.shape}')
    m = m.astype(np.float64)
    if not np.isfinite(m).all() or m.max() == m.min():
      continue
    hits[i] = _max_within(m, mask, tolerance)
  return hits


def pointing_played(difficult_per_image) -> np.ndarray:
  """Which images the pointing game is played on, as in TorchRay on VOC.

  Not those whose boxes of the class are all marked `difficult`; an image with no box is not played
  either.

  Args:
    difficult_per_image: per image, bool [M_i], one flag per box of the class.

  Returns:
    bool [N].
  """
  played = np.zeros(len(difficult_per_image), bool)
  for i, flags in enumerate(difficult_per_image):
    flags = _as_mask(np.asarray(flags).reshape(-1), f'difficult_per_image[{i}]')
    played[i] = len(flags) > 0 and not flags.all()
  return played


def pointing_accuracy(hits, classes, *, played=None) -> dict:
  """The pointing game's two summaries: per image, and TorchRay's mean over classes.

  Args:
    hits: bool [N] (`pointing_game` / `pointing_hits`).
    classes: [N], the class each map is for.
    played: bool [N], the images that count (`pointing_played`; default all).

  Returns:
    {'per_image': the fraction of hits, 'class_mean': the mean over classes of each class's fraction of
    hits (TorchRay's `accuracy`), 'per_class': {class: fraction}, 'played': n, 'excluded': N - n}; the
    rates are NaN when nothing is played.
  """
  hits = _as_mask(np.asarray(hits).reshape(-1), 'hits')
  classes = np.asarray(classes).reshape(-1)
  played = np.ones(len(hits), bool) if played is None else _as_mask(np.asarray(played).reshape(-1), 'played')
  _same_length('hits', hits, 'classes', classes)
  _same_length('hits', hits, 'played', played)
  hits, classes = hits[played], classes[played]
  per_class = {c.item(): float(hits[classes == c].mean()) for c in np.unique(classes)}
  return {'per_image': float(hits.mean()) if len(hits) else float('nan'),
          'class_mean': float(np.mean(list(per_class.values()))) if per_class else float('nan'),
          'per_class': per_class, 'played': int(played.sum()), 'excluded': int((~played).sum())}


def mass_inside(maps, masks) -> np.ndarray:
  """The fraction of each map's total (non-negative) mass that falls on the object mask.

  Args:
    maps: [N, H, W], non-negative (e.g. |gradient|).
    masks: bool [N, H, W].

  Returns:
    [N]; a map with zero total mass gives 0.

  Raises:
    ValueError: maps and masks that are not both [N, H, W].
  """
  maps, masks = np.asarray(maps, np.float64), np.asarray(masks, bool)
  if maps.shape != masks.shape or maps.ndim != 3:
    raise ValueError(f'maps {maps.shape} and masks {masks.shape} must both be [N, H, W]')
  total = maps.sum(axis=(1, 2))
  inside = np.where(masks, maps, 0).sum(axis=(1, 2))
  return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


# ------------------------------------------------------------------------- pixel ranks (deletion / insertion)


def pixel_ranks(maps) -> np.ndarray:
  """Each pixel's rank in its map, 0 for the most salient; ties in raster order, a NaN least salient.

  Args:
    maps: [N, H, W].

  Returns:
    int32 [N, H, W].

  Raises:
    ValueError: maps that are not [N, H, W].
  """
  maps = np.asarray(maps, np.float64)
  if maps.ndim != 3:
    raise ValueError(f'maps must be [N, H, W], got shape {maps.shape}')
  flat = np.nan_to_num(maps.reshape(len(maps), -1), nan=-np.inf)
  order = np.argsort(-flat, axis=1, kind='stable')
  ranks = np.empty_like(order)
  np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(maps), 0), axis=1)
  return ranks.reshape(maps.shape).astype(np.int32)


# ------------------------------------------------------------------------- sanity: map similarity


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman rank correlation of two maps of one shape (flattened).

  Args:
    a: a map.
    b: a map of a's shape.

  Returns:
    rho, a float; 0 when either map is constant (undefined).

  Raises:
    ValueError: maps of different shapes, or holding NaN or inf (their ranks would mean nothing).
  """
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f'spearman needs two maps of one shape, got {a.shape} and {b.shape}')
  for name, m in (('first', a), ('second', b)):
    if not np.all(np.isfinite(m)):
      raise ValueError(f'spearman: the {name} map holds {int(np.sum(~np.isfinite(m)))} NaN or infinite '
                       'values')
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return 0.0
  rho = stats.spearmanr(np.ravel(a), np.ravel(b)).statistic
  return float(rho) if np.isfinite(rho) else 0.0


# ----------------------------------------------------------------------------------------- WSOL metrics

# The score-map thresholds of Choe et al. 2020 (wsolevaluation's cam_curve_interval 0.01): 0, 0.01, ..., 0.99,
# made as it makes them (np.arange), so that each threshold is the same float.
CAM_THRESHOLDS = tuple(float(t) for t in np.arange(0, 1, 0.01))
IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def normalise_map(saliency) -> np.ndarray:
  """A map min-max normalised to [0, 1]; a constant map is all zeros.

  Args:
    saliency: [H, W].

  Returns:
    float64 [H, W].

  Raises:
    ValueError: a map that is not [H, W] or holds NaN or inf (never scored as something else).
  """
  m = np.asarray(saliency, np.float64)
  if m.ndim != 2:
    raise ValueError(f'a map must be [H, W], got shape {m.shape}')
  if not np.all(np.isfinite(m)):
    raise ValueError('a map holds NaN or infinite values: no box or pixel score is computed from it')
  lo, hi = m.min(), m.max()
  return np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)


def _check_cam_thresholds(cam_thresholds) -> np.ndarray:
  t = np.asarray(CAM_THRESHOLDS if cam_thresholds is None else cam_thresholds, np.float64).reshape(-1)
  if not len(t) or not np.all((t >= 0) & (t < 1)):
    raise ValueError(f'cam_thresholds must be values in [0, 1), got {cam_thresholds!r}')
  return t


_EIGHT = np.ones((3, 3), bool)  # foreground regions: 8-connected; holes: 4-connected (scipy's default)


def threshold_boxes(normalised, cam_thresholds=None, *, multi_contour: bool = True) -> list[np.ndarray]:
  """The boxes wsolevaluation cuts from one normalised map at each score-map threshold.

  As wsolevaluation (Choe et al. 2020) does, written from its definition: the map is quantised to 8 bits
  (`floor(255 m)`), a pixel is foreground where that value exceeds `int(threshold * its maximum)`, and
  each contour of the foreground (OpenCV's border following: the outer border of every 8-connected region
  and the border of every hole, a 4-connected background region not touching the image edge) gives the
  box of its border pixels, (x, y, x + w, y + h) with x1 / y1 then clipped to W - 1 / H - 1: one pixel
  wider and taller than the region unless it touches the right / bottom edge. A hole's border pixels
  surround it, so its box is the hole's grown by one pixel. No foreground: the box (0, 0, 0, 0). Without
  `multi_contour` only the largest region's box; OpenCV ranks contours by the area of the polygon
  through their border pixels, this function by the region's pixel count (they agree except between
  regions of nearly equal size).

  Args:
    normalised: [H, W] in [0, 1] (`normalise_map`).
    cam_thresholds: [T] score-map thresholds (default `CAM_THRESHOLDS`).
    multi_contour: every contour's box, or the largest region's only.

  Returns:
    Per threshold, int [k, 4] boxes, inclusive (x0, y0, x1, y1) as wsolevaluation writes them.
  """
  q = (np.asarray(normalised, np.float64) * 255).astype(np.uint8)
  h, w = q.shape
  top = int(q.max())
  out = []
  for t in _check_cam_thresholds(cam_thresholds):
    fg = q > int(t * top)
    if not fg.any():
      out.append(np.zeros((1, 4), np.int64))
      continue
    regions, n = ndimage.label(fg, structure=_EIGHT)
    spans = ndimage.find_objects(regions)
    if not multi_contour:
      sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
      spans = [spans[int(np.argmax(sizes))]]
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in spans]
    if multi_contour:
      gaps, _ = ndimage.label(~fg)
      edge = np.unique(np.concatenate([gaps[0], gaps[-1], gaps[:, 0], gaps[:, -1]]))
      for label, s in enumerate(ndimage.find_objects(gaps), start=1):
        if s is not None and label not in edge:
          boxes.append((s[1].start - 1, s[0].start - 1, s[1].stop + 1, s[0].stop + 1))
    b = np.array(boxes, np.int64)
    b[:, 2], b[:, 3] = np.minimum(b[:, 2], w - 1), np.minimum(b[:, 3], h - 1)
    out.append(b)
  return out


def _inclusive_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """IoU [P, G] of inclusive boxes with wsolevaluation's +1 in widths, heights and areas.

  0 where the union is empty.
  """
  x0 = np.maximum(pred[:, None, 0], gt[None, :, 0])
  y0 = np.maximum(pred[:, None, 1], gt[None, :, 1])
  x1 = np.minimum(pred[:, None, 2], gt[None, :, 2])
  y1 = np.minimum(pred[:, None, 3], gt[None, :, 3])
  inter = np.maximum(0, x1 - x0 + 1) * np.maximum(0, y1 - y0 + 1)
  area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
  area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
  union = area_p[:, None] + area_g[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_ious(maps, boxes, *, cam_thresholds=None, multi_contour: bool = True) -> np.ndarray:
  """Each image's best IoU at each score-map threshold: the per-image half of MaxBoxAccV2.

  The boxes of `threshold_boxes` of each image's normalised map against its ground-truth boxes, with
  wsolevaluation's conventions (`max_box_acc`), so that a set evaluated in parts can be scored as a whole.

  Args:
    maps: [N, H, W] (or N maps of their own sizes).
    boxes: per image, ground-truth boxes [M_i, 4], x1 / y1 exclusive.
    cam_thresholds: [T] score-map thresholds (default `CAM_THRESHOLDS`).
    multi_contour: as `threshold_boxes` takes it.

  Returns:
    float [T, N].

  Raises:
    ValueError: as many maps as images of boxes are needed, each with at least one box.
  """
  cams = _check_cam_thresholds(cam_thresholds)
  if len(maps) != len(boxes):
    raise ValueError(f'{len(maps)} maps but {len(boxes)} images of boxes')
  best_iou = np.zeros((len(cams), len(maps)))
  for i, (m, gt) in enumerate(zip(maps, boxes)):
    gt = _as_boxes(gt, f'boxes[{i}]', allow_empty=True).reshape(-1, 4)
    if not len(gt):
      raise ValueError(f'boxes[{i}]: an image with no ground-truth box cannot be scored')
    inclusive = np.round(gt).astype(np.int64) - np.array([0, 0, 1, 1])
    for j, b in enumerate(threshold_boxes(normalise_map(m), cams, multi_contour=multi_contour)):
      best_iou[j, i] = _inclusive_iou(b, inclusive).max()
  return best_iou


def max_box_acc_from_ious(best_iou, *, iou_thresholds=IOU_THRESHOLDS, cam_thresholds=None) -> dict:
  """`max_box_acc` from `box_ious`' best IoUs (e.g. of several chunks, concatenated over N).

  Args:
    best_iou: [T, N].
    iou_thresholds: the IoU thresholds.
    cam_thresholds: the [T] score-map thresholds `box_ious` used.

  Returns:
    As `max_box_acc`.

  Raises:
    ValueError: best IoUs that are not [T, N >= 1].
  """
  ious = tuple(float(_check_threshold(t)) for t in iou_thresholds)
  cams = _check_cam_thresholds(cam_thresholds)
  best_iou = np.asarray(best_iou, np.float64)
  if best_iou.ndim != 2 or best_iou.shape[0] != len(cams) or not best_iou.shape[1]:
    raise ValueError(f'best IoUs must be [{len(cams)} thresholds, N >= 1 images], got {best_iou.shape}')
  correct = np.stack([best_iou >= t for t in ious])  # [len(ious), T, N]
  accuracy = correct.mean(axis=2)
  best = accuracy.argmax(axis=1)
  box_acc = {t: float(accuracy[k, best[k]]) for k, t in enumerate(ious)}
  return {'box_acc': box_acc, 'max_box_acc_v2': float(np.mean(list(box_acc.values()))),
          'best_threshold': {t: float(cams[best[k]]) for k, t in enumerate(ious)},
          'cam_thresholds': cams.tolist(), 'accuracy': accuracy, 'correct': correct}


def max_box_acc(maps, boxes, *, iou_thresholds=IOU_THRESHOLDS, cam_thresholds=None,
                multi_contour: bool = True) -> dict:
  """MaxBoxAccV2 (Choe et al., CVPR 2020): per IoU threshold, the box accuracy at its best map threshold.

  Maps are min-max normalised per image here (`normalise_map`); boxes are turned into wsolevaluation's
  inclusive ones (x1 - 1, y1 - 1). At each score-map threshold each image gets the boxes of
  `threshold_boxes`; an image is correct when one of them reaches the IoU threshold with one ground-truth
  box, the IoU computed with wsolevaluation's +1 in box sides and areas. The numbers equal
  wsolevaluation's `BoxEvaluator(multi_contour_eval=True)` on the same maps and boxes, image for image
  (its accuracies are percentages; here fractions).

  Args:
    maps: [N, H, W] (or N maps of their own sizes).
    boxes: per image, ground-truth boxes [M_i, 4] in this package's convention (x1 / y1 exclusive).
    iou_thresholds: the IoU thresholds (0.3, 0.5, 0.7: MaxBoxAccV2).
    cam_thresholds: [T] score-map thresholds (default `CAM_THRESHOLDS`).
    multi_contour: every contour's box, or the largest region's only.

  Returns:
    {'box_acc': {iou: the best accuracy}, 'max_box_acc_v2': their mean, 'best_threshold': {iou: the lowest
    score-map threshold reaching it}, 'cam_thresholds': [T], 'accuracy': [len(iou), T] the accuracy at
    every threshold, 'correct': bool [len(iou), T, N] per image (for intervals and for a threshold chosen
    on another set)}.

  Raises:
    ValueError: no images, or as `box_ious`.
  """
  if not len(maps):
    raise ValueError('max_box_acc needs at least one image')
  return max_box_acc_from_ious(box_ious(maps, boxes, cam_thresholds=cam_thresholds,
                                        multi_contour=multi_contour),
                               iou_thresholds=iou_thresholds, cam_thresholds=cam_thresholds)


def pixel_histograms(maps, masks, *, ignore=None, cam_thresholds=None) -> np.ndarray:
  """Per image, the histograms of its normalised map's scores on the object and off it: PxAP's per-image half.

  Args:
    maps: [N, H, W].
    masks: bool [N, H, W], the objects.
    ignore: bool [N, H, W] pixels left out of both classes, or None.
    cam_thresholds: [T] thresholds (default `CAM_THRESHOLDS`).

  Returns:
    [N, 2, T + 2] counts (bins: the thresholds' intervals, then [1, 2) and [2, 3]).

  Raises:
    ValueError: as many maps as masks (and ignore masks) of the same shapes are needed.
  """
  cams = _check_cam_thresholds(cam_thresholds)
  edges = np.append(cams, [1.0, 2.0, 3.0])
  if len(maps) != len(masks) or (ignore is not None and len(ignore) != len(maps)):
    raise ValueError(f'{len(maps)} maps, {len(masks)} masks' + ('' if ignore is None else
                                                                  f', {len(ignore)} ignore masks'))
  out = np.zeros((len(maps), 2, len(edges) - 1))
  for i, m in enumerate(maps):
    m = normalise_map(m)
    mask = _as_mask(masks[i], f'masks[{i}]')
    skip = np.zeros_like(mask) if ignore is None else _as_mask(ignore[i], f'ignore[{i}]')
    if mask.shape != m.shape or skip.shape != m.shape:
      raise ValueError(f'image {i}: map {m.shape}, mask {mask.shape}, ignore {skip.shape} differ')
    out[i, 0] = np.histogram(m[mask & ~skip], bins=edges)[0]
    out[i, 1] = np.histogram(m[~mask & ~skip], bins=edges)[0]
  return out


def pxap_from_histograms(histograms) -> float:
  """PxAP from `pixel_histograms`.

  Args:
    histograms: [N, 2, B] (summed over the images here) or their sum [2, B].

  Returns:
    PxAP, a fraction.

  Raises:
    ValueError: no foreground or no background pixel.
  """
  h = np.asarray(histograms, np.float64)
  fg_hist, bg_hist = (h.sum(axis=0) if h.ndim == 3 else h)
  if not fg_hist.sum() or not bg_hist.sum():
    raise ValueError('PxAP needs foreground and background pixels')
  tp, fp = np.cumsum(fg_hist[::-1]), np.cumsum(bg_hist[::-1])  # "score >= edge", highest edge first
  predicted = tp + fp > 0
  precision = np.where(predicted, tp / np.where(predicted, tp + fp, 1), 0.0)
  recall = tp / fg_hist.sum()
  return float(np.sum((precision[1:] * np.diff(recall))[predicted[1:]]))


def pxap(maps, masks, *, ignore=None, cam_thresholds=None) -> float:
  """PxAP (Choe et al. 2020): the average precision of the pixels' scores against the object masks.

  Over the whole set, from score histograms as wsolevaluation's `MaskEvaluator` computes it. The scores
  are binned at the thresholds and [1, 2), [2, 3]; from the highest bin down, precision P_k and recall
  R_k of "score >= bin's left edge"; PxAP = sum_k P_k (R_k - R_{k-1}) over the bins where something is
  predicted.

  Args:
    maps: [N, H, W], min-max normalised per image here.
    masks: bool [N, H, W].
    ignore: bool [N, H, W] pixels left out of both classes, or None.
    cam_thresholds: [T] thresholds (default 0, 0.01, ..., 0.99).

  Returns:
    PxAP, a fraction (wsolevaluation prints percentages).
  """
  return pxap_from_histograms(pixel_histograms(maps, masks, ignore=ignore, cam_thresholds=cam_thresholds))
