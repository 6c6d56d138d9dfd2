"""The Sect. 3.2 pipeline: quantile seeds -> colour GMMs -> GraphCut -> largest component -> box."""

import numpy as np
import pytest

from saliency_jax import localise


def _scene(seed=0, h=48, w=64):
  """A red rectangle (with texture) on a green-grey textured background, and a noisy bump map on it."""
  rng = np.random.default_rng(seed)
  image = np.empty((h, w, 3))
  image[:] = (90, 120, 90)
  image[12:36, 20:50] = (200, 40, 40)
  image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
  yy, xx = np.mgrid[0:h, 0:w]
  saliency = np.exp(-(((xx - 35) / 9.0) ** 2 + ((yy - 24) / 7.0) ** 2)) + 0.3 * rng.uniform(size=(h, w))
  return image, saliency, (20, 12, 50, 36)


def _iou(a, b):
  ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize('overrides', [{}, {'seeds': 'soft'}, {'seeds': 'hard'}, {'iterations': 3},
                                       {'connectivity': 4}, {'fg_floor': 0.5},
                                       {'smoothing': 0.05, 'component': 'all'}])
def test_graphcut_pipeline_finds_the_object(overrides):
  image, saliency, truth = _scene()
  mask, box = localise.localise(image, saliency, overrides)
  assert mask.dtype == bool and mask.shape == saliency.shape
  assert _iou(box, truth) > 0.8, (box, truth)
  # The box is the mask's bounding box, x1 / y1 exclusive.
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  assert box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def test_baselines_known_answers():
  image, saliency, _ = _scene()
  h, w = saliency.shape
  _, box = localise.localise(image, saliency, {'method': 'full'})
  assert box == (0, 0, w, h)
  _, box = localise.localise(image, saliency, {'method': 'centre', 'centre_fraction': 0.5})
  assert box == (16, 12, 48, 36)
  peak = np.zeros((h, w))
  peak[10:20, 5:15] = 1.0
  peak[30:32, 40:42] = 0.5  # above 20% of the max, but a smaller component
  _, box = localise.localise(image, peak, {'method': 'threshold', 'threshold': 0.2})
  assert box == (5, 10, 15, 20)


@pytest.mark.parametrize('method', ['graphcut', 'threshold'])
def test_flat_and_invalid_maps_are_flagged_full_image_boxes(method):
  image, saliency, _ = _scene()
  h, w = saliency.shape
  for bad, status in ((np.zeros((h, w)), 'flat_saliency'), (np.full((h, w), 0.7), 'flat_saliency'),
                      (np.where(saliency > 1, np.nan, saliency), 'invalid_saliency')):
    if status == 'invalid_saliency' and not np.isnan(bad).any():
      bad[0, 0] = np.nan
    mask, box, got = localise.localise(image, bad, {'method': method}, return_status=True)
    assert got == status and box == (0, 0, w, h) and mask.all()


def _sparse(image, box, fraction, rng):
  """A map exactly 0 except on `fraction` of the box's pixels, drawn at random (values in [0.5, 1))."""
  x0, y0, x1, y1 = box
  inside = np.argwhere(np.ones((y1 - y0, x1 - x0), bool)) + (y0, x0)
  pick = inside[rng.choice(len(inside), round(fraction * len(inside)), replace=False)]
  saliency = np.zeros(image.shape[:2])
  saliency[pick[:, 0], pick[:, 1]] = rng.uniform(0.5, 1.0, len(pick))
  return saliency


@pytest.mark.parametrize('seed', [0, 1])
def test_a_sparse_map_is_localised_not_flat(seed):
  """3% of the object's pixels non-zero, every other pixel exactly 0 (both quantiles are 0)."""
  image, _, truth = _scene(seed)
  saliency = _sparse(image, truth, 0.03, np.random.default_rng(seed))
  assert np.quantile(saliency, 0.95) == np.quantile(saliency, 0.30) == 0
  _, box, status = localise.localise(image, saliency, return_status=True)
  assert status == 'ok' and _iou(box, truth) > 0.8, (box, status)
  # CAM thresholding boxes the largest cluster of strong pixels: on the object, not a fallback.
  _, box, status = localise.localise(image, saliency, {'method': 'threshold'}, return_status=True)
  x0, y0, x1, y1 = truth
  assert status == 'ok' and x0 <= box[0] < box[2] <= x1 and y0 <= box[1] < box[3] <= y1


def test_seeds_of_a_sparse_map_break_the_tie_by_distance():
  saliency = np.zeros((10, 10))
  saliency[0, :2] = (1.0, 0.5)  # 2% of the image above the tie at 0
  fg, bg, status = localise.seeds(saliency, 0.95, 0.30)
  assert status == 'ok' and fg.sum() == 2 and fg[0, :2].all()
  # background: the 30 zeros farthest from (0, 0) and (0, 1), and any zero as far as the 30th
  rows, cols = np.mgrid[0:10, 0:10]
  distance = np.minimum(np.hypot(rows, cols), np.hypot(rows, cols - 1))
  thirtieth = np.sort(distance[saliency == 0])[::-1][29]
  np.testing.assert_array_equal(bg, (saliency == 0) & (distance >= thirtieth))
  assert 30 <= bg.sum() < 40 and distance[bg].min() > 6
  # the tie at the maximum: a map low on two pixels seeds the 5 (and ties) farthest from them as foreground
  fg, bg, status = localise.seeds(1.0 - saliency, 0.95, 0.30)
  fifth = np.sort(distance[saliency == 0])[::-1][4]
  assert status == 'ok' and bg.sum() == 2 and bg[0, :2].all() and fg[9, 9]
  np.testing.assert_array_equal(fg, (saliency == 0) & (distance >= fifth))
  # one strong pixel among negatives and zeros: the negatives rank lowest and are all background
  signed = np.zeros((10, 10))
  signed[5, 5], signed[0, :10] = 1.0, -1.0
  fg, bg, _ = localise.seeds(signed, 0.95, 0.30)
  assert fg.sum() == 1 and bg[0].all() and 30 <= bg.sum() < 40 and not bg[3:8, 3:8].any()


def test_pool_equals_serial_and_batch_equals_single():
  scenes = [_scene(seed) for seed in range(3)]
  images, maps = [s[0] for s in scenes], [s[1] for s in scenes]
  serial = localise.localise_batch(images, maps, workers=0)
  pooled = localise.localise_batch(images, maps, workers=2)
  for a, b in zip(serial, pooled):
    assert a.box == b.box and a.status == b.status
    np.testing.assert_array_equal(a.mask, b.mask)
  alone = localise.localise_batch(images[1:2], maps[1:2], indices=[1])[0]
  assert alone.box == serial[1].box


@pytest.mark.parametrize('workers', [0, 2])
def test_maps_of_one_image_cut_together_equal_each_cut_alone(workers):
  """Several maps of the same image array (a top-k) share one task and its pairwise term; each mask
  equals that map localised on its own, with or without the GrabCut rounds."""
  image, saliency, _ = _scene(4)
  rng = np.random.default_rng(1)
  yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
  corner = np.exp(-(((xx - 8) / 6.0) ** 2 + ((yy - 6) / 5.0) ** 2))  # evidence on the background
  maps = [saliency, corner + 0.1 * rng.uniform(size=corner.shape), saliency ** 3, saliency + corner]
  for overrides in ({}, {'iterations': 2, 'seeds': 'soft'}):
    together = localise.localise_batch([image] * len(maps), maps, overrides, workers=workers)
    masks = {r.mask.tobytes() for r in together}
    assert len(masks) > 1, 'the maps should give different masks'
    for i, m in enumerate(maps):
      alone = localise.localise_batch([image.copy()], [m], overrides, indices=[i])[0]
      assert alone.box == together[i].box and alone.status == together[i].status
      np.testing.assert_array_equal(alone.mask, together[i].mask)


@pytest.mark.parametrize('workers', [0, 2])
def test_batches_started_together_equal_each_batch_run_alone(workers):
  """start_batch: several batches (methods) queued before any is collected, collected in any order,
  give what localise_batch gives for each on its own; a GrabCut batch waits for its earlier rounds."""
  scenes = [_scene(seed) for seed in range(3)]
  images, maps = [s[0] for s in scenes], [s[1] for s in scenes]
  methods = [{}, {'fg_quantile': 0.9, 'seeds': 'soft'}, {'iterations': 2}, {'method': 'threshold'}]
  finishes = [localise.start_batch(images, maps, m, workers=workers, indices=[5, 6, 7]) for m in methods]
  for m, finish in reversed(list(zip(methods, finishes))):
    alone = localise.localise_batch(images, maps, m, indices=[5, 6, 7])
    for a, b in zip(alone, finish()):
      assert a.box == b.box and a.status == b.status
      np.testing.assert_array_equal(a.mask, b.mask)


def test_prepare_compiles_what_the_batch_then_calls(caplog):
  import jax
  scenes = [_scene(seed, h=40, w=52) for seed in range(3)]
  images, maps = [s[0] for s in scenes], [s[1] for s in scenes]
  settings = {'num_components': 3, 'gmm_iters': 4}  # a program no other test compiles
  localise.prepare([m.shape for m in maps], [settings, {'method': 'threshold'}], workers=2).join()
  with caplog.at_level('WARNING'), jax.log_compiles():
    ahead = localise.localise_batch(images, maps, settings, workers=2)
  compiled = [r.getMessage() for r in caplog.records if 'compil' in r.getMessage().lower()]
  assert not any('_colour_costs' in m for m in compiled), compiled
  with caplog.at_level('WARNING'), jax.log_compiles():  # a batch of another size: compiled then
    localise.localise_batch(images[:1], maps[:1], settings)
  assert any('_colour_costs' in r.getMessage() for r in caplog.records)
  assert [r.box for r in ahead] == [r.box for r in localise.localise_batch(images, maps, settings)]


def test_settings_and_input_errors():
  image, saliency, _ = _scene()
  with pytest.raises(ValueError, match='unknown localise settings'):
    localise.localise(image, saliency, {'quantile': 0.9})
  with pytest.raises(ValueError, match='bg_quantile < fg_quantile'):
    localise.settings(fg_quantile=0.3, bg_quantile=0.5)
  with pytest.raises(ValueError, match='method must be one of'):
    localise.settings(method='grabcut')
  with pytest.raises(ValueError, match='must match the image'):
    localise.localise(image, saliency[:10])
  with pytest.raises(ValueError, match='uint8'):
    localise.localise(image.astype(np.float32), saliency)
  assert localise.settings(localise.Settings(seeds='soft'), iterations=1).seeds == 'soft'
  with pytest.raises(ValueError, match='smoothing must lie in'):
    localise.settings(smoothing=1.5)
  with pytest.raises(ValueError, match="component must be 'largest' or 'all'"):
    localise.settings(component='biggest')


def test_component_all_boxes_every_region_and_largest_only_the_biggest():
  saliency = np.zeros((40, 60))
  saliency[5:15, 5:25] = 1.0  # 200 pixels
  saliency[25:35, 40:50] = 1.0  # 100 pixels
  image = np.zeros((40, 60, 3), np.uint8)
  largest = localise.localise(image, saliency, {'method': 'threshold', 'threshold': 0.5})[1]
  every = localise.localise(image, saliency, {'method': 'threshold', 'threshold': 0.5, 'component': 'all'})[1]
  assert largest == (5, 5, 25, 15) and every == (5, 5, 50, 35)


def test_smoothing_lets_a_region_outweigh_a_single_spike():
  saliency = np.zeros((40, 60))
  saliency[10:30, 30:50] = 1.0  # the object: a broad region of evidence
  saliency[5, 5] = 3.0  # one very strong isolated pixel
  image = np.zeros((40, 60, 3), np.uint8)
  raw = localise.localise(image, saliency, {'method': 'threshold', 'threshold': 0.5})[1]
  smooth = localise.localise(image, saliency, {'method': 'threshold', 'threshold': 0.5, 'smoothing': 0.05})[1]
  assert raw == (5, 5, 6, 6)  # the spike alone
  assert _iou(smooth, (30, 10, 50, 30)) > 0.8, smooth
  np.testing.assert_array_equal(localise.smooth(saliency, 0.0), saliency)
  flat = localise.smooth(np.full((20, 30), 2.0), 0.1)
  np.testing.assert_allclose(flat, 2.0)  # a constant map stays constant (no dark borders)


def test_seeds_are_the_paper_quantiles():
  saliency = np.arange(100, dtype=float).reshape(10, 10)
  fg, bg, status = localise.seeds(saliency, 0.95, 0.30)
  assert status == 'ok'
  assert fg.sum() == 5 and saliency[fg].min() >= 94
  assert bg.sum() == 30 and saliency[bg].max() <= 29.7
  assert not (fg & bg).any()
  # a ReLU'd map with more than 5% of its pixels positive keeps the paper's seeds: the zeros are background
  relu = np.maximum(np.random.default_rng(0).normal(size=(20, 20)), 0)
  fg, bg, _ = localise.seeds(relu, 0.95, 0.30)
  hi = np.quantile(relu, 0.95)
  np.testing.assert_array_equal(fg, relu >= hi)
  np.testing.assert_array_equal(bg, relu == 0)


def test_fg_floor_keeps_only_seeds_near_the_maximum():
  """A small object (2% of the image): the 95% quantile reaches into the background, the floor does not."""
  saliency = np.zeros((10, 10))
  saliency[0, :2] = (1.0, 0.9)  # the object
  saliency[5:, :] = np.linspace(0.01, 0.05, 50).reshape(5, 10)  # weak background response
  fg, _, _ = localise.seeds(saliency, 0.95, 0.30)
  assert fg.sum() == 5 and fg[5:].any()
  fg, bg, _ = localise.seeds(saliency, 0.95, 0.30, fg_floor=0.5)
  assert fg.sum() == 2 and fg[0, :2].all() and not (fg & bg).any()
  with pytest.raises(ValueError, match='fg_floor'):
    localise.settings(fg_floor=1.0)


def test_resize_map_keeps_range_and_shape():
  m = np.random.default_rng(0).uniform(size=(8, 8))
  big = localise.resize_map(m, (32, 40))
  assert big.shape == (32, 40) and big.min() >= m.min() - 1e-12 and big.max() <= m.max() + 1e-12
