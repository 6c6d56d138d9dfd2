"""The main job end to end on a tiny config: outputs, metrics against the localisation module, resume."""

import json

import numpy as np
import pytest
from conftest import SHARED_DATA, load_config, shared_data, tiny_synthetic

from saliency_jax import pipeline


def _tiny():
  config = tiny_synthetic(load_config('quickstart'))
  config.crop_size = 28
  config.top_k = 2
  config.num_deconvnet = 2
  config.num_figure = 2
  config.workers = 0
  config.localise = {'graphcut': {'method': 'graphcut', 'iterations': 1}, 'full_image': {'method': 'full'}}
  config.class_models.steps = 20
  return config


def test_main_job_end_to_end_and_resume(tmp_path):
  config = _tiny()
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  for name in ('metrics.json', 'report.md', 'saliency.png', 'localisation.png', 'train_log.jsonl', 'class_models.png',
               'class_models_objective.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / 'metrics.json').read_text())
  assert 0 <= saved['test_accuracy'] <= 1 and saved['num_eval'] == 6
  assert set(saved['localisation']) == {'graphcut', 'full_image'}
  for r in saved['localisation'].values():
    assert {'gt_known_box_accuracy', 'top1_loc_error', 'top2_loc_error'} <= set(r)
    assert r['top2_loc_error'] <= r['top1_loc_error']  # more guesses can only help
  # Objects cover 20-60% of the side: the full-image box never reaches IoU 0.5 with them.
  assert saved['localisation']['full_image']['gt_known_box_accuracy'] == 0.0
  assert saved['deconvnet_vs_gradient']['deconvnet_explicit_vs_vjp_relative'] < 1e-4
  assert 'graphcut' in (tmp_path / 'report.md').read_text()
  c = saved['class_models']
  assert c['classes'] == [0, 1, 2] and c['names'] == list(config.class_names)
  labels = np.array([int(y) for y in pipeline.load_data(config, tmp_path)['test']['labels']])
  best = [max((s for s, y in zip(_test_scores(config, tmp_path)[:, k], labels) if y == k), default=float('nan'))
          for k in range(3)]
  np.testing.assert_allclose(c['best_real_score'], best, rtol=1e-5)
  has = np.isfinite(best)
  assert c['above_every_real_image'] == bool((np.array(c['score'])[has] > np.array(best)[has]).all())

  again = pipeline.run(config, tmp_path, log=lambda *_: None)  # cached data, finished training
  assert again['training']['resumed_from'] == config.train.steps
  assert again['test_accuracy'] == results['test_accuracy']
  np.testing.assert_equal(again['localisation']['graphcut']['gt_known_box_accuracy'],
                          results['localisation']['graphcut']['gt_known_box_accuracy'])


def _test_scores(config, workdir):
  p = pipeline.prepare(config, workdir, log=lambda *_: None)
  return np.asarray(p['model'](p['splits']['test']['images']))


def test_main_job_with_a_pretrained_checkpoint_localises_on_the_photos(tmp_path):
  pytest.importorskip('torch', reason="reading the PyTorch checkpoint needs the torch extra")
  shared_data('cifar10-resnet', 'resnet20-12fca82f.th')
  config = load_config('cifar_resnet_imagenet_sample')
  config.data.data_dir = str(SHARED_DATA)
  config.checkpoint.path = str(SHARED_DATA / 'cifar10-resnet' / 'resnet20-12fca82f.th')
  config.num_eval = 4
  config.num_deconvnet = 2
  config.num_figure = 2
  config.workers = 0
  config.localise = {'graphcut': {'method': 'graphcut', 'iterations': 0}, 'full_image': {'method': 'full'}}
  config.class_models.steps = 10
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  assert results['num_test'] == 150 and results['num_eval'] == 4
  assert results['training']['steps'] == 0 and 'train' not in results['config']
  # Measured with experiments/evaluate_cifar_resnets.py: 102 of the 150 right (68.0%).
  assert abs(results['test_accuracy'] - 102 / 150) < 1e-9
  assert (tmp_path / 'localisation.png').is_file()
  photos = list((tmp_path / 'data').glob('photos-227-*.npz'))
  assert len(photos) == 1


def test_ilsvrc_protocol_with_the_imported_mobilenet_on_real_val_images(tmp_path):
  shared_data('imagenet-mobilenet', 'model.json')
  shared_data('imagenet-val-sample')
  config = load_config('ilsvrc_mobilenet_sample')
  config.data_dir = str(SHARED_DATA)  # the data folder and the checkpoint both follow it
  config.num_eval = 3
  config.num_deconvnet = 1
  config.num_figure = 1
  config.workers = 0
  config.localise = {'graphcut_smoothed_all': config.localise.graphcut_smoothed_all.to_dict(),
                     'full_image': {'method': 'full'}}
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  assert results['num_test'] == 650 and results['num_eval'] == 3
  assert config.checkpoint.path == f'{SHARED_DATA}/imagenet-mobilenet'
  for r in results['localisation'].values():
    assert {'gt_known_box_accuracy', 'top1_loc_error', 'top5_loc_error'} <= set(r)
    assert r['top5_loc_error'] <= r['top1_loc_error']
    assert sum(r['status'].values()) == 3 * 6  # the true class and the top 5, per image
  assert 0.4 <= results['test_accuracy'] <= 0.9  # centre crops of all 650 images (published top-1: 68.4%)
  assert set(results['deconvnet_vs_gradient']['spearman']) == {'gradient_vs_deconvnet', 'gradient_vs_guided'}
  report = (tmp_path / 'report.md').read_text()
  assert '| graphcut_smoothed_all |' in report and (tmp_path / 'localisation.png').stat().st_size > 0
  assert len(list((tmp_path / 'data').glob('photos-227-*.npz'))) == 1
