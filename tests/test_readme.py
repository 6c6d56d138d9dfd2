"""The README's first usage example runs as written and gives the shapes it states."""

import re

from conftest import ROOT


def test_readme_usage_example_runs():
  text = (ROOT / 'README.md').read_text()
  code = re.findall(r'```python\n(.*?)```', text, re.S)[0]
  scope = {}
  exec(compile(code, 'README.md', 'exec'), scope)
  assert scope['maps'].shape == (4, 64, 64)
  assert scope['grads'].shape == (4, 64, 64, 3)
  assert scope['one'].shape == (64, 64)
  assert scope['classes'].shape == (4, 5) and scope['top'].shape == (4, 5, 64, 64)


def test_readme_attribution_example_runs():
  text = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  example = next(b for b in blocks if 'attribution.integrated_gradients' in b)
  scope = {}
  exec(compile(blocks[0], 'README.md', 'exec'), scope)
  exec(compile(example, 'README.md', 'exec'), scope)
  assert scope['ig'].shape == scope['sg'].shape == (4, 64, 64, 3)
  assert scope['cam'].shape == scope['maps'].shape == (4, 64, 64)
  assert scope['auc']['deletion'].shape == (4,) and scope['dreams'].shape == (10, 64, 64, 3)


def test_readme_your_own_model_examples_run():
  text = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  linen = next(b for b in blocks if 'class CNN(nn.Module)' in b)
  nnx_example = next(b for b in blocks if 'class Net(nnx.Module)' in b)
  scope = {}
  exec(compile(linen, 'README.md', 'exec'), scope)
  exec(compile(nnx_example, 'README.md', 'exec'), scope)
  assert scope['maps'].shape == scope['guided'].shape == scope['cam'].shape == (4, 32, 32)
  assert scope['ig'].shape == (4, 32, 32, 3) and scope['nnx_maps'].shape == (4, 32, 32)


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
