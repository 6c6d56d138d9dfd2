"""The localisation sweep on a tiny config: the pick is made on the selection part alone, maps are
cached under a key of what determines them, and the report numbers are the main job's on that part."""

import json
import shutil

import numpy as np
import pytest
from conftest import load_config, load_module, tiny_main_job

from saliency_jax.jobs import pipeline, sweep

pytestmark = pytest.mark.xdist_group('test_sweep')
QUIET = lambda *_: None  # noqa: E731


def _tiny():
  config = tiny_main_job(load_config('localisation_sweep'))
  config.data.num_validation = 8  # the selection part: 8 validation images; the report part: 6 test images
  config.data.part = 'report'  # the main job on the report part shares the sweep's data and net (below)
  config.sweep.grid = {'paper': {'method': 'graphcut'},
                       'fg_floor_50': {'method': 'graphcut', 'fg_floor': 0.5},
                       'threshold_15': {'method': 'threshold', 'threshold': 0.15},
                       'grad_cam_threshold_15': {'method': 'threshold', 'threshold': 0.15, 'map': 'grad_cam'}}
  config.maps = {'grad_cam': {'method': 'grad_cam'}}  # another map than the paper's, chosen like a cut
  config.sweep.criterion = (('top2_loc_error', 'min'), ('gt_known_box_accuracy', 'max'))
  return config


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('sweep')
  return _tiny(), workdir, sweep.run(_tiny(), workdir, log=QUIET)


def _copy(workdir, tmp_path):
  shutil.copytree(workdir, tmp_path / 'w')
  return tmp_path / 'w'


def test_choose_follows_the_criterion_in_order_and_a_tie_goes_to_the_paper():
  grid = {'paper': {'method': 'graphcut'}, 'a': {'method': 'graphcut', 'fg_floor': 0.5},
          'b': {'method': 'graphcut', 'fg_floor': 0.5, 'seeds': 'soft'}}
  table = {'paper': {'top5_loc_error': 0.4, 'gt_known_box_accuracy': 0.5},
           'a': {'top5_loc_error': 0.3, 'gt_known_box_accuracy': 0.4},
           'b': {'top5_loc_error': 0.3, 'gt_known_box_accuracy': 0.6}}
  criterion = (('top5_loc_error', 'min'), ('gt_known_box_accuracy', 'max'))
  assert sweep.choose(table, criterion, grid) == 'b'  # a and b tie on the error, b has the better GT-known
  assert sweep.choose(table, (('gt_known_box_accuracy', 'max'),), grid) == 'b'
  assert sweep.choose(table, (('top5_loc_error', 'max'),), grid) == 'paper'
  tied = {name: {'top5_loc_error': 0.3} for name in grid}
  assert sweep.choose(tied, (('top5_loc_error', 'min'),), grid) == 'paper'  # fewest changes


def test_sweep_reports_every_setting_on_both_parts(swept):
  config, workdir, r = swept
  saved = json.loads((workdir / 'sweep.json').read_text())
  assert saved['selected'] == r['selected'] and saved['paper'] == 'paper'
  assert list(saved['settings']) == ['paper'] + [n for n in config.sweep.grid if n != 'paper']  # paper first
  assert set(saved['settings']) == {'paper', 'fg_floor_50', 'threshold_15', 'grad_cam_threshold_15'}
  sel, rep = saved['parts']['selection'], saved['parts']['report']
  assert sel['num_images'] == 8 and rep['num_images'] == 6
  assert all(i.startswith('validation-') for i in sel['ids'])
  assert all(i.startswith('test-') for i in rep['ids'])
  for row in saved['settings'].values():
    for part in ('selection', 'report'):
      m = row[part]
      assert {'gt_known_box_accuracy', 'top1_loc_error', 'top2_loc_error', 'fallbacks'} <= set(m)
      assert m['top2_loc_error'] <= m['top1_loc_error']
      assert m['fallbacks']['total'] == sum(v for s, v in m['status'].items() if s != 'ok')
  assert saved['settings']['fg_floor_50']['changes'] == {'fg_floor': 0.5}
  assert saved['settings']['grad_cam_threshold_15']['changes'] == {'map': 'grad_cam', 'method': 'threshold',
                                                                   'threshold': 0.15}
  selection = {name: row['selection'] for name, row in saved['settings'].items()}
  assert saved['selected'] == sweep.choose(selection, config.sweep.criterion, config.sweep.grid.to_dict())
  text = (workdir / 'sweep.md').read_text()
  assert f"**Picked: `{saved['selected']}`**" in text and 'fg_floor 0.5' in text
  # the per-image results kept beside each setting give its metrics; intervals hold them
  for path in (workdir / 'sweep').glob('loc-*.json'):
    m = json.loads(path.read_text())
    assert np.mean(m['right']['gt_known']) == pytest.approx(m['gt_known_box_accuracy'])
    assert 1 - np.mean(m['right']['top2']) == pytest.approx(m['top2_loc_error'])
    low, high = m['intervals']['top2_loc_error']
    assert low <= m['top2_loc_error'] <= high
  s = saved['pick_stability']
  assert 0 < s['stability'] <= 1 and sum(s['picks'].values()) == s['resamples'] == 2000
  assert set(s['picks']) == set(saved['settings']) and 'bootstrap resamples of the selection part' in text
  if saved['selected'] != 'paper':
    assert saved['selected_vs_paper_on_report']['top2_loc_error']['mcnemar']['p_value'] <= 1


def test_the_pick_reads_the_selection_part_only(swept, tmp_path):
  config, workdir, r = swept
  workdir = _copy(workdir, tmp_path)
  other = next(name for name in config.sweep.grid if name != r['selected'])

  def rig(part, winner):  # the kept results of one part, rewritten so that `winner` is far ahead there
    for path in (workdir / 'sweep').glob(f'loc-{part}-*.json'):
      m = json.loads(path.read_text())
      best = path.name.startswith(f'loc-{part}-{winner}-')
      m.update({'top1_loc_error': 0.0 if best else 1.0, 'top2_loc_error': 0.0 if best else 1.0})
      path.write_text(json.dumps(m))

  rig('report', other)
  again = sweep.run(config, workdir, log=QUIET)  # resumes from the kept results
  assert again['selected'] == r['selected']
  assert again['settings'][other]['report']['top2_loc_error'] == 0.0
  rig('selection', other)
  assert sweep.run(config, workdir, log=QUIET)['selected'] == other


def test_maps_are_kept_under_a_key_of_what_determines_them(swept, tmp_path):
  config, workdir, r = swept
  assert not r['parts']['selection']['maps_cached'] and not r['parts']['report']['maps_cached']
  config, workdir = _tiny(), _copy(workdir, tmp_path)  # tests change their own copies
  again = sweep.run(config, workdir, log=QUIET)
  assert again['parts']['selection']['maps_cached'] and again['parts']['report']['maps_cached']
  assert again['settings'] == r['settings']
  config.crop_size = 0  # whole-image maps: other maps, never the 10-crop ones
  other = sweep.run(config, workdir, log=QUIET)
  for part in ('selection', 'report'):
    assert not other['parts'][part]['maps_cached']
    assert other['parts'][part]['maps_key'] != r['parts'][part]['maps_key']
  assert len(list((workdir / 'sweep').glob('maps-*-grad_cam-*.npz'))) == 4  # kept beside the gradient maps
  assert len(list((workdir / 'sweep').glob('maps-*.npz'))) == 8


def test_kept_results_are_keyed_by_the_code_that_made_them_and_the_code_it_imports():
  from saliency_jax import attribution, graph, layers, models, rules
  from saliency_jax.protocol import cache, maps
  # a KerasNet (MobileNet) runs its layers through graph and layers: their source is in the maps' key
  assert cache.code_modules(models) == ['saliency_jax.graph', 'saliency_jax.layers', 'saliency_jax.models']
  assert {'saliency_jax.rules', 'saliency_jax.deconvnet', 'saliency_jax.saliency'} <= set(
      cache.code_modules(attribution))
  # the protocol's maps follow every module they import; a job is taken alone
  assert {'saliency_jax.attribution', 'saliency_jax.localise'} <= set(cache.code_modules(maps))
  assert cache.code_modules(sweep) == ['saliency_jax.jobs.sweep']
  assert cache.code_digest(models) == cache.code_digest(graph, models) != cache.code_digest(rules, models)
  assert cache.code_digest(layers) != cache.code_digest(models)


def test_report_numbers_are_the_main_jobs_on_the_report_part(swept, tmp_path):
  _, workdir, r = swept
  config, workdir = _tiny(), _copy(workdir, tmp_path)
  config.localise = config.sweep.grid.to_dict()
  config.figure_method = 'paper'
  config.selected_method = r['selected']
  config.num_deconvnet = config.num_figure = 2
  config.class_models.steps = 0
  results = pipeline.run(config, workdir, log=QUIET)
  assert results['num_eval'] == 6
  assert json.loads((workdir / 'metrics.json').read_text())['selected_method'] == r['selected']
  for name, row in r['settings'].items():
    for metric in ('gt_known_box_accuracy', 'top1_loc_error', 'top2_loc_error'):
      np.testing.assert_equal(results['localisation'][name][metric], row['report'][metric])
  for name in ('gradient', 'grad_cam'):  # the main job's MaxBoxAccV2 on the report part: the sweep's oracle
    oracle = r['wsol'][name]['report_oracle']
    assert results['wsol'][name]['max_box_acc_v2'] == pytest.approx(oracle['max_box_acc_v2'])
    assert results['wsol'][name]['best_threshold'] == oracle['threshold']


def test_max_box_acc_thresholds_are_chosen_on_the_selection_part(swept):
  """Each map's MaxBoxAccV2 recomputed with `metrics.max_box_acc` from the kept maps: the selection part's
  best thresholds, applied to the report part, give the reported numbers."""
  from saliency_jax import metrics
  from saliency_jax.data import make_source
  from saliency_jax.jobs import settings
  from saliency_jax.protocol import maps, scores, setup
  config, workdir, r = swept
  assert set(r['wsol']) == {'gradient', 'grad_cam'}
  source = {part: make_source(sweep.part_data(config, part), 'test') for part in sweep.PARTS}
  images = {part: setup.read_records(settings.data(config), source[part],
                                     range(r['parts'][part]['num_images']), 0.0, 1.0) for part in sweep.PARTS}
  for name, w in r['wsol'].items():
    made = {}
    for part in sweep.PARTS:
      key = r['parts'][part]['maps_key']
      path = (workdir / 'sweep' / f'maps-{part}-{key}.npz' if name == 'gradient' else
              next((workdir / 'sweep').glob(f'maps-{part}-{name}-*.npz')))
      kept = np.load(path)
      true_maps = maps.onto({name: (kept['true_maps'], kept['top_maps'])},
                            images[part]['images'].shape[1:3])[name][0]
      made[part] = metrics.max_box_acc(true_maps, scores.class_boxes(
          images[part]['box_labels'], images[part]['boxes'], images[part]['labels']))
    sel, rep = made['selection'], made['report']
    assert w['selection']['max_box_acc_v2'] == pytest.approx(sel['max_box_acc_v2'])
    assert w['report_oracle']['max_box_acc_v2'] == pytest.approx(rep['max_box_acc_v2'])
    chosen = [sel['cam_thresholds'].index(t) for t in sel['best_threshold'].values()]
    held = [rep['accuracy'][k, j] for k, j in enumerate(chosen)]
    assert list(w['report']['box_acc'].values()) == pytest.approx(held)
    assert w['report']['max_box_acc_v2'] == pytest.approx(np.mean(held))
    assert w['report']['max_box_acc_v2'] <= w['report_oracle']['max_box_acc_v2']
    assert list(w['report']['threshold'].values()) == list(sel['best_threshold'].values())
    low, high = w['report']['intervals']['max_box_acc_v2']
    assert low <= w['report']['max_box_acc_v2'] <= high


def test_a_selected_method_outside_config_localise_is_named(tmp_path):
  config = _tiny()
  config.selected_method = 'graphcut_tuned'
  with pytest.raises(ValueError, match="selected_method 'graphcut_tuned' is not one of config.localise"):
    pipeline.run(config, tmp_path, log=QUIET)
  assert pipeline.default_config().selected_method == ''


def test_bad_sweep_configs_are_named(tmp_path):
  config = _tiny()
  config.sweep.grid = {'floor': {'method': 'graphcut', 'fg_floor': 0.5}}
  with pytest.raises(ValueError, match="no entry with the paper's settings"):
    sweep.run(config, tmp_path, log=QUIET)
  config = _tiny()
  config.sweep.criterion = (('top5_loc_error', 'min'),)
  with pytest.raises(ValueError, match='criterion'):
    sweep.run(config, tmp_path, log=QUIET)
  config = _tiny()
  config.sweep.grid.paper.pairwise_weight = -1.0
  with pytest.raises(ValueError, match='grid.paper: .*pairwise_weight'):
    sweep.run(config, tmp_path, log=QUIET)


def test_the_study_crosses_every_attribution_method_with_the_cuts():
  from saliency_jax import attribution
  config = load_config('localisation_sweep', 'study')
  sweep.check(config)
  grid = config.sweep.grid.to_dict()
  # every method's maps: in the study, or in the variants of those registered after the study's kept run
  later = [load_config('localisation_sweep', name)
           for name in ('methods', 'costly', 'masked', 'shap', 'rise_softmax')]
  used, names_seen = set(), set(config.maps)
  for c in later:
    sweep.check(c)
    assert not set(c.maps) & names_seen  # each map studied once
    names_seen |= set(c.maps)
  for c in (config, *later):
    names = {name.split('/')[0] for name in c.sweep.grid if '/' in name}
    used |= {c.maps[m].method if m in c.maps else m for m in names}
    assert 'gradient/graphcut' in c.sweep.grid  # the paper's pair: the paired reference
  assert used == set(attribution.METHODS)
  masked_images = load_module('localisation_sweep').MASKED_IMAGES
  assert later[2].sweep.num_images == later[4].sweep.num_images == masked_images
  assert later[4].maps.rise_softmax.to_dict() == {**later[2].maps.rise.to_dict(), 'score': 'softmax'}
  assert later[0].sweep.num_images == 0
  for name in ('gradient/graphcut', 'gradient/threshold_15', 'grad_cam/graphcut_smoothed_all_soft',
               'occlusion/threshold_20', 'full_image', 'centre'):
    assert name in grid, name
  assert not sweep.changes(grid['gradient/graphcut'])  # the paper's pair
  assert sweep.changes(grid['cam/threshold_30']) == {'map': 'cam', 'method': 'threshold', 'threshold': 0.3}
  assert sweep.changes(grid['grad_cam_pw12/graphcut_fg_quantile_90']) == {
      'map': 'grad_cam_pw12', 'fg_quantile': 0.9}


def test_the_cuts_variant_is_the_study_on_the_papers_pair_and_one_map():
  study = load_config('localisation_sweep', 'study')
  cuts = load_config('localisation_sweep', 'cuts')
  sweep.check(cuts)
  grid, whole = cuts.sweep.grid.to_dict(), study.sweep.grid.to_dict()
  assert all(whole[name] == s for name, s in grid.items())  # the same settings under the same names
  assert set(grid) == {'gradient/graphcut', 'full_image', 'centre'} | {
      name for name in whole if name.startswith('grad_cam_pw12/')}
  assert sum(name.startswith('grad_cam_pw12/graphcut') for name in grid) == 12
  assert cuts.maps.to_dict() == {'grad_cam_pw12': study.maps.grad_cam_pw12.to_dict()}
  assert cuts.data.to_dict() == study.data.to_dict() and cuts.sweep.criterion == study.sweep.criterion
