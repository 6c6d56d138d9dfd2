"""MaxBoxAccV2 and PxAP (Choe et al. 2020) against hand-computed cases, and against wsolevaluation's
procedure written here with OpenCV; the bootstrap intervals and paired tests of `stats`."""

import numpy as np
import pytest
from scipy import ndimage

from saliency_jax import metrics, stats


def _blob(shape, x0, y0, x1, y1, value=1.0, m=None):
  m = np.zeros(shape) if m is None else m
  m[y0:y1, x0:x1] = value
  return m


def test_a_box_one_pixel_wider_than_its_region_as_wsolevaluation_draws_it():
  # A 4 x 4 region at columns / rows 2..5 of a 20 px map: wsolevaluation's box is (2, 2, 6, 6)
  # inclusive, 5 x 5 pixels; against the exact ground truth (2, 2, 6, 6) exclusive = 4 x 4 pixels:
  # IoU 16 / 25 = 0.64.
  m = _blob((20, 20), 2, 2, 6, 6)
  assert metrics.threshold_boxes(m, (0.5,))[0].tolist() == [[2, 2, 6, 6]]
  r = metrics.max_box_acc([m], [[(2, 2, 6, 6)]], iou_thresholds=(0.6, 0.7), cam_thresholds=(0.5,))
  assert r['box_acc'] == {0.6: 1.0, 0.7: 0.0} and r['max_box_acc_v2'] == 0.5
  # at the right and bottom edges the box is clipped to the image: exact there
  edge = _blob((20, 20), 16, 16, 20, 20)
  assert metrics.threshold_boxes(edge, (0.5,))[0].tolist() == [[16, 16, 19, 19]]
  assert metrics.max_box_acc([edge], [[(16, 16, 20, 20)]], iou_thresholds=(0.99,),
                             cam_thresholds=(0.5,))['box_acc'] == {0.99: 1.0}


def test_every_contour_counts_with_multi_contour_the_largest_without():
  m = _blob((30, 30), 1, 1, 15, 15)  # large
  m = _blob((30, 30), 20, 20, 24, 24, m=m)  # small: the ground truth
  gt = [[(20, 20, 24, 24)]]
  multi = metrics.max_box_acc([m], gt, iou_thresholds=(0.5,), cam_thresholds=(0.5,))
  single = metrics.max_box_acc([m], gt, iou_thresholds=(0.5,), cam_thresholds=(0.5,), multi_contour=False)
  assert multi['box_acc'][0.5] == 1.0 and single['box_acc'][0.5] == 0.0


def test_the_map_is_quantised_to_8_bits_before_thresholding():
  # 0.9005 * 255 = 229.6 -> 229, not above int(0.9 * 255) = 229: at threshold 0.9 only the 1.0 region
  # is foreground; a threshold on the raw values (0.9005 > 0.9) would also keep the larger 0.9005 one.
  m = _blob((40, 40), 0, 0, 30, 30, value=0.9005)
  m = _blob((40, 40), 33, 33, 37, 37, value=1.0, m=m)
  r = metrics.max_box_acc([m], [[(33, 33, 37, 37)]], iou_thresholds=(0.5,), cam_thresholds=(0.9,),
                          multi_contour=False)
  assert r['box_acc'][0.5] == 1.0
  assert metrics.threshold_boxes(m, (0.89,), multi_contour=False)[0].tolist() == [[0, 0, 30, 30]]


def test_the_best_threshold_over_the_whole_set():
  # A bump on [10, 30) and a weaker plateau around it on [5, 35): thresholds below the plateau's
  # level give the plateau's box, above it the bump's. The ground truth is the bump for both images.
  m = _blob((40, 40), 5, 5, 35, 35, value=0.4)
  m = _blob((40, 40), 10, 10, 30, 30, value=1.0, m=m)
  r = metrics.max_box_acc([m, m], [[(10, 10, 30, 30)]] * 2, iou_thresholds=(0.8,))
  k = metrics.CAM_THRESHOLDS.index(min(t for t in metrics.CAM_THRESHOLDS if int(t * 255) >= 101))
  assert r['box_acc'][0.8] == 1.0 and r['best_threshold'][0.8] == metrics.CAM_THRESHOLDS[k]
  assert r['accuracy'][0, :k].max() == 0.0 and r['correct'].shape == (1, 100, 2)
  # an image with no foreground at a threshold gets the box (0, 0, 0, 0); a flat map is all zeros
  assert metrics.threshold_boxes(np.zeros((8, 8)), (0.0,))[0].tolist() == [[0, 0, 0, 0]]
  with pytest.raises(ValueError, match='NaN or infinite'):
    metrics.max_box_acc([np.full((4, 4), np.nan)], [[(0, 0, 2, 2)]])


def test_pxap_is_the_average_precision_of_the_pixel_ranking():
  # one image: foreground scores 1.0 and 0.5, background 0.75 and 0.0. Ranked: fg, bg, fg, bg;
  # precision 1 at recall 1/2, 2/3 at recall 1: AP = 1/2 + 1/3 = 5/6.
  m = np.array([[1.0, 0.5], [0.75, 0.0]])
  mask = np.array([[True, True], [False, False]])
  assert metrics.pxap([m], [mask]) == pytest.approx(5 / 6, abs=1e-12)
  # ignoring the background pixel scored 0.75: a perfect ranking
  ignore = np.array([[False, False], [True, False]])
  assert metrics.pxap([m], [mask], ignore=[ignore]) == pytest.approx(1.0, abs=1e-12)
  # the maps are min-max normalised per image: scaling one changes nothing
  assert metrics.pxap([3 * m + 1], [mask]) == pytest.approx(5 / 6, abs=1e-12)
  with pytest.raises(ValueError, match='foreground and background'):
    metrics.pxap([m], [np.ones((2, 2), bool)])


def _wsolevaluation_correct(maps, boxes, iou_thresholds, cam_thresholds, cv2) -> np.ndarray:
  """wsolevaluation's BoxEvaluator(multi_contour_eval=True), written from its description with OpenCV:
  normalise, 8-bit map, cv2.threshold, cv2.findContours(RETR_TREE), cv2.boundingRect, clip, IoU +1."""
  out = np.zeros((len(iou_thresholds), len(cam_thresholds), len(maps)), bool)
  for i, (m, gt) in enumerate(zip(maps, boxes)):
    m = (m - m.min()) / (m.max() - m.min())
    image = (m * 255).astype(np.uint8)
    h, w = image.shape
    gt = np.array(gt) - np.array([0, 0, 1, 1])
    for j, t in enumerate(cam_thresholds):
      _, binary = cv2.threshold(image, int(t * image.max()), 255, cv2.THRESH_BINARY)
      contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
      found = [[0, 0, 0, 0]]
      if contours:
        found = []
        for c in contours:
          x, y, bw, bh = cv2.boundingRect(c)
          found.append([x, y, min(x + bw, w - 1), min(y + bh, h - 1)])
      best = 0.0
      for p in found:
        for g in gt:
          iw = max(0, min(p[2], g[2]) - max(p[0], g[0]) + 1)
          ih = max(0, min(p[3], g[3]) - max(p[1], g[1]) + 1)
          union = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih
          best = max(best, iw * ih / union if union > 0 else 0.0)
      out[:, j, i] = [best >= u for u in iou_thresholds]
  return out


def test_image_for_image_as_wsolevaluations_procedure_with_opencv():
  cv2 = pytest.importorskip('cv2', reason='the independent reference needs opencv-python-headless')
  rng = np.random.default_rng(0)
  maps, boxes = [], []
  for _ in range(12):  # smooth random maps: several regions, some with holes, some at the edges
    m = ndimage.gaussian_filter(rng.normal(size=(48, 56)), 3)
    maps.append(m)
    x0, y0 = rng.integers(0, 30, 2)
    boxes.append([(x0, y0, x0 + rng.integers(8, 26), y0 + rng.integers(8, 18))])
  ring = _blob((40, 40), 5, 5, 30, 30)
  ring[12:20, 10:22] = 0  # a hole: its border is a contour of its own
  maps.append(ring)
  boxes.append([(9, 11, 23, 21)])
  cams = metrics.CAM_THRESHOLDS[::7]
  ours = metrics.max_box_acc(maps, boxes, cam_thresholds=cams)['correct']
  theirs = _wsolevaluation_correct(maps, boxes, metrics.IOU_THRESHOLDS, cams, cv2)
  np.testing.assert_array_equal(ours, theirs)
  assert ours.any() and not ours.all()  # the check has something to tell apart


def test_intervals_and_paired_tests_known_answers():
  constant = stats.interval(np.ones(50))
  assert (constant['mean'], constant['low'], constant['high']) == (1.0, 1.0, 1.0)
  rng = np.random.default_rng(1)
  right = rng.random(326) < 0.35
  ci = stats.interval(right)
  width = 2 * 1.96 * np.sqrt(ci['mean'] * (1 - ci['mean']) / 326)  # the normal approximation's
  assert ci['low'] < ci['mean'] < ci['high'] and abs((ci['high'] - ci['low']) - width) < 0.1 * width
  assert stats.interval(right) == ci  # seeded
  # McNemar: 10 images only a gets right, 2 only b: p = 2 P(X <= 2), X ~ Bin(12, 1/2) = 2 * 79 / 4096
  a = np.array([1] * 10 + [0] * 2 + [1] * 5, bool)
  b = np.array([0] * 10 + [1] * 2 + [1] * 5, bool)
  test = stats.mcnemar_exact(a, b)
  assert (test['only_a'], test['only_b']) == (10, 2) and test['p_value'] == pytest.approx(158 / 4096)
  same = stats.paired(a, a)
  assert same['difference'] == 0 and not same['distinguishable'] and same['mcnemar']['p_value'] == 1.0
  apart = stats.paired(np.ones(40), np.zeros(40))
  assert apart['difference'] == 1 and apart['distinguishable'] and apart['mcnemar']['p_value'] < 1e-10


def test_binomial_interval_known_answers():
  # Clopper-Pearson in closed form at the edges: 0 of n -> [0, 1 - (alpha/2)^(1/n)], n of n -> the mirror
  zero, full = stats.binomial_interval(0, 10), stats.binomial_interval(10, 10)
  assert (zero['low'], full['high']) == (0.0, 1.0)
  assert zero['high'] == pytest.approx(1 - 0.025 ** (1 / 10))
  assert full['low'] == pytest.approx(0.025 ** (1 / 10))
  # inside: the beta quantiles that define it
  from scipy import stats as scipy_stats
  ci = stats.binomial_interval(249, 326)
  assert ci['low'] == pytest.approx(scipy_stats.beta.ppf(0.025, 249, 326 - 249 + 1))
  assert ci['high'] == pytest.approx(scipy_stats.beta.ppf(0.975, 250, 326 - 249))
  with pytest.raises(ValueError, match='0 <= correct <= n'):
    stats.binomial_interval(11, 10)


def test_pick_stability_counts_the_resampled_picks():
  n = 200
  clear = {'a': {'right': np.ones(n)}, 'b': {'right': np.zeros(n)}}
  def choose(table):
    return max(table, key=lambda s: table[s]['right'])
  assert stats.pick_stability(clear, choose, resamples=100)['stability'] == 1.0
  rng = np.random.default_rng(0)
  close = {'a': {'right': rng.random(n) < 0.5}, 'b': {'right': rng.random(n) < 0.5}}
  r = stats.pick_stability(close, choose, resamples=200)
  assert 0 < r['stability'] < 1 and sum(r['picks'].values()) == 200
