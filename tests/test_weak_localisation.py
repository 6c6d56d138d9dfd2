"""The Sect. 3.2 experiment end to end on a few real images, and its surrogate maps."""

import json

import numpy as np
import pytest
from conftest import SHARED_DATA, load_config, shared_data

from saliency_jax import localise, weak_localisation


def _config():
  config = load_config('localise_cifar_resnet')
  config.data_dir = str(SHARED_DATA)
  config.num_images = 6
  config.num_figure = 2
  config.workers = 0
  config.voc_sets = ('voc-raccoon',)  # the large VOC photos dominate the time: one set is enough here
  keep = ('graphcut', 'threshold_20', 'full_image')
  for name in list(config.methods):
    if name not in keep:
      del config.methods[name]
  return config


def test_experiment_writes_every_method_and_the_opencv_comparison(tmp_path):
  pytest.importorskip('torch', reason="needs torch (the optional extra: pip install 'saliency-jax[torch]')")
  pytest.importorskip('cv2', reason="needs OpenCV (the test extra: pip install 'saliency-jax[test]')")
  shared_data('imagenet-val-sample')
  out = weak_localisation.run(_config(), str(tmp_path), log=lambda *_: None)
  assert set(out['methods']) == {'graphcut', 'threshold_20', 'full_image'}
  for r in out['methods'].values():
    assert r['num_images'] == 6 and 0 <= r['gt_known_accuracy'] <= 1
    assert np.isclose(r['gt_known_accuracy'], np.mean(np.asarray(r['iou']) >= 0.5))
  full = out['methods']['full_image']
  assert full['status'] == {'ok': 6} and full['fallbacks'] == 0  # the full image as a method is no fallback
  for r in out['methods'].values():
    assert r['fallbacks'] == sum(v for k, v in r['status'].items() if k != 'ok')
  assert set(out['segmentation_vs_opencv']) == {'voc-raccoon'}
  for r in out['segmentation_vs_opencv'].values():
    assert r['num_images'] == 6
    assert set(r['mean_box_iou']) == {'ours', 'opencv_grabcut_1', 'opencv_grabcut_5'}
  saved = json.loads((tmp_path / 'localisation.json').read_text())
  assert saved['methods']['graphcut']['gt_known_accuracy'] == out['methods']['graphcut']['gt_known_accuracy']
  assert (tmp_path / 'localisation.png').stat().st_size > 0
  assert '| graphcut |' in (tmp_path / 'localisation.md').read_text()


def test_evaluate_counts_fallback_boxes():
  image = np.zeros((20, 30, 3), np.uint8)
  sparse = np.zeros((20, 30))
  sparse[5:8, 10:14] = 1.0
  maps = [np.full((20, 30), 0.5), sparse, np.where(sparse > 0, np.nan, 0.0)]  # flat, sparse, invalid
  results = localise.localise_batch([image] * 3, maps, {'method': 'threshold'})
  r = weak_localisation.evaluate(results, {'boxes': [np.array([[10.0, 5.0, 14.0, 8.0]])] * 3})
  assert r['status'] == {'flat_saliency': 1, 'ok': 1, 'invalid_saliency': 1} and r['fallbacks'] == 2
  assert r['iou'][1] == 1.0  # the sparse map is localised, not a fallback
  table = weak_localisation.markdown({'num_images': 3, 'classification_top1': 1.0, 'methods': {'thr': r}})
  assert '| thr | 0.333 | 0.' in table and table.splitlines()[4].endswith('| 2 |')


def test_surrogate_saliency_peaks_inside_the_box():
  rng = np.random.default_rng(0)
  m = weak_localisation.surrogate_saliency((40, 60), np.array([[10, 5, 30, 25]]), rng, noise=0.0)
  y, x = np.unravel_index(np.argmax(m), m.shape)
  assert 10 <= x < 30 and 5 <= y < 25
  assert m.max() == pytest.approx(1.0, abs=0.01) and m.min() >= 0
  noisy = weak_localisation.surrogate_saliency((40, 60), np.array([[10, 5, 30, 25]]), rng, noise=0.5)
  assert 0 < np.abs(noisy - m).max() <= 0.5
