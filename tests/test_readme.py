"""The README: every python block runs as written and gives the shapes it states; every number in it is
generated from results/."""

import re

import pytest
from conftest import ROOT


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
