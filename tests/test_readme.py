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
