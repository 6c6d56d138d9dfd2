"""Several processes (jax.distributed on 127.0.0.1) running the main job together write the metrics of one."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from saliency_jax.jobs import hosts, pipeline

# The tiny synthetic main job as a config file, so that the subprocesses run the real entry point.
_CONFIG = f'''
import sys

sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import load_config, tiny_main_job


def get_config():
  config = tiny_main_job(load_config('quickstart'))
  config.data.num_test = 7  # uneven: process 0 takes 4 images, process 1 three
  config.localise = {{'graphcut': {{'method': 'graphcut', 'iterations': 1}},
                      'full_image': {{'method': 'full'}},
                      'threshold_15': {{'method': 'threshold', 'threshold': 0.15}}}}
  return config
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _two_processes(config_file, workdir):
  port = _free_port()
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, str(ROOT / 'experiments' / 'reproduce.py'),
                             f'--config={config_file}',
                             f'--workdir={workdir}', '--config.distributed.num_processes=2',
                             f'--config.distributed.process_id={i}', '--config.distributed.timeout_s=300',
                             f'--config.distributed.coordinator_address=127.0.0.1:{port}'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  return [(p.wait(timeout=600), p.stderr.read()) for p in procs]


def _config(config_file):
  spec = importlib.util.spec_from_file_location('tiny', config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_two_processes_give_the_metrics_of_one(tmp_path):
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(_CONFIG)
  single = pipeline.run(_config(config_file), tmp_path / 'one', log=lambda *_: None)  # trains, then evaluates

  # Training is not spread over processes: two processes on a fresh workdir stop with a clear error.
  for code, err in _two_processes(config_file, tmp_path / 'fresh'):
    assert code != 0 and 'train with one process first' in err, err[-2000:]

  # Two processes restoring the finished checkpoint, each reading only its share of the test split.
  shutil.copytree(tmp_path / 'one' / 'checkpoints', tmp_path / 'two' / 'checkpoints')
  for code, err in _two_processes(config_file, tmp_path / 'two'):
    assert code == 0, err[-3000:]
  merged = json.loads((tmp_path / 'two' / 'metrics.json').read_text())
  assert single['num_processes'] == 1 and merged['num_processes'] == 2
  for p, expected in ((0, [0, 2, 4, 6]), (1, [1, 3, 5])):
    parts = list((tmp_path / 'two' / 'data').glob(f'test-32-*-part{p}of2.npz'))
    assert len(parts) == 1, parts
    with np.load(parts[0]) as f:
      assert f['indices'].tolist() == expected and len(f['images']) == len(expected) and f['num_records'] == 7
  assert not list((tmp_path / 'two' / 'data').glob('test-32-*[!f]2.npz'))  # nobody read the whole split
  assert (tmp_path / 'two' / 'hosts' / 'part-1-of-2.npz').is_file()
  for key in ('num_eval', 'num_test', 'test_accuracy', 'top1_accuracy_eval', 'top2_accuracy_eval',
              'pointing_game', 'saliency_mass_on_object', 'object_area_fraction'):
    assert merged[key] == single[key], key
  def drop(loc):
    return {m: {k: v for k, v in r.items() if k != 'seconds'} for m, r in loc.items()}
  assert drop(merged['localisation']) == drop(single['localisation'])


def test_merging_shares_with_ragged_boxes_restores_the_index_order(tmp_path):
  def share(indices, boxes):
    return {'indices': np.array(indices), 'labels': np.array(indices) * 10,
            'found': {'m': {'status': np.array([[str(i)] * 3 for i in indices]), 'seconds': 1.5}},
            'gt_boxes': [np.full((b, 4), i, np.float32) for i, b in zip(indices, boxes)],
            'gt_labels': [np.full(b, i, np.int32) for i, b in zip(indices, boxes)],
            'test_correct': len(indices), 'test_count': 5}

  mine, other = share([0, 2, 4], [1, 3, 2]), share([1, 3], [2, 1])
  hosts.write(hosts.path(tmp_path, 1, 2), other)
  assert set(hosts.read(hosts.path(tmp_path, 1, 2))) == set(other)  # the npz round trip keeps the tree
  merged = hosts.gather(tmp_path, mine, 2, since=0.0, timeout_s=5)
  assert merged['indices'].tolist() == [0, 1, 2, 3, 4] and merged['labels'].tolist() == [0, 10, 20, 30, 40]
  assert merged['found']['m']['status'][:, 0].tolist() == ['0', '1', '2', '3', '4']
  assert [len(b) for b in merged['gt_boxes']] == [1, 2, 3, 1, 2]
  assert all((b == i).all() for i, b in enumerate(merged['gt_boxes']))
  assert all((b == i).all() for i, b in enumerate(merged['gt_labels']))
  assert (merged['test_correct'], merged['test_count'], merged['found']['m']['seconds']) == (5, 10, 3.0)
  with pytest.raises(TimeoutError, match='part-2-of-3'):
    hosts.gather(tmp_path, mine, 3, since=0.0, timeout_s=0)
