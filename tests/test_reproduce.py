"""experiments/reproduce.py's command line: one-line errors for a mistyped override or a file as workdir."""

import importlib.util
import subprocess
import sys

import pytest
from absl import flags
from conftest import ROOT

from saliency_jax import cli

pytestmark = pytest.mark.xdist_group('test_reproduce')  # the module defines absl flags once per process


class Reproduce:
  """experiments/reproduce.py's command line: `cli` with the entry point's docstring."""

  def __init__(self):
    spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'experiments' / 'reproduce.py')
    self.module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(self.module)  # defines nothing but its docstring: cli.main runs under __main__

  def parse_flags(self, argv):
    return cli.parse_flags(argv, self.module.__doc__)

  unknown_overrides = staticmethod(cli.unknown_overrides)


@pytest.fixture(scope='module')
def reproduce():
  return Reproduce()


def _exit_message(reproduce, monkeypatch, argv) -> str:
  monkeypatch.setattr(sys, 'argv', argv)  # ml_collections reads the overrides from sys.argv
  with pytest.raises(SystemExit) as e:
    reproduce.parse_flags(argv)
  return str(e.value.code)


def test_unknown_override_is_one_line_with_the_close_matches(reproduce, monkeypatch, tmp_path):
  config = str(ROOT / 'configs' / 'voc_raccoon_kangaroo.py')
  for override, message in (('--config.trian.steps=3', "no field 'trian.steps'; close matches: train.steps"),
                            ('--config.data.skip_badd=1', "'data.skip_badd'; close matches: data.skip_bad")):
    argv = ['reproduce.py', f'--config={config}', f'--workdir={tmp_path}', override]
    got = _exit_message(reproduce, monkeypatch, argv)
    assert got.startswith(f'error: {override.split("=")[0]}: ') and message in got and '\n' not in got
  assert reproduce.unknown_overrides(['reproduce.py', f'--config={config}', '--config.train.steps=3']) == []


def test_a_workdir_that_is_a_file_is_one_line(reproduce, monkeypatch, tmp_path):
  (tmp_path / 'notes.txt').write_text('')
  notes = tmp_path / 'notes.txt'
  argv = ['reproduce.py', '--config', str(ROOT / 'configs' / 'quickstart.py'), f'--workdir={notes}']
  assert _exit_message(reproduce, monkeypatch, argv) == f'error: --workdir {notes} is a file, not a folder'
  monkeypatch.setattr(sys, 'argv', argv[:3] + [f'--workdir={tmp_path / "new"}', '--config.train.steps=7'])
  assert reproduce.parse_flags(sys.argv) == ['reproduce.py']  # a good command line parses as before
  assert flags.FLAGS.config.train.steps == 7


def test_an_empty_or_unwritable_workdir_is_one_line(reproduce, monkeypatch, tmp_path):
  """Before: an empty --workdir= wrote checkpoints and data into the current directory."""
  quickstart = str(ROOT / 'configs' / 'quickstart.py')
  argv = ['reproduce.py', f'--config={quickstart}', '--workdir=']
  assert _exit_message(reproduce, monkeypatch, argv).startswith('error: --workdir is empty')
  (tmp_path / 'file').write_text('')
  argv = ['reproduce.py', f'--config={quickstart}', f'--workdir={tmp_path / "file" / "sub"}']
  sub = tmp_path / 'file' / 'sub'
  assert _exit_message(reproduce, monkeypatch, argv) == (f'error: --workdir {sub} is not writable '
                                                         '(NotADirectoryError: Not a directory)')


def test_help_lists_the_configs_and_a_configs_fields(reproduce, monkeypatch, capsys):
  quickstart = str(ROOT / 'configs' / 'quickstart.py')
  argv = ['reproduce.py', '--help', '--config', quickstart]
  with pytest.raises(SystemExit) as e:
    reproduce.parse_flags(argv)
  assert e.value.code == 0
  out = capsys.readouterr().out
  for name in ('quickstart', 'voc_raccoon_kangaroo', 'ilsvrc_mobilenet_sample'):
    assert f'configs/{name}.py' in out
  assert 'train.steps = 1500' in out and 'checkpoint.kind = ' in out and 'data.mean = None' in out


def test_checkpoint_and_preprocessing_are_settable_from_the_command_line(reproduce, monkeypatch, tmp_path):
  """Before: their None defaults (or no field at all) refused the overrides."""
  quickstart = str(ROOT / 'configs' / 'quickstart.py')
  argv = ['reproduce.py', f'--config={quickstart}', f'--workdir={tmp_path}',
          '--config.data.mean=(0.5, 0.4, 0.3)', '--config.data.std=(0.2, 0.2, 0.2)',
          '--config.checkpoint.kind=python',
          '--config.checkpoint.path=tests/foreign_model.py:build']
  monkeypatch.setattr(sys, 'argv', argv)
  reproduce.parse_flags(argv)
  config = flags.FLAGS.config
  assert config.data.mean == (0.5, 0.4, 0.3) and config.data.std == (0.2, 0.2, 0.2)
  assert config.checkpoint.kind == 'python' and config.checkpoint.path == 'tests/foreign_model.py:build'


def test_relative_paths_resolve_from_the_repository_not_the_current_directory(monkeypatch, tmp_path):
  from conftest import SHARED_DATA, load_config, shared_data

  from saliency_jax.errors import UserError
  from saliency_jax.jobs import config_checks
  shared_data('imagenet-mobilenet')
  if SHARED_DATA != ROOT.parent / 'shared' / 'data':
    pytest.skip('the configs name ../shared/data; SALIENCY_JAX_DATA points elsewhere')
  monkeypatch.chdir(tmp_path)  # elsewhere: '../shared/data' does not exist from here
  config = load_config('ilsvrc_mobilenet_sample')
  changed = config_checks.resolve_paths(config, ROOT / 'configs' / 'ilsvrc_mobilenet_sample.py')
  assert changed == ['data.data_dir']
  assert config.data.data_dir == str(SHARED_DATA.resolve())
  assert config.checkpoint.path == str(SHARED_DATA.resolve() / 'imagenet-mobilenet')  # follows data_dir
  python = load_config('quickstart')
  python.checkpoint.update(kind='python', path='tests/foreign_model.py:build')
  config_checks.resolve_paths(python, ROOT / 'configs' / 'quickstart.py')
  assert python.checkpoint.path == f'{ROOT / "tests" / "foreign_model.py"}:build'
  (tmp_path / 'photos').mkdir()  # found from the current directory first
  voc = load_config('voc_raccoon_kangaroo')
  voc.data.data_dir = 'photos'
  config_checks.resolve_paths(voc, ROOT / 'configs' / 'voc_raccoon_kangaroo.py')
  assert voc.data.data_dir == str((tmp_path / 'photos').resolve())
  voc.data.data_dir = 'no/such/folder'
  with pytest.raises(UserError, match=r"config.data.data_dir 'no/such/folder' is found neither from the "
                                      rf'current directory \({tmp_path}\) nor from {ROOT}'):
    config_checks.resolve_paths(voc, ROOT / 'configs' / 'voc_raccoon_kangaroo.py')


def test_the_whole_config_is_checked_before_any_work_in_one_error(tmp_path):
  """Before: top_k 0, crop_size 100, eval_chunk 0, data.part foo ... failed minutes in, with tracebacks that
  did not name config.*; train.steps -5 and workers -1 were accepted."""
  import subprocess
  overrides = ['--config.top_k=0', '--config.crop_size=100', '--config.eval_chunk=0',
               '--config.data.part=foo', '--config.data.num_test=-1', '--config.train.steps=-5',
               '--config.workers=-1',
               "--config.class_names=('a', 'b')", '--config.train.learning_rate=nan', '--config.chunk_size=0']
  out = subprocess.run([sys.executable, 'experiments/reproduce.py', '--config=configs/quickstart.py',
                        f'--workdir={tmp_path}', *overrides], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert lines[0] == 'error: the config cannot run (10 settings):'
  for key in ('top_k', 'crop_size', 'eval_chunk', 'data.part', 'data.num_test', 'train.steps', 'workers',
              'class_names', 'train.learning_rate', 'chunk_size'):
    assert any(line.startswith(f'  config.{key} must be') for line in lines[1:]), key
  assert [p.name for p in tmp_path.iterdir()] == []  # no data read, nothing trained


ENTRY_POINTS = sorted(p.name for p in (ROOT / 'experiments').glob('*.py') if p.name != 'results.py')


@pytest.mark.parametrize('script', ENTRY_POINTS)
def test_every_entry_point_refuses_a_mistyped_override_in_one_line(script, tmp_path):
  """Every script of experiments/ is `cli.main` over one job: a --config.xxx naming no field of its config
  is one line naming the key, before any work."""
  configs = {'reproduce.py': 'quickstart', 'sweep_localisation.py': 'localisation_sweep',
             'compare_attributions.py': 'compare_attributions',
             'deconvnet_vs_gradient.py': 'deconvnet_vs_gradient',
             'explain_images.py': 'your_images', 'evaluate_cifar_resnets.py': 'cifar_resnet_import_check'}
  config = ROOT / 'configs' / f"{configs.get(script, script.removesuffix('.py'))}.py"
  out = subprocess.run([sys.executable, str(ROOT / 'experiments' / script), f'--config={config}',
                        f'--workdir={tmp_path}', '--config.no_such_key=1'], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
  assert out.returncode != 0
  assert out.stderr.strip() == f"error: --config.no_such_key: {config} has no field 'no_such_key'", out.stderr
  assert (ROOT / 'experiments' / script).read_text().count('\n') < 60
