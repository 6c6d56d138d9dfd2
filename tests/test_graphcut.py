"""GraphCut with PyMaxflow: exact minimum of the GrabCut energy, seeds, components, boxes."""

import itertools

import numpy as np
import pytest

from saliency_jax import graphcut, metrics


def _energy(labels, fg_cost, bg_cost, edges):
  """The GrabCut energy of a labelling (True = foreground), computed directly."""
  e = np.where(labels, fg_cost, bg_cost).sum()
  h, w = labels.shape
  for (dy, dx), weights in edges:
    for y in range(h):
      for x in range(w):
        yy, xx = y + dy, x + dx
        if 0 <= yy < h and 0 <= xx < w and labels[y, x] != labels[yy, xx]:
          e += weights[y, x]
  return e


@pytest.mark.parametrize('connectivity', [4, 8])
def test_cut_is_the_exact_minimum_by_brute_force(connectivity):
  rng = np.random.default_rng(connectivity)
  for _ in range(3):
    image = rng.uniform(0, 255, (3, 4, 3))
    fg_cost, bg_cost = rng.normal(0, 30, (3, 4)), rng.normal(0, 30, (3, 4))
    edges = graphcut.pairwise_weights(image, pairwise_weight=40.0, connectivity=connectivity)
    mask = graphcut.segment(fg_cost, bg_cost, image, pairwise_weight=40.0, connectivity=connectivity)
    best = min(_energy(np.array(bits, bool).reshape(3, 4), fg_cost, bg_cost, edges)
               for bits in itertools.product([0, 1], repeat=12))
    assert _energy(mask, fg_cost, bg_cost, edges) == pytest.approx(best, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('connectivity', [4, 8])
def test_seeded_cut_is_the_exact_minimum_over_the_free_pixels(connectivity):
  rng = np.random.default_rng(10 + connectivity)
  for _ in range(3):
    image = rng.uniform(0, 255, (4, 5, 3))
    fg_cost, bg_cost = rng.normal(0, 30, (4, 5)), rng.normal(0, 30, (4, 5))
    fg_seeds, bg_seeds = rng.random((4, 5)) < 0.25, rng.random((4, 5)) < 0.25  # some pixels in both
    edges = graphcut.pairwise_weights(image, pairwise_weight=40.0, connectivity=connectivity)
    mask = graphcut.segment(fg_cost, bg_cost, image, pairwise_weight=40.0, connectivity=connectivity,
                            fg_seeds=fg_seeds, bg_seeds=bg_seeds)
    fixed_fg, free = fg_seeds & ~bg_seeds, ~(fg_seeds | bg_seeds)  # a pixel seeded both ways: background
    assert mask[fixed_fg].all() and not mask[bg_seeds].any()
    best = np.inf
    for bits in itertools.product([0, 1], repeat=int(free.sum())):
      labels = fixed_fg.copy()
      labels[free] = np.array(bits, bool)
      best = min(best, _energy(labels, fg_cost, bg_cost, edges))
    assert _energy(mask, fg_cost, bg_cost, edges) == pytest.approx(best, rel=1e-9, abs=1e-9)


def _infinite_seed_cut(fg_cost, bg_cost, edges, fg_seeds, bg_seeds, hard=1e9):
  """The seeded cut as the unseeded cut of the whole grid with a prohibitive cost on each seed's other
  label: an independent construction of the same minimum."""
  fg_cost, bg_cost = np.where(fg_seeds, 0.0, fg_cost), np.where(fg_seeds, hard, bg_cost)
  fg_cost, bg_cost = np.where(bg_seeds, hard, fg_cost), np.where(bg_seeds, 0.0, bg_cost)
  return graphcut.segment(fg_cost, bg_cost, edges=edges)


def test_seeded_cut_matches_the_whole_grid_with_prohibitive_seed_costs():
  rng = np.random.default_rng(3)
  truth = np.zeros((60, 70), bool)
  truth[15:45, 20:55] = True
  for _ in range(4):
    image = np.where(truth[..., None], 170.0, 80.0) + rng.normal(0, 25, (60, 70, 3))
    margin = np.where(truth, -1.0, 1.0) + rng.normal(0, 3, truth.shape)
    evidence = truth + rng.normal(0, 0.5, truth.shape)  # a noisy map: quantile seeds as the paper's
    lo, hi = np.quantile(evidence, [0.3, 0.95])
    fg_seeds, bg_seeds = evidence >= hi, evidence <= lo
    edges = graphcut.pairwise_weights(image, pairwise_weight=10.0)
    mask = graphcut.segment(margin, -margin, edges=edges, fg_seeds=fg_seeds, bg_seeds=bg_seeds)
    np.testing.assert_array_equal(mask, _infinite_seed_cut(margin, -margin, edges, fg_seeds, bg_seeds))
    assert 0 < (mask & ~fg_seeds).sum() and (mask != truth).mean() < 0.05


def test_two_region_image_is_recovered_and_smoothing_removes_noise():
  rng = np.random.default_rng(0)
  truth = np.zeros((40, 50), bool)
  truth[10:30, 15:40] = True
  image = np.where(truth[..., None], 180.0, 60.0) + rng.normal(0, 10, (40, 50, 3))
  # Unaries that a colour model would give, corrupted by strong independent noise.
  margin = np.where(truth, -4.0, 4.0) + rng.normal(0, 4, truth.shape)
  fg_cost, bg_cost = margin, -margin
  pixelwise = graphcut.segment(fg_cost, bg_cost, image, pairwise_weight=0.0)
  np.testing.assert_array_equal(pixelwise, fg_cost < bg_cost)
  smooth = graphcut.segment(fg_cost, bg_cost, image, pairwise_weight=50.0)
  assert (pixelwise != truth).sum() > 100
  assert (smooth != truth).sum() <= 5
  assert metrics.boxes_from_mask(graphcut.largest_component(smooth)) == (15, 10, 40, 30)


def test_hard_seeds_override_the_unaries():
  image = np.full((6, 6, 3), 100.0)
  fg_cost, bg_cost = np.full((6, 6), 10.0), np.zeros((6, 6))  # everything prefers background
  seeds = np.zeros((6, 6), bool)
  seeds[2, 3] = True
  mask = graphcut.segment(fg_cost, bg_cost, image, pairwise_weight=0.0, fg_seeds=seeds)
  np.testing.assert_array_equal(mask, seeds)
  mask = graphcut.segment(-fg_cost, bg_cost, image, pairwise_weight=0.0, bg_seeds=seeds)
  np.testing.assert_array_equal(mask, ~seeds)


def test_pairwise_weights_known_answer():
  image = np.zeros((2, 2, 3))
  image[:, 1] = 10.0  # the right column differs by (10, 10, 10): squared distance 300
  edges = dict(graphcut.pairwise_weights(image, pairwise_weight=50.0, connectivity=8))
  # Pairs: 2 horizontal (d = 300), 2 vertical (0), 1 diagonal (300), 1 anti-diagonal (300).
  beta = 1 / (2 * (4 * 300 / 6))
  np.testing.assert_allclose(edges[(0, 1)], [[50 * np.exp(-beta * 300), 0], [50 * np.exp(-beta * 300), 0]])
  np.testing.assert_allclose(edges[(1, 0)], [[50, 50], [0, 0]])
  np.testing.assert_allclose(edges[(1, 1)], [[50 / np.sqrt(2) * np.exp(-beta * 300), 0], [0, 0]])
  np.testing.assert_allclose(edges[(1, -1)], [[0, 50 / np.sqrt(2) * np.exp(-beta * 300)], [0, 0]])
  flat = dict(graphcut.pairwise_weights(np.zeros((3, 3, 3)), connectivity=4))
  np.testing.assert_allclose(flat[(0, 1)][:, :2], 50.0)  # uniform image: full weight, no NaN


def test_largest_component_and_box():
  mask = np.zeros((8, 10), bool)
  mask[1:3, 1:3] = True  # 4 pixels
  mask[4:7, 5:9] = True  # 12 pixels
  mask[3, 4] = True  # touches the big one diagonally only
  big = graphcut.largest_component(mask, connectivity=4)
  assert big.sum() == 12 and metrics.boxes_from_mask(big) == (5, 4, 9, 7)
  assert graphcut.largest_component(mask, connectivity=8).sum() == 13
  assert not graphcut.largest_component(np.zeros((3, 3), bool)).any()


def test_bad_input_errors():
  with pytest.raises(ValueError, match='must both be'):
    graphcut.segment(np.zeros((3, 3)), np.zeros((3, 4)), np.zeros((3, 3, 3)))
  with pytest.raises(ValueError, match='NaN'):
    graphcut.segment(np.full((3, 3), np.nan), np.zeros((3, 3)), np.zeros((3, 3, 3)))
  with pytest.raises(ValueError, match='connectivity'):
    graphcut.segment(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3, 3)), connectivity=6)
  with pytest.raises(ValueError, match='does not match'):
    graphcut.segment(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((4, 3, 3)))
