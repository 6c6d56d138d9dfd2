"""experiments/reproduce.py's command line: one-line errors for a mistyped override or a file as workdir."""

import importlib.util
import sys

import pytest
from absl import flags
from conftest import ROOT

pytestmark = pytest.mark.xdist_group('test_reproduce')  # the module defines absl flags once per process


@pytest.fixture(scope='module')
def reproduce():
  spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'experiments' / 'reproduce.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
