"""The README: every python block runs as written and gives the shapes it states; every number in it is
generated from results/."""

import json
import re

import pytest
from conftest import ROOT, load_config


def python_blocks(text: str) -> list[str]:
  """The ```python blocks of a markdown text, in order."""
  return re.findall(r'```python\n(.*?)```', text, re.S)


def test_every_readme_python_block_runs_as_written_in_order(monkeypatch):
  """Each block runs in the README's order, in one namespace as a reader who runs them one after another
  (before: the "Real weights" block used names no block defined), from the repository root (the blocks
  name ../shared/data); then the shapes the blocks state."""
  from conftest import shared_data
  shared_data('cifar10-resnet', 'resnet20-12fca82f.th')
  pytest.importorskip('torch', reason='the README reads a PyTorch checkpoint: the torch extra')
  monkeypatch.chdir(ROOT)
  blocks = python_blocks((ROOT / 'README.md').read_text())
  scope, checked = {}, set()
  for number, block in enumerate(blocks):
    exec(compile(block, f'README.md block {number + 1}', 'exec'), scope)
    if 'resnet' in block:
      assert scope['maps'].shape == (4, 32, 32) and scope['labels'].shape == (4,)
      checked.add('real weights')
    elif 'top_k_saliency' in block:  # the usage example
      assert scope['maps'].shape == (4, 64, 64) and scope['grads'].shape == (4, 64, 64, 3)
      assert scope['one'].shape == (64, 64)
      assert scope['classes'].shape == (4, 5) and scope['top'].shape == (4, 5, 64, 64)
      checked.add('usage')
    elif 'attribution.integrated_gradients(model' in block:
      assert scope['ig'].shape == scope['sg'].shape == (4, 64, 64, 3)
      assert scope['cam'].shape == scope['maps'].shape == (4, 64, 64)
      assert scope['auc']['deletion'].shape == (4,) and scope['dreams'].shape == (10, 64, 64, 3)
      checked.add('attribution')
    elif 'class CNN(nn.Module)' in block:
      assert scope['maps'].shape == scope['guided'].shape == scope['cam'].shape == (4, 32, 32)
      assert scope['ig'].shape == (4, 32, 32, 3)
      checked.add('linen')
    elif 'class Net(nnx.Module)' in block:
      assert scope['nnx_maps'].shape == (4, 32, 32)
      checked.add('nnx')
  assert checked == {'real weights', 'usage', 'attribution', 'linen', 'nnx'}


def _results_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location('results', ROOT / 'experiments' / 'results.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_readme_results_are_generated_from_results_json():
  """Every generated block equals what `python experiments/results.py readme` makes from results/."""
  results = _results_module()
  text = (ROOT / 'README.md').read_text()
  blocks = results.BLOCK.findall(text)
  assert blocks, 'README.md has no generated results block'
  for block in results.BLOCK.finditer(text):
    assert (ROOT / 'results' / f"{block['name']}.json").is_file(), block['name']
  assert results.render_readme(text) == text, 'README.md is stale: run `python experiments/results.py readme`'


def test_readme_tables_with_numbers_are_generated():
  """A README table row holding a measured number (a decimal, a percentage, a ratio; code spans aside)
  stands inside a generated block: no hand-copied numbers."""
  results = _results_module()
  text = (ROOT / 'README.md').read_text()
  outside = results.BLOCK.sub('', text)
  outside = re.sub(r'```.*?```', '', outside, flags=re.S)  # code examples
  measured = re.compile(r'\d\.\d|\d\s*%|\d+\s*/\s*\d+')  # decimals, percentages, ratios: measurements
  rows = [line for line in outside.splitlines()
          if line.startswith('|') and measured.search(re.sub(r'`[^`]*`', '', line))]
  assert not rows, f'table rows with numbers outside generated blocks: {rows[:3]}'


def test_localisation_table_known_answer():
  """The localisation table of a made-up metrics.json, checked by hand (the selected method in bold)."""
  from saliency_jax.jobs import pipeline
  m = {'config': {'top_k': 2}, 'num_eval': 3, 'selected_method': 'b',
       'localisation': {'a': {'gt_known_box_accuracy': 0.5, 'top1_loc_error': 0.25, 'top2_loc_error': 0.125,
                              'fallbacks': {'true': 1, 'top': 2, 'total': 3}},
                        'b': {'gt_known_box_accuracy': 1.0, 'top1_loc_error': 0.0, 'top2_loc_error': 0.0,
                              'fallbacks': {'true': 0, 'top': 0, 'total': 0}}}}
  assert pipeline.table(m).splitlines()[2:] == ['| a | 0.500 | 0.250 | 0.125 | 1 / 2 |',
                                                '| **b** (selected) | 1.000 | 0.000 | 0.000 | 0 / 0 |']


# Names that hold digits and are not numbers: paper sections, versions, a model's name, an address.
NOT_NUMBERS = re.compile(r'Sect\. \d(?:\.\d)?|Python 3\.\d+|v1 0\.75|127\.0\.0\.1')
# A measured-looking number: a decimal, a percentage, a ratio (2.3x), a duration or a size (a range too).
PROSE_NUMBER = re.compile(r'\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?x\b|\d+\.\d+|'
                          r'\b\d+(?:\s?-\s?\d+)?\s?(?:s|ms|seconds|minutes|hours|GiB|MiB|GB|MB)\b')


def _settings() -> dict:
  """The settings the README's prose names, each phrase with the number it states and the value the
  code holds (a percentage states a fraction)."""
  from saliency_jax import defaults, localise, metrics, stats
  from saliency_jax.data import synthetic
  s, standard = localise.Settings(), defaults.localise_methods()
  quickstart, ilsvrc = load_config('quickstart'), load_config('ilsvrc_mobilenet_sample')
  return {
      "above the map's 95% quantile": (0.95, s.fg_quantile),
      'background below 30%': (0.30, s.bg_quantile),
      'threshold at 15% / 20% of the maximum': ((0.15, 0.2), (standard['threshold_15']['threshold'],
                                                              standard['threshold_20']['threshold'])),
      'with its 95% interval': (0.95, stats.LEVEL),
      'IoU 0.3, 0.5 and 0.7': ((0.3, 0.5, 0.7), metrics.IOU_THRESHOLDS),
      'IoU >= 0.5': (0.5, 0.5),  # the ILSVRC rule, `metrics.localisation_correct`'s default
      'learning rate 0.1, lambda 0.3': ((0.1, 0.3), (quickstart.class_models.learning_rate,
                                                     quickstart.class_models.l2_weight)),
      '20-60% of the side': ((0.2, 0.6), synthetic.SyntheticSource.scale),
      'at the 90% quantile': (0.9, ilsvrc.localise[ilsvrc.selected_method].fg_quantile),
      'a foreground quantile of 90%': (0.9, ilsvrc.localise[ilsvrc.selected_method].fg_quantile),
      "(the paper's 95%)": (0.95, s.fg_quantile),
  }


def _prose(text: str, results) -> str:
  """The README less its generated blocks, values, code blocks and code spans."""
  text = results.BLOCK.sub('', text)
  text = results.VALUE.sub('', text)
  text = re.sub(r'```.*?```', '', text, flags=re.S)
  text = re.sub(r'`[^`]*`', '', text)
  return ' '.join(text.split())


def test_readme_prose_numbers_are_generated_cited_or_checked_settings():
  """A decimal, percentage or ratio in the README's prose comes from results/ (a value or a block), from
  results/cited.json (numbers of papers, with their sources), or is a setting checked here against the
  code; any other fails (no hand-copied measurement)."""
  import numpy as np
  results = _results_module()
  text = (ROOT / 'README.md').read_text()
  for m in results.VALUE.finditer(text):  # each value names a number its JSON holds
    assert (ROOT / 'results' / f"{m['name']}.json").is_file(), m['name']
  cited = json.loads((ROOT / 'results' / 'cited.json').read_text())
  for key, c in cited.items():
    assert key == 'about' or (c['value'] and c['source'] and c['what']), key
  prose = _prose(text, results)
  for phrase, (stated, code) in _settings().items():
    assert phrase in prose, f'the setting {phrase!r} is no longer in the README: drop it from _settings'
    np.testing.assert_allclose(stated, code, err_msg=f'the README says {phrase!r}; the code holds {code}')
    prose = prose.replace(phrase, '')
  found = [m.group(0) for m in PROSE_NUMBER.finditer(NOT_NUMBERS.sub('', prose))]
  assert not found, f'numbers in the README prose with no source: {found}'


def test_prose_numbers_are_found_and_values_render_from_their_json(tmp_path):
  results = _results_module()
  prose = _prose('a 2.26x speed-up, 17% of cuts, 0.344, 44-47 s per run, 3 GiB `0.5` and VGG16 `dict`s '
                 '<!-- value: cited/x/value s -->1%<!-- /value --> ```\n0.9\n```', results)
  found = [m.group(0) for m in PROSE_NUMBER.finditer(NOT_NUMBERS.sub('', prose))]
  assert found == ['2.26x', '17%', '0.344', '44-47 s', '3 GiB']
  assert not PROSE_NUMBER.search(NOT_NUMBERS.sub('', 'Sect. 3.2 on Python 3.11 with MobileNet v1 0.75'))
  text = 'error <!-- value: cited/paper_top5_loc_error/value s -->?<!-- /value --> here'
  assert results.render_readme(text) == text.replace('?', '46.4%')
  with pytest.raises(KeyError, match="has no 'nothing' there"):
    results.render_readme('<!-- value: cited/nothing/value s -->?<!-- /value -->')
