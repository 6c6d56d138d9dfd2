"""Interrupting the main job (SIGINT in training, SIGKILL in the evaluation once a chunk of it is on
disk) and rerunning the same command gives exactly the numbers of an uninterrupted run, the evaluation
resuming at the first unfinished chunk; another learning rate is refused; GraphCut workers end with
their parent."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT

pytestmark = pytest.mark.xdist_group('test_interrupt')

STEPS = 300  # long enough for a signal to land in training; a few seconds

# The tiny synthetic main job as a config file, so that the subprocesses run the real entry point.
_CONFIG = f'''
import sys

sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import load_config, tiny_main_job


def get_config():
  config = tiny_main_job(load_config('quickstart'))
  config.train.update({{'steps': {STEPS}, 'log_every': 1, 'checkpoint_every': 100}})
  config.eval_chunk = 2  # 3 chunks of the 6 test images
  config.localise = {{'graphcut': {{'method': 'graphcut'}}, 'full_image': {{'method': 'full'}}}}
  return config
'''


def _start(config_file, workdir, *flags):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
  command = [sys.executable, str(ROOT / 'experiments' / 'reproduce.py'), f'--config={config_file}',
             f'--workdir={workdir}', *flags]
  return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _numbers(metrics):
  """metrics.json less the timings and the record of where training resumed."""
  if isinstance(metrics, dict):
    return {k: _numbers(v) for k, v in metrics.items() if k not in ('seconds', 'resumed_from')}
  return metrics


def _logged_steps(workdir):
  return [json.loads(line)['step'] for line in (workdir / 'train_log.jsonl').read_text().splitlines()]


def _checkpoint(workdir, step):
  return ocp.StandardCheckpointer().restore((workdir / 'checkpoints' / str(step) / 'default').absolute())


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """(config file, workdir of an uninterrupted run)."""
  root = tmp_path_factory.mktemp('interrupt')
  config_file = root / 'tiny.py'
  config_file.write_text(_CONFIG)
  code, _, err = _finish(_start(config_file, root / 'straight'))
  assert code == 0, err[-3000:]
  return config_file, root / 'straight'


def test_sigint_in_training_then_sigkill_in_evaluation_then_the_same_numbers(reference, tmp_path):
  config_file, straight = reference
  # Ctrl-C in training: the checkpoint holds exactly the steps applied, and the job says how to resume.
  proc = _start(config_file, tmp_path)
  log = tmp_path / 'train_log.jsonl'
  while proc.poll() is None and not (log.is_file() and log.stat().st_size > 1000):  # some 20 steps done
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  code, _, err = _finish(proc)
  assert code == -signal.SIGINT and 'rerun the same command to resume' in err, err[-3000:]
  saved = [int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()]
  assert 0 < max(saved) < STEPS and _logged_steps(tmp_path) == list(range(1, max(saved) + 1))

  # SIGKILL once the evaluation's first chunk is on disk: the rerun resumes at the next chunk.
  proc = _start(config_file, tmp_path)
  while proc.poll() is None and not list(tmp_path.glob('evaluation/*/chunk-000000.npz')):
    time.sleep(0.01)
  proc.kill()
  _finish(proc)
  assert not (tmp_path / 'metrics.json').exists()  # it came before the end
  done = len(list(tmp_path.glob('evaluation/*/chunk-*.npz')))
  assert 1 <= done < 3

  code, out, err = _finish(_start(config_file, tmp_path))
  assert code == 0, err[-3000:]
  assert f'resuming the evaluation: {done} of 3 chunks already in' in out
  ours, theirs = (json.loads((w / 'metrics.json').read_text()) for w in (tmp_path, straight))
  assert ours['training']['resumed_from'] == STEPS and ours['training']['steps'] == STEPS
  assert _numbers(ours) == _numbers(theirs)
  assert _logged_steps(tmp_path) == _logged_steps(straight) == list(range(1, STEPS + 1))
  jax.tree.map(np.testing.assert_array_equal, _checkpoint(tmp_path, STEPS), _checkpoint(straight, STEPS))


def test_another_learning_rate_is_refused_before_any_work(reference):
  config_file, straight = reference
  before = (straight / 'metrics.json').read_text()
  proc = _start(config_file, straight, '--config.train.learning_rate=0.001', '--config.num_eval=3')
  code, out, err = _finish(proc)
  error = err.strip().splitlines()[-1]
  # one line, no traceback (before: a ValueError traceback)
  assert code != 0 and error.startswith('error: ') and 'Traceback' not in err, err[-3000:]
  # named with its old and new value; num_eval, which does not touch the weights, is not
  assert '(train.learning_rate: 0.003 -> 0.001): use another --workdir' in error, error
  assert 'test accuracy' not in out  # it stopped before training or evaluating
  assert (straight / 'metrics.json').read_text() == before


def test_graphcut_workers_end_with_their_killed_parent(tmp_path):
  if not sys.platform.startswith('linux'):
    pytest.skip('reads /proc')
  driver = textwrap.dedent('''
      import multiprocessing, sys, time
      import numpy as np
      from saliency_jax import localise
      rng = np.random.default_rng(0)
      images = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(4)]
      maps = [rng.random((24, 24)) for _ in range(4)]
      results = localise.localise_batch(images, maps, workers=2)
      assert all(r.status == 'ok' for r in results)
      print(' '.join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
      time.sleep(600)
  ''')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  pipe = subprocess.PIPE
  proc = subprocess.Popen([sys.executable, '-c', driver], env=env, stdout=pipe, stderr=pipe, text=True)
  line = proc.stdout.readline()
  workers = [int(p) for p in line.split()]
  assert len(workers) == 2, (line, proc.stderr.read() if proc.poll() is not None else '')
  assert all(_alive(p) for p in workers)
  proc.kill()  # SIGKILL: no atexit, no pool shutdown
  proc.wait()
  deadline = time.time() + 10
  while any(_alive(p) for p in workers) and time.time() < deadline:
    time.sleep(0.1)
  assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
  """Whether process `pid` runs (a zombie, exited but not yet reaped, does not count)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False
