"""Known answers for the localisation, pointing-game, deletion / insertion and sanity metrics."""

import jax
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from saliency_jax import faithfulness, metrics, models, saliency

# ------------------------------------------------------------------------------------------- box_iou


@pytest.mark.parametrize('a, b, expected', [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),                 # identical
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),               # disjoint
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),                # touching: x1 is exclusive
    ([0, 0, 10, 10], [0, 10, 10, 20], 0.0),                # touching vertically
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),            # half of each overlaps: 50 / (100 + 100 - 50)
    ([0, 0, 10, 10], [0, 0, 10, 5], 0.5),                  # one contains the other, half its area
    ([0, 0, 4, 4], [2, 2, 6, 6], 4 / 28),                  # 2x2 corner overlap
    ([3, 3, 4, 4], [3, 3, 4, 4], 1.0),                     # a 1-pixel box against itself
    ([3, 3, 4, 4], [0, 0, 10, 10], 1 / 100),               # a 1-pixel box inside a 10x10 one
    ([3, 3, 4, 4], [4, 3, 5, 4], 0.0),                     # neighbouring pixels
    ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),                     # zero-area union: 0, not NaN
    ([5, 5, 5, 9], [0, 0, 10, 10], 0.0),                   # zero-area box
    ([0.5, 0, 10.5, 10], [0, 0, 10, 10], 95 / 105),        # float coordinates
])
def test_box_iou_known_answers(a, b, expected):
  iou = metrics.box_iou(a, b)
  assert np.ndim(iou) == 0
  assert iou == pytest.approx(expected, abs=1e-12)
  assert metrics.box_iou(b, a) == pytest.approx(expected, abs=1e-12)


def test_box_iou_int_and_float_agree():
  a, b = np.array([[1, 2, 7, 9]]), np.array([[3, 1, 8, 5]])  # inter 4 * 3 = 12, union 42 + 20 - 12 = 50
  assert metrics.box_iou(a, b) == pytest.approx([12 / 50])
  assert metrics.box_iou(a.astype(np.float32), b.astype(float)) == pytest.approx([12 / 50])


def test_box_iou_broadcasts_to_a_matrix():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 50, (7, 2))
  pred = np.concatenate([xy, xy + rng.uniform(0, 30, (7, 2))], 1)
  gt = np.array([[0, 0, 10, 10], [5, 5, 40, 40], [20, 0, 60, 30]], float)
  matrix = metrics.box_iou(pred[:, None], gt[None])
  assert matrix.shape == (7, 3)
  for i in range(7):
    for j in range(3):
      assert matrix[i, j] == metrics.box_iou(pred[i], gt[j])
  assert metrics.box_iou(pred[:, None, None], gt[None, :, None]).shape == (7, 3, 1)
  assert metrics.box_iou(pred[0], gt).shape == (3,)
  assert ((matrix >= 0) & (matrix <= 1)).all()


def test_box_iou_bad_input():
  with pytest.raises(ValueError, match=r'a\[1\] = \(5\.0, 0\.0, 3\.0, 10\.0\) has x1 < x0'):
    metrics.box_iou([[0, 0, 1, 1], [5, 0, 3, 10]], [0, 0, 1, 1])
  with pytest.raises(ValueError, match=r'b = .* has y1 < y0'):
    metrics.box_iou([0, 0, 1, 1], [0, 5, 1, 1])
  with pytest.raises(ValueError, match=r'b\[0\] .* is not finite'):
    metrics.box_iou([0, 0, 1, 1], [[0, np.nan, 1, 1]])
  with pytest.raises(ValueError, match=r'shape \[\.\.\., 4\]'):
    metrics.box_iou([0, 0, 1], [0, 0, 1, 1])
  with pytest.raises(ValueError, match='do not broadcast'):
    metrics.box_iou(np.zeros((3, 4)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match='numeric'):
    metrics.box_iou(['a', 'b', 'c', 'd'], [0, 0, 1, 1])


# ------------------------------------------------------------------------------------------ mask_iou


def test_mask_iou_known_answers():
  a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
  a[0:2, 0:2] = True
  b[0:2, 1:3] = True
  assert metrics.mask_iou(a, b) == pytest.approx(2 / 6)
  assert metrics.mask_iou(a, a) == 1.0
  assert metrics.mask_iou(a, ~a) == 0.0
  assert metrics.mask_iou(a.astype(np.uint8), b.astype(int)) == pytest.approx(2 / 6)


def test_mask_iou_agrees_with_box_iou_on_rectangles():
  a = metrics.mask_from_boxes([2, 3, 9, 8], (12, 12))
  b = metrics.mask_from_boxes([5, 1, 11, 6], (12, 12))
  assert metrics.mask_iou(a, b) == pytest.approx(metrics.box_iou([2, 3, 9, 8], [5, 1, 11, 6]))


def test_mask_iou_both_empty():
  empty = np.zeros((3, 5), bool)
  assert metrics.mask_iou(empty, empty) == 0.0  # the documented default
  assert metrics.mask_iou(empty, empty, empty=1.0) == 1.0
  assert np.isnan(metrics.mask_iou(empty, empty, empty=np.nan))
  one = empty.copy()
  one[1, 1] = True
  assert metrics.mask_iou(empty, one, empty=1.0) == 0.0  # `empty` only applies to an empty union


def test_mask_iou_bad_input():
  with pytest.raises(ValueError, match='same shape'):
    metrics.mask_iou(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
  with pytest.raises(ValueError, match='boolean mask'):
    metrics.mask_iou(np.full((2, 2), 0.5), np.zeros((2, 2), bool))


# ------------------------------------------------------------------------------- ILSVRC localisation

# One image, three objects of two classes.
GT_LABELS = [3, 7, 3]
GT_BOXES = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]]


@pytest.mark.parametrize('guesses, expected', [
    ([(3, [0, 0, 10, 10])], True),               # right class, right box
    ([(3, [50, 50, 60, 60])], True),             # the class's second box
    ([(3, [20, 20, 40, 40])], False),            # right class, but the box is the class-7 object's
    ([(7, [0, 0, 10, 10])], False),              # class 7 is present, but this box is a class-3 object's
    ([(5, [0, 0, 10, 10])], False),              # right box, class not in the image
    ([(3, [0, 0, 10, 5])], True),                # IoU exactly 0.5 counts
    ([(3, [0, 0, 10, 4])], False),               # IoU 0.4
    ([(3, [100, 100, 120, 120])], False),        # right class, box elsewhere
    ([(5, [0, 0, 10, 10]), (3, [0, 0, 10, 10])], True),   # the second guess
    ([(3, None), (7, [20, 20, 40, 40])], True),  # a None box is a guess that cannot be correct
    ([(3, None)], False),
    ([], False),
])
def test_localisation_correct_known_answers(guesses, expected):
  assert metrics.localisation_correct(guesses, GT_LABELS, GT_BOXES) is expected


def test_localisation_correct_threshold_and_edge_cases():
  guess = [(3, [0, 0, 10, 5])]                   # IoU 0.5
  assert metrics.localisation_correct(guess, GT_LABELS, GT_BOXES, iou_threshold=0.5)
  assert not metrics.localisation_correct(guess, GT_LABELS, GT_BOXES, iou_threshold=0.51)
  assert metrics.localisation_correct(guess, np.array(GT_LABELS), np.array(GT_BOXES, np.float32))
  assert not metrics.localisation_correct(guess, [], [])  # an image without objects
  wnids = ['n01440764', 'n02102040']
  assert metrics.localisation_correct([('n02102040', [0, 0, 5, 5])], wnids, [[0, 0, 9, 9], [0, 0, 5, 5]])
  assert not metrics.localisation_correct([('n01440764', [0, 0, 5, 5])], wnids, [[0, 0, 9, 9], [0, 0, 5, 5]])


def test_localisation_error_top1_top5():
  right, wrong = (3, [0, 0, 10, 10]), (5, [0, 0, 10, 10])
  all_guesses = [
      [right, wrong, wrong, wrong, wrong],   # correct at 1: counts for top-1 and top-5
      [wrong, right, wrong, wrong, wrong],   # correct at 2: top-5 only
      [wrong] * 5 + [right],                 # correct at 6: beyond top-5
      [wrong] * 5,                           # never
  ]
  labels, boxes = [GT_LABELS] * 4, [GT_BOXES] * 4
  assert metrics.localisation_error(all_guesses, labels, boxes, top_k=1) == pytest.approx(3 / 4)
  assert metrics.localisation_error(all_guesses, labels, boxes) == pytest.approx(2 / 4)
  assert metrics.localisation_error(all_guesses, labels, boxes, top_k=6) == pytest.approx(1 / 4)
  assert isinstance(metrics.localisation_error(all_guesses, labels, boxes), float)
  assert metrics.localisation_error(all_guesses, labels, boxes, iou_threshold=1.0, top_k=2) == 0.5


def test_localisation_bad_input():
  with pytest.raises(ValueError, match='3 labels but 2 boxes'):
    metrics.localisation_correct([(3, [0, 0, 1, 1])], [3, 7, 3], [[0, 0, 1, 1], [0, 0, 2, 2]])
  with pytest.raises(ValueError, match=r'guesses\[0\] must be a \(class, box\) pair'):
    metrics.localisation_correct([[0, 0, 1, 1]], GT_LABELS, GT_BOXES)
  with pytest.raises(ValueError, match=r'guesses\[1\] box = .* is not finite'):
    metrics.localisation_correct([(3, [0, 0, 1, 1]), (3, [0, 0, np.nan, 1])], GT_LABELS, GT_BOXES)
  with pytest.raises(ValueError, match=r'gt boxes\[1\] .* has x1 < x0'):
    metrics.localisation_correct([(3, [0, 0, 1, 1])], [3, 7], [[0, 0, 1, 1], [9, 0, 1, 1]])
  with pytest.raises(ValueError, match=r'list of boxes \[M, 4\]'):
    metrics.localisation_correct([(3, [0, 0, 1, 1])], [3], [0, 0, 1, 1])
  with pytest.raises(ValueError, match='iou_threshold'):
    metrics.localisation_correct([], GT_LABELS, GT_BOXES, iou_threshold=1.5)
  with pytest.raises(ValueError, match='top_k'):
    metrics.localisation_error([[]], [GT_LABELS], [GT_BOXES], top_k=0)
  with pytest.raises(ValueError, match='all_guesses has 2 images but all_gt_labels has 1'):
    metrics.localisation_error([[], []], [GT_LABELS], [GT_BOXES])
  with pytest.raises(ValueError, match='at least one image'):
    metrics.localisation_error([], [], [])


# ------------------------------------------------------------------------------------------ GT-known


def test_gt_known_accuracy():
  labels, boxes = [GT_LABELS] * 4, [GT_BOXES] * 4
  classes = [3, 7, 3, 3]
  pred = [[50, 50, 60, 60],   # class 3's second box: hit
          [0, 0, 10, 10],     # true class 7, but this is a class-3 box: miss
          None,               # no localisation: miss
          [0, 0, 10, 5]]      # IoU exactly 0.5: hit
  hits = metrics.gt_known_hits(pred, labels, boxes, classes)
  assert hits.dtype == bool and hits.tolist() == [True, False, False, True]
  acc = metrics.gt_known_accuracy(pred, labels, boxes, classes)
  assert isinstance(acc, float) and acc == 0.5
  assert metrics.gt_known_accuracy(pred, labels, boxes, classes, iou_threshold=0.6) == 0.25
  array_pred = np.array([[50, 50, 60, 60], [20, 20, 40, 40]], float)
  assert metrics.gt_known_hits(array_pred, labels[:2], boxes[:2], [3, 7]).tolist() == [True, True]


def test_gt_known_bad_input():
  with pytest.raises(ValueError, match='image 0 has no ground-truth box of its class 5'):
    metrics.gt_known_hits([[0, 0, 1, 1]], [GT_LABELS], [GT_BOXES], [5])
  with pytest.raises(ValueError, match='boxes has 2 images but classes has 1'):
    metrics.gt_known_hits([[0, 0, 1, 1]] * 2, [GT_LABELS] * 2, [GT_BOXES] * 2, [3])
  with pytest.raises(ValueError, match=r'boxes\[0\] = .* has y1 < y0'):
    metrics.gt_known_hits([[0, 5, 1, 1]], [GT_LABELS], [GT_BOXES], [3])
  with pytest.raises(ValueError, match='at least one image'):
    metrics.gt_known_accuracy([], [], [], [])


# ------------------------------------------------------------------------------------- pointing game


def _peak(shape, row, col):
  m = np.zeros(shape)
  m[row, col] = 1.0
  return m


BOX = [[10, 10, 20, 20]]  # columns / rows 10..19


@pytest.mark.parametrize('row, col, tolerance, hit', [
    (15, 15, 0, True),       # inside
    (10, 19, 0, True),       # the box's last column is inside
    (15, 20, 0, False),      # the first column outside
    (15, 29, 15, True),      # 10 px right of the box
    (15, 33, 15, True),      # 14 px: just inside
    (15, 34, 15, False),     # exactly 15 px: TorchRay's test is strict (distance < tolerance)
    (15, 34, 15.01, True),   # a hair more tolerance
    (15, 35, 15, False),     # 16 px
    (22, 23, 5, False),      # diagonal from (19, 19): hypot(3, 4) = 5 exactly
    (22, 22, 5, True),       # hypot(3, 3) = 4.2
    (15, 39, 15, False),     # 20 px right of the box
    (0, 15, 15, True),       # 10 px above
    (29, 29, 15, True),      # diagonal: hypot(10, 10) = 14.1
    (31, 31, 15, False),     # diagonal: hypot(12, 12) = 17.0 (a chessboard distance of 12 would hit)
])
def test_pointing_game_tolerance(row, col, tolerance, hit):
  maps = _peak((50, 60), row, col)[None]
  assert metrics.pointing_game(maps, [BOX], tolerance=tolerance).tolist() == [hit]


def test_pointing_game_default_tolerance_is_15():
  maps = np.stack([_peak((50, 60), 15, 29), _peak((50, 60), 15, 39)])
  assert metrics.pointing_game(maps, [BOX, BOX]).tolist() == [True, False]


def test_pointing_game_union_of_boxes_and_lists_of_sizes():
  two = [[0, 0, 5, 5], [40, 30, 50, 40]]
  maps = [_peak((40, 50), 35, 45), _peak((20, 30), 2, 28), _peak((64, 64), 33, 33)]
  boxes = [two, [[0, 0, 4, 4]], np.array([[30.0, 30.0, 34.0, 34.0]])]
  assert metrics.pointing_game(maps, boxes, tolerance=0).tolist() == [True, False, True]


def test_pointing_game_flat_and_invalid_maps_miss():
  whole = [[0, 0, 8, 8]]                      # covers every pixel: any point would be inside
  flat = np.full((8, 8), 0.3)
  nan = _peak((8, 8), 2, 2)
  nan[5, 5] = np.nan
  inf = _peak((8, 8), 2, 2)
  inf[5, 5] = np.inf
  ok = _peak((8, 8), 2, 2)
  hits = metrics.pointing_game([flat, np.zeros((8, 8)), nan, inf, ok], [whole] * 5)
  assert hits.tolist() == [False, False, False, False, True]


def test_pointing_game_ties_take_the_first_argmax():
  m = np.zeros((10, 10))
  m[1, 1] = m[8, 8] = 1.0                      # two maxima; the first in row-major order is (1, 1)
  assert metrics.pointing_game(m[None], [[[0, 0, 3, 3]]], tolerance=0).tolist() == [True]
  assert metrics.pointing_game(m[None], [[[7, 7, 10, 10]]], tolerance=0).tolist() == [False]


def test_pointing_game_agrees_with_pointing_hits_on_box_masks():
  rng = np.random.default_rng(1)
  maps = rng.normal(size=(20, 24, 32))
  boxes = []
  for _ in range(20):
    x0, y0 = rng.integers(0, 20), rng.integers(0, 16)
    boxes.append([[x0, y0, x0 + rng.integers(1, 12), y0 + rng.integers(1, 8)]])
  masks = np.stack([metrics.mask_from_boxes(b, (24, 32)) for b in boxes])
  for tolerance in (0, 3, 7.5):
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=tolerance),
                                  metrics.pointing_hits(maps, masks, tolerance=tolerance))


def _torchray_hit(saliency, mask, tolerance):
  """TorchRay's PointingGame.evaluate, in numpy: the acceptance disc around the point meets the mask."""
  v, u = np.unravel_index(np.argmax(saliency), saliency.shape)
  rows, cols = np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), indexing='ij')
  accept = (rows - v) ** 2 + (cols - u) ** 2 < tolerance ** 2
  return bool((mask & accept).any())


def test_pointing_game_matches_torchray_at_integer_tolerances():
  rng = np.random.default_rng(3)
  for tolerance in (1, 2, 5, 15):
    maps, boxes = rng.normal(size=(40, 30, 40)), []
    for _ in range(40):
      x0, y0 = rng.integers(0, 36), rng.integers(0, 26)
      boxes.append([[x0, y0, x0 + rng.integers(1, 5), y0 + rng.integers(1, 5)]])
    expected = [_torchray_hit(m, metrics.mask_from_boxes(b, m.shape), tolerance) for m, b in zip(maps, boxes)]
    assert metrics.pointing_game(maps, boxes, tolerance=tolerance).tolist() == expected
    assert tolerance < 5 or 0 < sum(expected) < 40  # both outcomes occur


def test_pointing_played_leaves_out_images_whose_boxes_are_all_difficult():
  flags = [[False], [True], [True, False], [True, True], []]
  assert metrics.pointing_played(flags).tolist() == [True, False, True, False, False]
  with pytest.raises(ValueError, match=r'difficult_per_image\[0\] must be a boolean mask'):
    metrics.pointing_played([[2]])


def test_pointing_accuracy_per_image_and_torchray_class_mean():
  hits = [True, False, False, True, True, False, True]
  classes = [0, 0, 0, 1, 1, 2, 2]
  played = [True, True, True, True, True, True, False]  # the last image: all its boxes difficult
  r = metrics.pointing_accuracy(hits, classes, played=played)
  # played: class 0 1 of 3, class 1 2 of 2, class 2 0 of 1; per image 3 of 6
  assert r['per_image'] == 0.5 and r['played'] == 6 and r['excluded'] == 1
  assert r['per_class'] == {0: 1 / 3, 1: 1.0, 2: 0.0}
  assert r['class_mean'] == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)
  every = metrics.pointing_accuracy(hits, classes)
  assert every['per_image'] == 4 / 7 and every['class_mean'] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
  assert np.isnan(metrics.pointing_accuracy([True], [0], played=[False])['class_mean'])
  with pytest.raises(ValueError, match='hits has 2 images but classes has 1'):
    metrics.pointing_accuracy([True, False], [0])


def test_pointing_game_bad_input():
  maps = np.zeros((1, 8, 8))
  with pytest.raises(ValueError, match='no ground-truth box'):
    metrics.pointing_game(maps, [[]])
  with pytest.raises(ValueError, match='cover no pixel'):
    metrics.pointing_game(maps, [[[20, 20, 30, 30]]])
  with pytest.raises(ValueError, match=r'\[N, H, W\]'):
    metrics.pointing_game(np.zeros((8, 8)), [[[0, 0, 1, 1]]])
  with pytest.raises(ValueError, match=r'maps\[1\] must be \[H, W\]'):
    metrics.pointing_game([np.zeros((8, 8)), np.zeros(8)], [[[0, 0, 1, 1]]] * 2)
  with pytest.raises(ValueError, match='maps has 1 images but gt_boxes_per_image has 2'):
    metrics.pointing_game(maps, [[[0, 0, 1, 1]]] * 2)
  with pytest.raises(ValueError, match='tolerance'):
    metrics.pointing_game(maps, [[[0, 0, 1, 1]]], tolerance=-1)
  with pytest.raises(ValueError, match=r'gt_boxes_per_image\[0\]\[0\] .* is not finite'):
    metrics.pointing_game(maps, [[[0, 0, np.nan, 1]]])


# ------------------------------------------------------------------------------- mask / box helpers


def test_boxes_from_mask_and_mask_from_boxes_round_trip():
  rng = np.random.default_rng(2)
  for _ in range(25):
    x0, y0 = int(rng.integers(0, 30)), int(rng.integers(0, 20))
    box = (x0, y0, int(rng.integers(x0 + 1, 36)), int(rng.integers(y0 + 1, 26)))  # inside the 25 x 35 image
    mask = metrics.mask_from_boxes(box, (25, 35))
    assert mask.sum() == (box[2] - box[0]) * (box[3] - box[1])
    assert metrics.boxes_from_mask(mask) == box
    np.testing.assert_array_equal(metrics.mask_from_boxes([metrics.boxes_from_mask(mask)], mask.shape), mask)


def test_boxes_from_mask_known_answers():
  mask = np.zeros((6, 8), bool)
  assert metrics.boxes_from_mask(mask) is None
  mask[2, 3] = True
  assert metrics.boxes_from_mask(mask) == (3, 2, 4, 3)   # one pixel: x1 / y1 exclusive
  mask[4, 6] = True
  box = metrics.boxes_from_mask(mask)
  assert box == (3, 2, 7, 5) and all(type(v) is int for v in box)
  with pytest.raises(ValueError, match=r'\[H, W\]'):
    metrics.boxes_from_mask(np.zeros((2, 3, 4), bool))


def test_mask_from_boxes_union_clipping_and_float_rule():
  mask = metrics.mask_from_boxes([[0, 0, 2, 2], [1, 1, 3, 3]], (4, 4))
  assert mask.sum() == 7 and mask[0, 0] and mask[2, 2] and not mask[0, 2]
  clipped = metrics.mask_from_boxes([[-5, 2, 100, 3]], (4, 6))
  assert clipped.sum() == 6 and clipped[2].all()
  assert not metrics.mask_from_boxes([], (3, 3)).any()
  assert metrics.mask_from_boxes(np.zeros((0, 4)), (3, 3)).shape == (3, 3)
  # a pixel is covered when its centre (c + 0.5) lies in [x0, x1)
  assert metrics.mask_from_boxes([0.4, 0, 1.6, 1], (1, 4)).tolist() == [[True, True, False, False]]
  assert metrics.mask_from_boxes([0.6, 0, 1.4, 1], (1, 4)).tolist() == [[False, False, False, False]]
  assert metrics.mask_from_boxes([0.5, 0, 1.5, 1], (1, 4)).tolist() == [[True, False, False, False]]
  with pytest.raises(ValueError, match=r'shape must be two integers'):
    metrics.mask_from_boxes([0, 0, 1, 1], (3,))
  with pytest.raises(ValueError, match=r'boxes\[0\] .* has x1 < x0'):
    metrics.mask_from_boxes([[3, 0, 1, 1]], (3, 3))


# --------------------------------------------------------------------- existing mask-based metrics


def test_pointing_hits_known_answer():
  masks = np.zeros((4, 10, 10), bool)
  masks[:3, 2:5, 2:5] = True                   # image 3 has an empty mask
  maps = np.stack([_peak((10, 10), 3, 3),      # inside
                   _peak((10, 10), 3, 7),      # 3 px right of the last mask column
                   _peak((10, 10), 9, 9),      # hypot(5, 5) = 7.1 px away
                   _peak((10, 10), 3, 3)])
  assert metrics.pointing_hits(maps, masks).tolist() == [True, False, False, False]
  assert metrics.pointing_hits(maps, masks, tolerance=3).tolist() == [True, False, False, False]  # strict
  assert metrics.pointing_hits(maps, masks, tolerance=3.5).tolist() == [True, True, False, False]
  with pytest.raises(ValueError, match=r'\[N, H, W\]'):
    metrics.pointing_hits(maps, masks[:, :5])


def test_mass_inside_known_answer():
  masks = np.zeros((3, 4, 4), bool)
  masks[:, :2, :2] = True
  maps = np.stack([np.ones((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))])
  maps[2, 0, 0], maps[2, 3, 3] = 3.0, 1.0
  np.testing.assert_allclose(metrics.mass_inside(maps, masks), [0.25, 0.0, 0.75])
  with pytest.raises(ValueError, match=r'\[N, H, W\]'):
    metrics.mass_inside(maps[0], masks[0])


# ------------------------------------------------------------------------- deletion / insertion, sanity


class _Linear(nnx.Module):
  def __init__(self, shape, num_classes, rngs):
    self.in_channels, self.input_size, self.num_classes = shape[-1], None, num_classes
    self.dense = nnx.Linear(int(np.prod(shape)), num_classes, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    return self.dense(x.reshape(x.shape[0], -1))


def test_pixel_ranks_order_ties_and_nan():
  ranks = metrics.pixel_ranks(np.array([[[0.5, 2.0], [np.nan, 0.5]]]))
  np.testing.assert_array_equal(ranks[0], [[1, 0], [3, 2]])


def test_deletion_and_insertion_known_answers_on_a_linear_model():
  shape = (4, 5, 3)
  model = _Linear(shape, 3, nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, *shape)))
  labels = np.array([2, 0])
  kernel, bias = np.asarray(model.dense.kernel[...]), np.asarray(model.dense.bias[...])
  sigma = 1.0
  blurred = np.stack([ndimage.gaussian_filter(im, (sigma, sigma, 0), mode='nearest', truncate=2.0)
                      for im in x])
  rng = np.random.default_rng(0)
  for i, c in enumerate(labels):
    contrib = (kernel[:, c].reshape(shape) * x[i]).sum(-1)  # S_c = bias + sum of per-pixel contributions
    blur_contrib = (kernel[:, c].reshape(shape) * blurred[i]).sum(-1)
    for m in (contrib, rng.normal(size=shape[:2])):
      out = faithfulness.deletion_insertion(model, x[i:i + 1], labels[i:i + 1], m[None], steps=20,
                                            output='score',
                                       insertion_blur=sigma)
      order = np.argsort(-m.ravel(), kind='stable')
      deletion = [bias[c] + contrib.ravel()[order[k:]].sum() for k in range(21)]
      insertion = [bias[c] + contrib.ravel()[order[:k]].sum() + blur_contrib.ravel()[order[k:]].sum()
                   for k in range(21)]
      np.testing.assert_allclose(out['deletion_curve'][0], deletion, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(out['insertion_curve'][0], insertion, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(out['deletion'][0], np.mean((np.array(deletion[1:]) + deletion[:-1]) / 2),
                                 rtol=1e-5, atol=1e-5)
    # removing the largest contributions first gives the lowest deletion curve of any order
    best = faithfulness.deletion_insertion(model, x[i:i + 1], labels[i:i + 1], contrib[None], steps=20,
                                      output='score')
    for _ in range(5):
      other = faithfulness.deletion_insertion(model, x[i:i + 1], labels[i:i + 1],
                                              rng.normal(size=(1, *shape[:2])),
                                         steps=20, output='score')
      assert best['deletion'][0] <= other['deletion'][0] + 1e-6


def test_deletion_probabilities_and_errors():
  model = _Linear((4, 4, 3), 3, nnx.Rngs(1))
  x = np.asarray(jax.random.normal(jax.random.key(2), (3, 4, 4, 3)))
  out = faithfulness.deletion_insertion(model, x, np.array([0, 1, 2]), np.abs(x).sum(-1), steps=4,
                                        chunk_size=2)
  assert (out['deletion_curve'].shape == (3, 5)
          and ((out['deletion_curve'] >= 0) & (out['deletion_curve'] <= 1)).all())
  np.testing.assert_allclose(out['fractions'], [0, 0.25, 0.5, 0.75, 1])
  p = np.asarray(jax.nn.softmax(model(x)))[np.arange(3), [0, 1, 2]]
  np.testing.assert_allclose(out['deletion_curve'][:, 0], p, rtol=1e-5)  # nothing removed yet
  np.testing.assert_allclose(out['insertion_curve'][:, -1], p, rtol=1e-5)  # everything put back
  with pytest.raises(ValueError, match=r'maps must be \[B, H, W\]'):
    faithfulness.deletion_insertion(model, x, np.array([0, 1, 2]), np.zeros((3, 5, 5)))
  with pytest.raises(ValueError, match='output'):
    faithfulness.deletion_insertion(model, x, np.array([0, 1, 2]), np.zeros((3, 4, 4)), output='logit')
  maps = np.ones((3, 4, 4))
  maps[0, 0, 0], maps[1, 2, 3] = np.nan, np.inf
  with pytest.raises(ValueError, match='maps hold 2 NaN or infinite values'):
    faithfulness.deletion_insertion(model, x, np.array([0, 1, 2]), maps)


def test_spearman_refuses_maps_with_nan_or_inf_or_of_two_shapes():
  a = np.arange(12.0).reshape(3, 4)
  assert metrics.spearman(a, 11 - a) == -1.0
  with pytest.raises(ValueError, match='the second map holds 1 NaN or infinite values'):
    metrics.spearman(a, np.where(a == 5, np.nan, a))
  with pytest.raises(ValueError, match='the first map holds 2 NaN or infinite values'):
    metrics.spearman(np.where(a < 2, np.inf, a), a)
  with pytest.raises(ValueError, match=r'one shape, got \(3, 4\) and \(12,\)'):
    metrics.spearman(a, a.ravel())


def test_cascading_randomisation():
  model = models.SmallConvNet(3, stages=((4,), (8,)), rngs=nnx.Rngs(0))
  fresh = faithfulness.fresh_like(model, 1)
  x = np.asarray(jax.random.normal(jax.random.key(3), (4, 16, 16, 3)))
  labels = np.array([0, 1, 2, 0])

  def gradient_maps(m):
    g = np.asarray(saliency.input_gradients(m, x, labels))
    return {'absolute': np.abs(g).max(-1), 'signed': g.sum(-1)}

  out = faithfulness.cascading_randomisation(model, fresh, gradient_maps)
  assert out['layers'] == ['classifier', 'conv2', 'conv1']
  assert len(out['absolute']) == len(out['signed']) == 3
  assert out['signed'][-1] < 0.9 and out['absolute'][-1] < 0.9  # fully random weights: a different map
  image_only = faithfulness.cascading_randomisation(model, fresh, lambda m: {'absolute': np.abs(x).max(-1),
                                                                         'signed': x.sum(-1)})
  # fails the check
  np.testing.assert_allclose(image_only['absolute'] + image_only['signed'], 1.0, rtol=1e-12)


def test_localisation_failures_name_why_each_image_fails():
  gt_labels, gt_boxes = [3], [[10, 10, 30, 30]]  # one object of class 3, area 400
  cases = {
      'correct': [(1, (0, 0, 5, 5)), (3, (11, 10, 30, 31))],
      'wrong_classes': [(1, (10, 10, 30, 30)), (2, (10, 10, 30, 30))],  # perfect boxes, wrong classes
      'too_small': [(3, (12, 12, 18, 18))],  # area 36 < 400 / 2, inside the object
      'too_large': [(3, (0, 0, 60, 60))],  # area 3600 > 2 x 400
      'displaced': [(3, (25, 25, 45, 45))],  # the object's size, a quarter of it overlapping
  }
  for expected, guesses in cases.items():
    assert metrics.localisation_failure(guesses, gt_labels, gt_boxes) == expected, expected
  # the right class's best box decides: a too-small box of the class beats a wrong-class perfect box
  assert metrics.localisation_failure([(1, (10, 10, 30, 30)), (3, (12, 12, 18, 18))], gt_labels,
                                      gt_boxes) == 'too_small'
  out = metrics.localisation_failures(list(cases.values()), [gt_labels] * 5, [gt_boxes] * 5, top_k=5)
  assert out['per_image'] == list(cases)
  assert out['counts'] == {name: 1 for name in metrics.FAILURES}
  error = metrics.localisation_error(list(cases.values()), [gt_labels] * 5, [gt_boxes] * 5, top_k=5)
  assert error == 1 - out['counts']['correct'] / 5
  # top_k cuts the guesses first: the right guess in second place does not count at top-1
  assert metrics.localisation_failures([cases['correct']], [gt_labels], [gt_boxes], top_k=1)['per_image'] == [
      'wrong_classes']
  with pytest.raises(ValueError, match='area_ratio'):
    metrics.localisation_failure(cases['correct'], gt_labels, gt_boxes, area_ratio=1.0)
