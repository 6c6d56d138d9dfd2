"""The four layers import downwards only: core (saliency_jax/*.py, saliency_jax/data) <- protocol
(saliency_jax/protocol) <- jobs (saliency_jax/jobs) <- entry points (experiments/); jobs never import
one another (they share the config reading of `jobs.settings` and `jobs.config_checks`)."""

import ast
import pathlib

from conftest import ROOT

PACKAGE = ROOT / 'saliency_jax'
SHARED = {'saliency_jax.jobs.settings', 'saliency_jax.jobs.config_checks'}  # read the config; not jobs
ENTRY = 'saliency_jax.cli'  # the entry points' command line: the layer above the jobs


def imports(path: pathlib.Path) -> set[str]:
  """The saliency_jax modules a file imports (`import a.b`, `from a import b`: a.b when b is a module)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        sub = PACKAGE.parent / node.module.replace('.', '/') / alias.name
        out.add(f'{node.module}.{alias.name}' if sub.with_suffix('.py').is_file() or sub.is_dir()
                else node.module)
  return {name for name in out if name.startswith('saliency_jax')}


def module_name(path: pathlib.Path) -> str:
  return '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts).removesuffix('.__init__')


def test_imports_go_downwards_only():
  bad = []
  for path in sorted(PACKAGE.rglob('*.py')):
    name, used = module_name(path), imports(path)
    layer = name.split('.')[1] if name.count('.') else ''
    if name == ENTRY:
      continue
    if layer == 'jobs':
      others = {u for u in used if u.startswith('saliency_jax.jobs.') and u != name} - SHARED
      if name not in SHARED and others:
        bad.append(f'{name} (a job) imports the jobs {sorted(others)}')
    elif layer == 'protocol':
      bad += [f'{name} (protocol) imports {u}' for u in used if u.startswith('saliency_jax.jobs')]
    else:
      bad += [f'{name} (core) imports {u}' for u in used
              if u.startswith(('saliency_jax.jobs', 'saliency_jax.protocol'))]
  assert not bad, '\n'.join(bad)


def test_the_check_fails_on_an_upward_import(tmp_path):
  """The scan itself: a protocol module importing a job, and a job importing another, are found."""
  (tmp_path / 'a.py').write_text('from saliency_jax.jobs import pipeline\nimport saliency_jax.jobs.sweep\n')
  assert imports(tmp_path / 'a.py') == {'saliency_jax.jobs.pipeline', 'saliency_jax.jobs.sweep'}


def test_entry_points_import_the_command_line_helper_alone():
  for path in sorted((ROOT / 'experiments').glob('*.py')):
    if path.name != 'results.py':
      assert imports(path) == {'saliency_jax.cli'}, path.name
