"""The attribution comparison on a tiny config: every metric against the module that defines it."""

import json

import jax
import numpy as np
import pytest
from conftest import load_config, tiny_synthetic
from flax import nnx

from saliency_jax import faithfulness, localise, metrics, models, saliency
from saliency_jax.jobs import comparison, settings
from saliency_jax.protocol import maps, scores


def _tiny():
  config = tiny_synthetic(load_config('compare_attributions'))
  config.workers = 0
  config.chunk_size = 4  # two chunks for 6 images: the warm-up call and the timed call differ
  config.compare.num_images = 5
  config.compare.num_sanity = 3
  config.compare.num_figure = 2
  config.compare.timing_repeats = 1
  config.compare.deletion_steps = 8
  config.compare.methods.smoothgrad.samples = 3
  config.compare.methods.integrated_gradients.steps = 4
  # the job's paths on three of the new methods (every method runs in test_attribution's one-API test): a
  # channel-chunked CAM, XRAI's host-side regions and LRP's composite named in the config
  for name in ('grad_cam_plus_plus', 'xgrad_cam', 'layer_cam', 'hires_cam', 'eigen_cam', 'ablation_cam',
               'blur_ig', 'guided_ig', 'rise', 'deeplift'):
    del config.compare.methods[name]
  config.compare.methods.xrai.steps = 4
  config.compare.localise.graphcut.gmm_iters = 3
  return config


def test_comparison_end_to_end(tmp_path):
  config = _tiny()
  comparison.run(config, tmp_path, log=lambda *_: None)
  for name in ('comparison.json', 'comparison.md', 'comparison.png', 'sanity.png', 'deletion_insertion.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / 'comparison.json').read_text())
  assert list(saved['methods']) == list(config.compare.methods)
  table = comparison.table(saved)
  assert len(table.splitlines()) == 2 + len(config.compare.methods)
  for r in saved['methods'].values():
    for key in ('gt_known_graphcut', 'gt_known_threshold_15', 'pointing_game', 'deletion_auc',
                'insertion_auc'):
      assert 0 <= r[key] <= 1, key
    assert r['ms_per_image'] > 0

  # The gradient row recomputed from the saliency module and the metrics directly.
  model, x, labels, images, masks, boxes, box_labels = _data(config, tmp_path)
  for r in saved['methods'].values():
    assert (len(r['sanity']['absolute']) == len(r['sanity']['layers'])
            == len(faithfulness.randomisation_groups(model)))
  maps = np.asarray(saliency.saliency_maps(model, x, labels))
  g = saved['methods']['gradient']
  found = localise.localise_batch(list(images), list(maps), config.compare.localise.graphcut)
  assert g['gt_known_graphcut'] == metrics.gt_known_accuracy([r.box for r in found], box_labels, boxes,
                                                              labels)
  assert g['fallbacks_graphcut'] == sum(r.status != 'ok' for r in found)
  found = localise.localise_batch(list(images), list(maps), config.compare.localise.threshold_15)
  assert g['gt_known_threshold_15'] == metrics.gt_known_accuracy([r.box for r in found], box_labels, boxes,
                                                                  labels)
  assert g['fallbacks_threshold_15'] == sum(r.status != 'ok' for r in found)
  hits = metrics.pointing_hits(maps, masks, tolerance=config.pointing_tolerance)
  assert g['pointing_game'] == float(hits.mean()) and g['pointing_played'] == len(hits)
  per_class = [hits[labels == c].mean() for c in np.unique(labels)]
  assert g['pointing_game_class_mean'] == pytest.approx(np.mean(per_class))
  assert 'fallback boxes GraphCut' in table and 'pointing, class mean' in table
  curves = faithfulness.deletion_insertion(model, x, labels, maps, steps=8,
                                      insertion_blur=config.compare.insertion_blur)
  np.testing.assert_allclose([g['deletion_auc'], g['insertion_auc']],
                             [curves['deletion'].mean(), curves['insertion'].mean()], rtol=1e-5)


def test_pointing_on_boxes_leaves_out_all_difficult_classes():
  maps = np.zeros((3, 20, 20))
  maps[0, 5, 5] = maps[1, 5, 5] = maps[2, 15, 15] = 1.0
  boxes = [np.array([[0, 0, 8, 8]]), np.array([[0, 0, 8, 8]]), np.array([[0, 0, 8, 8], [12, 12, 18, 18]])]
  # image 1: its one box is difficult, so it is not played; image 2 peaks in its difficult box, which counts
  difficult = [np.array([False]), np.array([True]), np.array([False, True])]
  r = scores.pointing(maps, np.array([0, 1, 1]), boxes=boxes, difficult=difficult, tolerance=0)
  assert r['played'] == 2 and r['excluded'] == 1 and r['per_image'] == 1.0
  assert r['per_class'] == {0: 1.0, 1: 1.0}
  every = scores.pointing(maps, np.array([0, 1, 1]), boxes=boxes, tolerance=0)
  assert every['played'] == 3 and every['per_image'] == 1.0
  maps[1, 5, 5], maps[1, 19, 19] = 0.0, 1.0  # image 1 now misses: only counted without the difficult flags
  flagged = scores.pointing(maps, np.array([0, 1, 1]), boxes=boxes, difficult=difficult, tolerance=0)
  assert flagged['per_image'] == 1.0
  every = scores.pointing(maps, np.array([0, 1, 1]), boxes=boxes, tolerance=0)
  assert every['per_image'] == 2 / 3 and every['class_mean'] == pytest.approx((1 + 0.5) / 2)


def _data(config, workdir):
  p = settings.prepare(config, workdir, log=lambda *_: None)
  n, test = config.compare.num_images, p.data['test']
  return (p.model, p.splits['test']['images'][:n], test['labels'][:n], test['images'][:n],
          test['masks'][:n], test['boxes'][:n], test['box_labels'][:n])


def test_compute_maps_matches_the_paper_map_and_times_every_method():
  model = models.SmallConvNet(3, stages=((4,), (8,)), hidden=(), rngs=nnx.Rngs(0))
  model.eval()
  x = jax.random.normal(jax.random.key(1), (5, 16, 16, 3))
  labels = np.array([0, 1, 2, 0, 1])
  specs = {name: maps.MapSpec(name, 'image') for name in ('gradient', 'grad_cam')}
  made, seconds = comparison.compute_maps(model, x, labels, specs, chunk_size=2,
                                          log=lambda *_: None)
  np.testing.assert_allclose(made['gradient'][0], np.asarray(saliency.saliency_maps(model, x, labels)),
                             rtol=1e-5)
  assert made['grad_cam'][0].shape == (5, 16, 16) and (made['grad_cam'][0] >= 0).all()
  assert set(seconds) == {'gradient', 'grad_cam'} and min(seconds.values()) > 0


def test_class_boxes_keeps_the_true_class_only():
  boxes = [np.array([[0, 0, 4, 4], [2, 2, 8, 8]]), np.array([[1, 1, 3, 3]])]
  kept = scores.class_boxes([np.array([0, 1]), np.array([2])], boxes, [1, 2])
  np.testing.assert_array_equal(kept[0], [[2, 2, 8, 8]])
  np.testing.assert_array_equal(kept[1], [[1, 1, 3, 3]])


def test_benchmark_methods_times_the_package_against_each_anchor(tmp_path):
  """The anchor benchmark on a few methods, tiny: every row holds both sides' seconds and their ratio."""
  pytest.importorskip('captum', reason='the torch extra (Captum)')
  pytest.importorskip('saliency.core', reason="the test extra (PAIR's saliency)")
  from saliency_jax.jobs import benchmark_methods
  config = load_config('benchmark_methods')
  config.num_images, config.image_size, config.repeats, config.fast_repeats, config.settle = 2, 16, 1, 1, 0
  config.medium_repeats = 1
  config.forward_batch = 4
  config.stages = ((8,), (16,))
  config.methods = {'gradient': {}, 'gradient_shap': {'samples': 2}, 'layer_cam': {},
                    'rise': {'num_masks': 16}, 'blur_ig': {'steps': 2, 'max_sigma': 2.0}, 'deeplift': {}}
  out = benchmark_methods.run(config, tmp_path, log=lambda *a: None)
  assert set(out['methods']) == {'gradient', 'gradient_shap', 'layer_cam', 'rise', 'blur_ig', 'deeplift'}
  for row in out['methods'].values():
    assert len(row['seconds']['jax']) == len(row['seconds']['anchor']) == 1
    assert row['speedup'] == pytest.approx(row['median_seconds']['anchor'] / row['median_seconds']['jax'])
  assert (tmp_path / 'benchmark_methods.json').is_file()
  # every call also under the package's other backward options; the gradient's bare VJP beside both sides,
  # and a forward pass, under the three sets of compiler options
  for row in out['methods'].values():
    assert len(row['seconds']['jax_ynn_convolutions']) == 1
  options = {'default', 'ynn_convolutions', 'no_ynn_convolutions'}
  bare = {f'bare_{o}' for o in options}
  assert set(out['methods']['gradient']['median_seconds']) == {'jax', 'anchor', 'jax_ynn_convolutions', *bare}
  assert set(out['forward_options']['median_seconds']) == options
