"""Several processes (jax.distributed on 127.0.0.1, CPU collectives) train as one process would, resume
after one of them is killed, and evaluate the test split chunk by chunk into the metrics of one."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from saliency_jax.protocol import chunks

pytestmark = pytest.mark.xdist_group('test_multihost')

STEPS = 200  # long enough to kill a process in training (checkpoints every 50 steps)

# The tiny synthetic main job as a config file, so that the subprocesses run the real entry point.
_CONFIG = f'''
import sys

sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import load_config, tiny_main_job


def get_config():
  config = tiny_main_job(load_config('quickstart'))
  config.data.num_test = 7  # uneven: 4 chunks of 2 records, process 0 takes chunks 0 and 2
  config.eval_chunk = 2
  config.train.update({{'steps': {STEPS}, 'log_every': 1, 'checkpoint_every': 50}})
  config.localise = {{'graphcut': {{'method': 'graphcut', 'iterations': 1}},
                      'full_image': {{'method': 'full'}},
                      'threshold_15': {{'method': 'threshold', 'threshold': 0.15}}}}
  return config
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(config_file, workdir, port, process):
  """One of two processes of the main job; its output goes to the file `_output` reads (not a pipe,
  which could fill up while the test waits)."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
  env.pop('XLA_FLAGS', None)
  out = (workdir.parent / f'{workdir.name}-{process}.out').open('a')
  return subprocess.Popen([sys.executable, str(ROOT / 'experiments' / 'reproduce.py'),
                           f'--config={config_file}', f'--workdir={workdir}',
                           '--config.distributed.num_processes=2',
                           f'--config.distributed.process_id={process}', '--config.distributed.timeout_s=300',
                           f'--config.distributed.coordinator_address=127.0.0.1:{port}'],
                          env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _output(workdir, process: int) -> str:
  return (workdir.parent / f'{workdir.name}-{process}.out').read_text()


def _two_processes(config_file, workdir):
  """Both processes run to the end: [(exit status, output of this run)]."""
  port = _free_port()
  before = [len(_output(workdir, i)) if (workdir.parent / f'{workdir.name}-{i}.out').exists() else 0
            for i in range(2)]
  procs = [_start(config_file, workdir, port, i) for i in range(2)]
  codes = [p.wait(timeout=600) for p in procs]
  return [(code, _output(workdir, i)[before[i]:]) for i, code in enumerate(codes)]


def _config(config_file):
  spec = importlib.util.spec_from_file_location('tiny', config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _log(workdir) -> dict[int, float]:
  lines = (workdir / 'train_log.jsonl').read_text().splitlines()
  return {r['step']: r['loss'] for r in map(json.loads, lines)}


def _numbers(metrics):
  """metrics.json less the timings, the process count and where training resumed."""
  if isinstance(metrics, dict):
    return {k: _numbers(v) for k, v in metrics.items()
            if k not in ('seconds', 'resumed_from', 'num_processes', 'config')}
  return metrics


@pytest.fixture(scope='module')
def one(tmp_path_factory):
  """(config file, workdir of one process's run from an empty workdir)."""
  from saliency_jax.jobs import pipeline
  root = tmp_path_factory.mktemp('multihost')
  config_file = root / 'tiny.py'
  config_file.write_text(_CONFIG)
  pipeline.run(_config(config_file), root / 'one', log=lambda *_: None)
  return config_file, root / 'one'


def _wait_for_steps(procs, log, steps: int) -> None:
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in procs) and not (
      log.is_file() and len(log.read_text().splitlines()) > steps):
    time.sleep(0.05)


def test_two_processes_train_as_one_and_resume_after_one_is_stopped_or_killed(one, tmp_path):
  config_file, single = one
  log = tmp_path / 'train_log.jsonl'
  # Two processes from an empty workdir; SIGTERM to process 1 alone: both stop at the same step, saved.
  port = _free_port()
  procs = [_start(config_file, tmp_path, port, i) for i in range(2)]
  _wait_for_steps(procs, log, 60)
  procs[1].send_signal(signal.SIGTERM)
  for i, p in enumerate(procs):
    code, out = p.wait(timeout=300), _output(tmp_path, i)
    assert code == 128 + signal.SIGTERM and 'rerun the same command to resume' in out, out[-3000:]
  stopped = [int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()]
  assert max(_log(tmp_path)) == max(stopped) < STEPS

  # Resumed, then process 1 killed (SIGKILL) mid-training, then process 0, blocked with a dead peer.
  port = _free_port()
  procs = [_start(config_file, tmp_path, port, i) for i in range(2)]
  _wait_for_steps(procs, log, max(stopped) + 70)
  procs[1].send_signal(signal.SIGKILL)
  procs[1].wait()
  before = _log(tmp_path)
  procs[0].send_signal(signal.SIGKILL)
  procs[0].wait()
  saved = [int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()]
  assert max(stopped) < max(saved) < STEPS and max(before) > max(saved), (stopped, saved, max(before))
  assert not (tmp_path / 'metrics.json').exists()

  for code, out in _two_processes(config_file, tmp_path):
    assert code == 0, out[-3000:]
  merged = json.loads((tmp_path / 'metrics.json').read_text())
  assert merged['training']['resumed_from'] == max(saved) and merged['num_processes'] == 2
  losses, reference = _log(tmp_path), _log(single)
  assert sorted(losses) == list(range(1, STEPS + 1))  # each step logged once
  # the resumed steps are exactly those run before the kill
  assert all(losses[s] == before[s] for s in before if s > max(saved))
  # two processes train on the batches of one: the same losses up to float round-off (which grows
  # over the steps: Adam's updates amplify tiny gradient differences)
  first = range(1, 31)
  np.testing.assert_allclose([losses[s] for s in first], [reference[s] for s in first], rtol=1e-5)
  result = json.loads((single / 'metrics.json').read_text())
  assert abs(merged['test_accuracy'] - result['test_accuracy']) <= 1 / 16
  assert merged['num_test'] == result['num_test'] == 7


def test_two_processes_evaluate_into_the_metrics_of_one(one, tmp_path):
  config_file, single = one
  shutil.copytree(single / 'checkpoints', tmp_path / 'checkpoints')  # a finished training: evaluation only
  outputs = _two_processes(config_file, tmp_path)
  for code, out in outputs:
    assert code == 0, out[-3000:]
  assert 'process 1: 2 chunks evaluated' in outputs[1][1]  # chunks 1 and 3 of 4
  merged, result = (json.loads((w / 'metrics.json').read_text()) for w in (tmp_path, single))
  assert merged['num_processes'] == 2 and result['num_processes'] == 1
  assert _numbers(merged) == _numbers(result)
  assert merged['num_eval'] == 7 and merged['training']['resumed_from'] == STEPS


def test_chunks_merge_in_chunk_order_with_ragged_rows_and_empty_groups(tmp_path):
  def chunk(indices, boxes):
    rows = {'indices': np.array(indices), 'labels': np.array(indices) * 10,
            'found': {'m': {'status': np.array([[str(i)] * 3 for i in indices])}},
            'gt_boxes': [np.full((b, 4), i, np.float32) for i, b in zip(indices, boxes)]}
    return {'rows': {'tested': {'indices': np.array(indices)}, 'evaluated': rows if indices else {}},
            'totals': {'test_correct': len(indices), 'seconds': {'maps': 1.5} if indices else {}},
            'bad': [{'record': f'r{indices}', 'reason': 'unreadable', 'message': 'x'}]}

  where = chunks.folder(tmp_path, {'a': 1}, 'weights', 'code')
  assert chunks.folder(tmp_path, {'a': 2}, 'weights', 'code') != where
  assert chunks.folder(tmp_path, {'a': 1}, 'other', 'code') != where
  assert chunks.folder(tmp_path, {'a': 1}, 'weights', 'other') != where
  spans = chunks.plan(9, 3)
  for c, (indices, boxes) in enumerate([([0, 1, 2], [1, 3, 2]), ([], []), ([3, 4], [2, 1])]):
    chunks.write(where, c, spans[c], chunk(indices, boxes))
  assert not list(where.glob('.*tmp*'))  # written atomically: no temporary file left
  # chunks of the same settings and weights made by other code are found (and not reused)
  other_code = chunks.folder(tmp_path, {'a': 1}, 'weights', 'other code')
  assert chunks.made_by_other_code(other_code) == [where] and chunks.made_by_other_code(where) == []
  assert chunks.made_by_other_code(chunks.folder(tmp_path, {'a': 2}, 'weights', 'other code')) == []
  merged = chunks.wait(where, spans, timeout_s=5)
  ev = merged['rows']['evaluated']
  assert ev['indices'].tolist() == [0, 1, 2, 3, 4] and ev['labels'].tolist() == [0, 10, 20, 30, 40]
  assert ev['found']['m']['status'][:, 0].tolist() == ['0', '1', '2', '3', '4']
  assert [len(b) for b in ev['gt_boxes']] == [1, 3, 2, 2, 1]
  assert all((b == i).all() for i, b in enumerate(ev['gt_boxes']))
  assert merged['totals'] == {'test_correct': 5, 'seconds': {'maps': 3.0}} and len(merged['bad']) == 3
  with pytest.raises(TimeoutError, match='chunk-000003'):
    chunks.wait(where, spans + [(9, 12)], timeout_s=0)
  with pytest.raises(ValueError, match='eval_chunk'):
    chunks.plan(10, 0)
  assert chunks.plan(7, 3) == [(0, 3), (3, 6), (6, 7)]
