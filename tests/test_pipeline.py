"""The main job end to end on a tiny config: outputs, metrics against the localisation module, resume."""

import json
import pathlib

import ml_collections
import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, load_config, shared_data, tiny_main_job

from saliency_jax import attribution, deconvnet, metrics, saliency, stats
from saliency_jax.jobs import pipeline, settings
from saliency_jax.protocol import cache as kept
from saliency_jax.protocol import localisation, maps, scores, setup


def _tiny():
  config = tiny_main_job(load_config('quickstart'))
  config.num_deconvnet = 2
  config.num_figure = 2
  config.localise = {'graphcut': {'method': 'graphcut', 'iterations': 1}, 'full_image': {'method': 'full'}}
  config.class_models.steps = 20
  return config


def test_main_job_end_to_end_and_resume(tmp_path, monkeypatch):
  config = _tiny()
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  for name in ('metrics.json', 'report.md', 'saliency.png', 'localisation.png', 'train_log.jsonl',
               'class_models.png', 'class_models_objective.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / 'metrics.json').read_text())
  assert 0 <= saved['test_accuracy'] <= 1 and saved['num_eval'] == 6
  low, high = saved['accuracy_intervals']['test_accuracy']  # exact binomial, from the count right
  correct = round(saved['test_accuracy'] * saved['num_test'])
  assert [low, high] == [stats.binomial_interval(correct, saved['num_test'])[e] for e in ('low', 'high')]
  assert low <= saved['test_accuracy'] <= high and set(saved['accuracy_intervals']) == {
      'test_accuracy', 'top1_accuracy_eval', 'top2_accuracy_eval'}
  assert set(saved['localisation']) == {'graphcut', 'full_image'}
  for r in saved['localisation'].values():
    assert {'gt_known_box_accuracy', 'top1_loc_error', 'top2_loc_error'} <= set(r)
    assert r['top2_loc_error'] <= r['top1_loc_error']  # more guesses can only help
    # every box not 'ok' is a fallback; 6 true-class boxes and 6 x 2 top-k boxes
    assert sum(r['status'].values()) == 18
    fallbacks = r['fallbacks']
    assert fallbacks['total'] == fallbacks['true'] + fallbacks['top'] == 18 - r['status'].get('ok', 0)
  # the full image is a method here, not a fallback
  assert saved['localisation']['full_image']['fallbacks'] == {'true': 0, 'top': 0, 'total': 0}
  assert 0 <= saved['pointing_game'] <= 1 and 0 <= saved['pointing_game_class_mean'] <= 1
  # Objects cover 20-60% of the side: the full-image box never reaches IoU 0.5 with them.
  assert saved['localisation']['full_image']['gt_known_box_accuracy'] == 0.0
  assert saved['localisation']['full_image']['intervals']['gt_known_box_accuracy'] == [0.0, 0.0]
  w = saved['wsol']['gradient']  # MaxBoxAccV2 of the gradient maps; PxAP: the synthetic set has masks
  assert list(w['box_acc']) == ['0.3', '0.5', '0.7'] and 0 <= w['pxap'] <= 1
  assert w['max_box_acc_v2'] == pytest.approx(np.mean(list(w['box_acc'].values())))
  assert w['box_acc']['0.3'] >= w['box_acc']['0.5'] >= w['box_acc']['0.7']
  assert w['intervals']['max_box_acc_v2'][0] <= w['max_box_acc_v2'] <= w['intervals']['max_box_acc_v2'][1]
  assert saved['deconvnet_vs_gradient']['deconvnet_explicit_vs_vjp_relative'] < 1e-4
  # no selected cut: the paper's, paired against every other on the same images
  loc = saved['localisation']
  assert not saved['selected_method'] and saved['compared'] == 'graphcut'
  assert set(saved['comparisons']) == {'full_image'}
  c = saved['comparisons']['full_image']['top2_loc_error']  # positive: graphcut localises more images
  difference = loc['full_image']['top2_loc_error'] - loc['graphcut']['top2_loc_error']
  assert c['difference'] == pytest.approx(difference)
  report = (tmp_path / 'report.md').read_text()
  assert 'The cut `graphcut` against others on the same images' in report
  assert 'graphcut' in report and 'fallback boxes (true / top-2)' in report and 'mean over classes' in report
  c = saved['class_models']
  assert c['classes'] == [0, 1, 2] and c['names'] == list(config.class_names)
  cached = _load(config, tmp_path)['test']
  labels = np.array([int(y) for y in cached['labels']])
  # VOC's difficult flags travel with the boxes through the cache (the synthetic set has none)
  assert [d.tolist() for d in cached['difficult']] == [[False] * len(b) for b in cached['boxes']]
  scores = _test_scores(config, tmp_path)
  best = [max((s for s, y in zip(scores[:, k], labels) if y == k), default=float('nan')) for k in range(3)]
  np.testing.assert_allclose(c['best_real_score'], best, rtol=1e-5)
  has = np.isfinite(best)
  assert c['above_every_real_image'] == bool((np.array(c['score'])[has] > np.array(best)[has]).all())

  again = pipeline.run(config, tmp_path, log=lambda *_: None)  # cached data, finished training
  assert again['training']['resumed_from'] == config.train.steps
  assert again['test_accuracy'] == results['test_accuracy']
  np.testing.assert_equal(again['localisation']['graphcut']['gt_known_box_accuracy'],
                          results['localisation']['graphcut']['gt_known_box_accuracy'])
  # the data cache is keyed by the data code too: other code reads the splits again, into its own files
  cached_files = sorted((tmp_path / 'data').glob('*.npz'))
  monkeypatch.setattr(setup, 'source_digest', lambda folder='': f'other {folder} code')
  reread = _load(config, tmp_path)['test']
  assert len(list((tmp_path / 'data').glob('*.npz'))) == 2 * len(cached_files) > 0
  np.testing.assert_array_equal(reread['images'], cached['images'])


def _numbers(metrics):
  if isinstance(metrics, dict):
    return {k: _numbers(v) for k, v in metrics.items() if k not in ('seconds', 'config', 'resumed_from')}
  return metrics


def test_the_test_split_is_read_chunk_by_chunk_into_the_numbers_of_one_chunk(tmp_path, monkeypatch):
  config = _tiny()
  config.data.num_test = 7
  config.chunk_size = 2  # saliency batches that chunks of 2 and of 6 records share
  config.eval_chunk = 6
  whole = pipeline.run(config, tmp_path / 'a', log=lambda *_: None)
  read = []  # the records each read of the test split asked for
  def load(source, size=None, **kwargs):
    read.append(len(source))
    return original(source, size, **kwargs)
  original = setup.transforms.load
  monkeypatch.setattr(setup.transforms, 'load', load)
  config.eval_chunk = 2
  logged = []
  chunked = pipeline.run(config, tmp_path / 'a', log=logged.append)  # the trained net, other chunks
  # 4 chunks of at most 2 records, then the first images again for the figures and the Sect. 4 summary
  assert read == [2, 2, 2, 1, max(config.num_figure, config.num_deconvnet)]
  assert len(list((tmp_path / 'a' / 'evaluation').glob('*/chunk-*.npz'))) == 2 + 4  # each its own folder
  assert _numbers(chunked) == _numbers(whole)
  assert {'data_test', 'test_accuracy', 'saliency', 'localisation', 'evaluation', 'class_scores',
          'class_models', 'deconvnet'} <= set(chunked['seconds'])
  # a rerun finds every chunk on disk: nothing of the test split is read but the figures' images
  assert not any('resuming the evaluation' in line for line in logged)
  read.clear()
  pipeline.run(config, tmp_path / 'a', log=logged.append)
  assert read == [2] and any('resuming the evaluation: 4 of 4 chunks already in' in line for line in logged)
  # a chunk copied over another and a truncated one are evaluated again, never used (before: the copy was
  # merged silently); a data cache whose labels changed is read again
  where = next(p.parent for p in (tmp_path / 'a' / 'evaluation').glob('*/chunk-000003.npz'))
  (where / 'chunk-000002.npz').write_bytes((where / 'chunk-000000.npz').read_bytes())
  (where / 'chunk-000003.npz').write_bytes((where / 'chunk-000003.npz').read_bytes()[:100])
  cache = next((tmp_path / 'a' / 'data').glob('train-*.npz'))
  with np.load(cache) as f:
    arrays = dict(f)
  np.savez(cache, **{**arrays, 'labels': np.roll(arrays['labels'], 1)})
  read.clear()
  logged.clear()
  repaired = pipeline.run(config, tmp_path / 'a', log=logged.append)
  assert read == [config.data.num_train, 2, 1, max(config.num_figure, config.num_deconvnet)]
  assert any('chunk-000002.npz is not the file expected here' in line for line in logged)
  assert any('chunk-000003.npz is damaged' in line for line in logged)
  assert any(f'{cache} has changed since it was written' in line for line in logged)
  assert _numbers(repaired) == _numbers(whole)
  # a rerun under other code (the package's source changed) evaluates again, into a folder of its own
  digest = kept.source_digest  # the package's digest changes, the data code's (`setup`'s) does not
  monkeypatch.setattr(kept, 'source_digest', lambda part='': digest(part) if part else 'other')
  read.clear()
  logged.clear()
  again = pipeline.run(config, tmp_path / 'a', log=logged.append)
  assert read == [2, 2, 2, 1, max(config.num_figure, config.num_deconvnet)]
  assert not any('resuming the evaluation' in line for line in logged)
  assert sum('made by other code' in line for line in logged) == 1  # the 4 chunks of the run before
  assert len(list((tmp_path / 'a' / 'evaluation').glob('*/chunk-*.npz'))) == 2 + 4 + 4
  assert _numbers(again) == _numbers(whole)


def test_localisation_metrics_count_fallback_boxes_per_method():
  """Two images, top-2: statuses as `localise_images` lays them out (per image: true class, then top-k)."""

  boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
  status = [['ok', 'empty_segment', 'ok'], ['flat_saliency', 'ok', 'invalid_saliency']]
  found = {'graphcut': {'true_boxes': boxes, 'top_boxes': np.stack([boxes, boxes], 1), 'seconds': 1.0,
                        'status': np.array(status)},
           'full_image': {'true_boxes': boxes, 'top_boxes': np.stack([boxes, boxes], 1), 'seconds': 1.0,
                          'status': np.full((2, 3), 'ok')}}
  out = scores.localisation_metrics(found, np.array([0, 1]), [[0], [1]], [boxes[:1], boxes[1:]],
                                    np.array([[0, 1], [1, 0]]), log=lambda *_: None)
  assert out['graphcut']['fallbacks'] == {'true': 1, 'top': 2, 'total': 3}
  assert out['full_image']['fallbacks'] == {'true': 0, 'top': 0, 'total': 0}
  assert out['graphcut']['gt_known_box_accuracy'] == 1.0  # the boxes are the ground truth
  table = pipeline.table({'config': {'top_k': 2}, 'localisation': out})
  exact = '1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000]'  # every image right: no spread
  assert f'| graphcut | {exact} | 1 / 2 |' in table and '| full_image |' in table
  assert out['graphcut']['intervals'] == {'gt_known_box_accuracy': [1.0, 1.0], 'top1_loc_error': [0.0, 0.0],
                                          'top2_loc_error': [0.0, 0.0]}
  old = {'config': {'top_k': 2}, 'localisation': {name: {k: v for k, v in r.items() if k != 'intervals'}
                                                  for name, r in out.items()}}
  assert '| graphcut | 1.000 | 0.000 | 0.000 | 1 / 2 |' in pipeline.table(old)  # results kept without them


def _test_scores(config, workdir):
  p = settings.prepare(config, workdir, log=lambda *_: None)
  return np.asarray(p.model(p.splits['test']['images']))


def _load(config, workdir):
  """The splits the job reads, from the workdir's data cache."""
  return setup.load_splits(settings.data(config), workdir / 'data',
                           train_split=not settings.checkpoint(config).kind, log=lambda *_: None)


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
  variants = load_config('cifar_resnet_imagenet_sample', 'resnet20:variants')  # Sect. 3.2's open choices
  assert variants.crop_size == 0 and {'graphcut', 'graphcut_grabcut_3', 'graphcut_soft_seeds',
                                      'threshold_15', 'full_image', 'centre'} <= set(variants.localise)
  assert pipeline.figure_method(variants) in variants.localise
  assert results['training']['steps'] == 0 and 'train' not in results['config']
  # Measured with experiments/evaluate_cifar_resnets.py: 102 of the 150 right (68.0%).
  assert abs(results['test_accuracy'] - 102 / 150) < 1e-9
  assert (tmp_path / 'localisation.png').is_file()
  # the test split streamed: no copy of it in the workdir, its results in one chunk of 150 records
  assert not list((tmp_path / 'data').glob('test-*')) and not list((tmp_path / 'data').glob('photos-*'))
  assert len(list(tmp_path.glob('evaluation/*/chunk-*.npz'))) == 1


# The first three images of the ILSVRC sample's report half as the kept full run cut them
# (runs/ilsvrc_mobilenet_report/evaluation/*/chunk-000000.npz of the command that made
# results/ilsvrc_mobilenet_report.json): their top-5 classes and the selected pair's true-class boxes.
REPORT_FIRST_THREE = {
    'top_classes': [[472, 693, 814, 975, 408], [625, 779, 407, 555, 865], [860, 509, 454, 582, 624]],
    'true_boxes': [[0, 19, 227, 188], [0, 0, 93, 161], [113, 0, 227, 227]],
}


def test_ilsvrc_protocol_with_the_imported_mobilenet_on_real_val_images(tmp_path):
  """The shipped ILSVRC config on the first three images of the report half, against the kept full run
  (results/ilsvrc_mobilenet_report.json, the same config on all 326): the same test accuracy, and the
  selected pair's true-class boxes of those three images as that run cut them (REPORT_FIRST_THREE)."""
  shared_data('imagenet-mobilenet', 'model.json')
  shared_data('imagenet-val-sample')
  kept_run = json.loads((ROOT / 'results' / 'ilsvrc_mobilenet_report.json').read_text())
  config = load_config('ilsvrc_mobilenet_sample')
  config.data_dir = str(SHARED_DATA)  # the data folder and the checkpoint both follow it
  config.data.part = 'report'
  config.num_eval = 3
  config.num_deconvnet = 1
  config.num_figure = 1
  config.workers = 0
  selected = config.selected_method  # the config's figure method too
  assert config.figure_method == selected == kept_run['selected_method']
  config.localise = {selected: config.localise[selected].to_dict(), 'full_image': {'method': 'full'}}
  assert len(config.class_models.classes) == 10 and config.class_models.steps > 0  # the stage is on
  config.class_models.classes = config.class_models.classes[:2]
  config.class_models.steps = 5
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  # the test accuracy of the whole report half: the kept run's, image for image the same count
  assert results['num_test'] == kept_run['num_test'] == 326 and results['num_eval'] == 3
  assert results['test_accuracy'] == kept_run['test_accuracy']
  # the top-5 classes and the selected pair's true-class boxes of the first three report images: the
  # kept run's
  with np.load(next(tmp_path.glob('evaluation/*/chunk-000000.npz'))) as chunk:
    np.testing.assert_array_equal(chunk['rows/evaluated/top_classes'], REPORT_FIRST_THREE['top_classes'])
    true_boxes = chunk[f'rows/evaluated/found/{selected}/true_boxes']
  # GraphCut's colour models are fitted to a random sample of the seed pixels: maps made in batches of
  # another size differ at float round-off and can move a box (here by up to 16 px; further for some
  # top-5 boxes, which are not compared); the full image's IoU with these boxes is at most 0.74
  assert (metrics.box_iou(true_boxes, REPORT_FIRST_THREE['true_boxes']) >= 0.85).all()
  assert results['class_models']['classes'] == [897, 508]  # washing machine, computer keyboard
  failures = results['failures']  # config.failure_analysis: why the top-5 guesses fail, per method
  for name, counts in failures['per_method'].items():
    assert sum(counts.values()) == 3
    assert 1 - counts['correct'] / 3 == pytest.approx(results['localisation'][name]['top5_loc_error'])
  best = min(r['top5_loc_error'] for r in results['localisation'].values())
  assert failures['oracle_top5_loc_error'] <= best
  # the pick against the best baseline on the same images: the difference of the images right
  c = results['comparisons']['full_image']['top5_loc_error']
  right = {name: failures['per_method'][name]['correct'] for name in (selected, 'full_image')}
  assert c['difference'] == pytest.approx((right[selected] - right['full_image']) / 3)
  # failures.png: typical failures of the selected pair (and the paper's), drawn when it has any
  missed = failures['per_method'][selected]['correct'] < 3
  assert (tmp_path / 'failures.png').is_file() == missed
  assert config.maps[config.localise[selected]['map']].method == 'grad_cam'  # the study's pick
  assert (tmp_path / 'class_models.png').stat().st_size > 0
  assert results['selected_method'] == selected
  assert config.checkpoint.path == f'{SHARED_DATA}/imagenet-mobilenet'
  for r in results['localisation'].values():
    assert sum(r['status'].values()) == 3 * 6  # the true class and the top 5, per image
  assert set(results['deconvnet_vs_gradient']['spearman']) == {'gradient_vs_deconvnet', 'gradient_vs_guided'}
  report = (tmp_path / 'report.md').read_text()
  assert f'| **{selected}** (selected) |' in report and (tmp_path / 'localisation.png').stat().st_size > 0
  assert len(list(tmp_path.glob('evaluation/*/chunk-*.npz'))) == 2  # 326 records in chunks of 200


def test_other_maps_and_shared_true_class_maps(tmp_path):
  """config.maps: a localisation method may cut another map than the paper's; config.share_true_maps: a
  true class among the top-k takes that class's map and box instead of its own pass and cut."""
  config = _tiny()
  config.class_models.steps = 0
  config.maps = {'grad_cam': {'method': 'grad_cam'},
                 'guided': {'method': 'guided_backprop', 'crops': 'centre'}}
  config.localise = {'graphcut': {'method': 'graphcut', 'iterations': 1},
                     'grad_cam_20': {'method': 'threshold', 'threshold': 0.2, 'map': 'grad_cam'},
                     'guided_15': {'method': 'threshold', 'threshold': 0.15, 'map': 'guided'}}
  config.figure_method = 'grad_cam_20'
  plain = pipeline.run(config, tmp_path, log=lambda *_: None)
  assert {'maps_grad_cam', 'maps_guided'} <= set(plain['seconds'])
  config.share_true_maps = True
  shared = pipeline.run(config, tmp_path, log=lambda *_: None)
  for name in config.localise:  # the top-k maps and boxes are the same maps and boxes
    for metric in ('top1_loc_error', 'top2_loc_error'):
      assert shared['localisation'][name][metric] == plain['localisation'][name][metric], (name, metric)

  p = settings.prepare(config, tmp_path, log=lambda *_: None)
  model, x, labels = p.model, p.splits['test']['images'], p.data['test']['labels']
  options = {'labels': labels, 'top_k': config.top_k, 'crop_size': config.crop_size,
             'chunk_size': config.chunk_size}
  apart = maps.make_maps(model, x, specs={'gradient': maps.GRADIENT}, **options)
  shared_maps = maps.make_maps(model, x, specs={'gradient': maps.GRADIENT}, share_true=True, **options)
  top_classes, (true_maps, top_maps) = apart.top_classes, apart.maps['gradient']
  top2, (true_maps2, top_maps2) = shared_maps.top_classes, shared_maps.maps['gradient']
  position = shared_maps.shared
  assert apart.shared is None
  np.testing.assert_array_equal(top2, top_classes)
  np.testing.assert_array_equal(top_maps2, top_maps)
  hit = position >= 0
  assert hit.any() and ((top_classes == labels[:, None]).any(1) == hit).all()
  np.testing.assert_array_equal(true_maps2[hit], top_maps[hit, position[hit]])
  np.testing.assert_allclose(true_maps2, true_maps, rtol=1e-4, atol=1e-6)  # the same maps, other batches
  # the shared boxes are the top-k boxes; the others are cut as without sharing
  images = p.data['test']['images']
  gradient = {'gradient': (true_maps2, top_maps2)}
  index = np.arange(len(x))
  only = {'graphcut': localisation.Cut.parse('graphcut', config.localise.graphcut)}
  a = localisation.localise_images(images, gradient, only, index, len(x))[0]['graphcut']
  b = localisation.localise_images(images, gradient, only, index, len(x), position)[0]['graphcut']
  np.testing.assert_array_equal(b['top_boxes'], a['top_boxes'])
  np.testing.assert_array_equal(b['true_boxes'][~hit], a['true_boxes'][~hit])
  np.testing.assert_array_equal(b['true_boxes'][hit], a['top_boxes'][hit, position[hit]])

  # the other maps: each method's maps of the top-k and true classes, as the library computes them
  def maps_of(spec):
    made = maps.make_maps(model, x, specs={'m': maps.MapSpec.parse('m', spec)}, labels=labels,
                          top_classes=top_classes, crop_size=config.crop_size, chunk_size=config.chunk_size)
    true, top = made.maps['m']
    return top, true
  centre = maps_of(config.maps.guided)
  c = config.crop_size
  h = x.shape[1]
  o = (h - c) // 2
  assert not centre[0][:, :, :o].any() and not centre[1][:, :, -o:].any()  # zero outside the centre crop
  g = attribution.to_map(attribution.guided_backprop(model, x[:, o:o + c, o:o + c], top_classes[:, 1]))
  np.testing.assert_allclose(centre[0][:, 1, o:o + c, o:o + c], g, rtol=1e-5, atol=1e-7)
  ten = maps_of({'method': 'deconvnet'})
  _, d = saliency.class_saliency(model, x, labels[:, None], crop_size=c, relu=deconvnet.deconvnet_relu)
  np.testing.assert_allclose(ten[1], np.asarray(d)[:, 0], rtol=1e-5, atol=1e-7)

  # a 10-crop Grad-CAM map comes out of the gradient maps' own passes: the maps computed apart
  assert maps.shares_gradient_passes(model, maps.MapSpec.parse('grad_cam', config.maps.grad_cam))
  assert not maps.shares_gradient_passes(model, maps.MapSpec.parse('guided', config.maps.guided))
  seconds = {}
  config.share_true_maps = True
  made = pipeline.maps_of(pipeline.evaluation(config), model, x, labels, ['grad_cam', 'guided'], images,
                          seconds)
  fused_classes, fused, position2 = made.top_classes, made.maps, made.shared
  assert list(fused) == ['gradient', 'grad_cam', 'guided'] and seconds['maps_grad_cam'] == 0
  np.testing.assert_array_equal(fused_classes, top_classes)
  np.testing.assert_array_equal(position2, position)
  np.testing.assert_allclose(fused['gradient'][1], top_maps, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(fused['gradient'][0], true_maps2, rtol=1e-5, atol=1e-7)
  apart_top, apart_true = maps_of(config.maps.grad_cam)
  np.testing.assert_allclose(fused['grad_cam'][1], apart_top, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused['grad_cam'][0][~hit], apart_true[~hit], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(fused['grad_cam'][0][hit], fused['grad_cam'][1][hit, position[hit]])

  config.localise.grad_cam_20.map = 'gradcam'
  with pytest.raises(ValueError, match="localises map 'gradcam', which config.maps does not name"):
    pipeline.run(config, tmp_path, log=lambda *_: None)
  config.localise.grad_cam_20.map = 'grad_cam'
  config.maps.grad_cam.crops = 'all'
  with pytest.raises(ValueError, match="config.maps.grad_cam: crops must be one of"):
    pipeline.run(config, tmp_path, log=lambda *_: None)


def test_main_job_with_any_jax_model_from_the_config(tmp_path):
  """config.checkpoint kind 'python': a function returning a linen net as a plain callable and its
  preprocessing; the job maps, localises and compares the rules (by program transformation)."""
  config = _tiny()
  config.class_models.steps = 3
  path = f'{pathlib.Path(__file__).parent}/foreign_model.py:build'
  config.checkpoint = ml_collections.ConfigDict({'kind': 'python', 'path': path})
  results = pipeline.run(config, tmp_path, log=lambda *_: None)
  assert results['training']['steps'] == 0 and results['num_eval'] == 6
  assert set(results['localisation']) == {'graphcut', 'full_image'}
  sect4 = results['deconvnet_vs_gradient']
  assert set(sect4['spearman']) == {'gradient_vs_deconvnet', 'gradient_vs_guided'}
  assert 'deconvnet_explicit_vs_vjp_relative' not in sect4  # no layer graph: the maps only
  assert len(results['class_models']['score']) == 3
  # known answers: the test accuracy is the user's function's on the test images, normalised as its
  # preprocessing says
  import foreign_model
  fn, pre = foreign_model.build()
  data = settings.data(config)
  source = data.sources('test')
  r = setup.read_records(data, source, range(len(source)), pre['mean'], pre['std'])
  assert config.eval_crop in (0, None, r['x'].shape[1])  # the whole test image is what the net sees
  accuracy = np.mean(np.argmax(np.asarray(fn(r['x'])), -1) == r['labels'])
  assert results['test_accuracy'] == pytest.approx(accuracy) and results['num_test'] == len(source)
  # the user's function through the package's public calls: 10-crop true-class maps, the paper's cut
  from saliency_jax import localise
  _, true_maps = saliency.class_saliency(fn, r['x'][:6], r['labels'][:6, None], crop_size=config.crop_size)
  boxes = [localise.localise(image, m, config.localise.graphcut.to_dict())[1]
           for image, m in zip(r['images'][:6], np.asarray(true_maps)[:, 0])]
  with np.load(next(tmp_path.glob('evaluation/*/chunk-*.npz'))) as kept_chunk:  # the job's boxes, each image
    np.testing.assert_array_equal(kept_chunk['rows/evaluated/found/graphcut/true_boxes'], boxes)
  expected = metrics.gt_known_accuracy(boxes, r['box_labels'][:6], r['boxes'][:6], r['labels'][:6])
  assert results['localisation']['graphcut']['gt_known_box_accuracy'] == pytest.approx(expected)
  config.data.mean, config.data.std = (0.4, 0.4, 0.4), (0.2, 0.2, 0.2)
  with pytest.raises(ValueError, match='brings its preprocessing'):
    pipeline.run(config, tmp_path / 'other', log=lambda *_: None)
  config.checkpoint.path = 'foreign_model.py'
  with pytest.raises(ValueError, match="must be 'module:function'"):
    pipeline.run(config, tmp_path / 'third', log=lambda *_: None)


def test_main_job_with_a_bare_callable_and_a_model_without_relus(tmp_path):
  """A callable without its own preprocessing runs on pixels in [0, 1] (before: AttributeError); a GELU +
  LayerNorm net has no Sect. 4 summary, and says why (before: the LayerNorm's clamp took the rules); a
  model that returns one score per image is named before any work."""
  from saliency_jax.errors import UserError
  config = _tiny()
  where = pathlib.Path(__file__).parent / 'foreign_model.py'
  config.checkpoint = ml_collections.ConfigDict({'kind': 'python', 'path': f'{where}:bare'})
  results = pipeline.run(config, tmp_path / 'bare', log=lambda *_: None)
  assert results['num_eval'] == 6 and results['config']['data']['mean'] is None
  sect4 = results['deconvnet_vs_gradient']
  assert sect4['spearman'] == {} and 'the model has no ReLU (its nonlinearities: tanh)' in sect4['skipped']
  assert 'Not computed: the model has no ReLU' in (tmp_path / 'bare' / 'report.md').read_text()
  config.checkpoint.path = f'{where}:one_score_per_image'
  with pytest.raises(UserError, match=r'must return class scores \[B, K\].*returned shape \(2,\)'):
    pipeline.run(config, tmp_path / 'vector', log=lambda *_: None)
  assert not (tmp_path / 'vector' / 'evaluation').exists()
