"""Two processes on 127.0.0.1 (jax.distributed) running the main job together write the metrics of one."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED_DATA, shared_data


def _args(workdir, checkpoint):
  return [sys.executable, str(ROOT / 'experiments' / 'reproduce.py'),
          f'--config={ROOT / "configs" / "cifar_resnet_imagenet_sample.py"}', f'--workdir={workdir}',
          f'--config.data.data_dir={SHARED_DATA}', f'--config.checkpoint.path={checkpoint}', '--config.num_eval=7',
          '--config.num_deconvnet=1', '--config.num_figure=1', '--config.workers=0', '--config.class_models.steps=0',
          '--config.crop_size=0', '--config.top_k=2']  # one map per class, two classes: the merge is the point


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_give_the_metrics_of_one(tmp_path):
  pytest.importorskip('torch', reason="reading the PyTorch checkpoint needs the torch extra")
  checkpoint = shared_data('cifar10-resnet', 'resnet20-12fca82f.th')
  shared_data('imagenet-val-sample')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  env.pop('XLA_FLAGS', None)
  one = subprocess.run(_args(tmp_path / 'one', checkpoint), env=env, capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-3000:]

  shutil.copytree(tmp_path / 'one' / 'data', tmp_path / 'two' / 'data')  # the decoded images: not the point here
  port = _free_port()
  procs = [subprocess.Popen(_args(tmp_path / 'two', checkpoint) + [
      '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}',
      f'--config.distributed.coordinator_address=127.0.0.1:{port}', '--config.distributed.timeout_s=600'],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]

  single = json.loads((tmp_path / 'one' / 'metrics.json').read_text())
  merged = json.loads((tmp_path / 'two' / 'metrics.json').read_text())
  assert single['num_processes'] == 1 and merged['num_processes'] == 2
  assert (tmp_path / 'two' / 'hosts' / 'part-1-of-2.npz').is_file()  # process 1's share: images 1, 3, 5
  assert merged['num_eval'] == single['num_eval'] == 7
  for key in ('test_accuracy', 'top1_accuracy_eval', 'top2_accuracy_eval'):
    assert merged[key] == single[key], key
  drop = lambda loc: {m: {k: v for k, v in r.items() if k != 'seconds'} for m, r in loc.items()}
  assert drop(merged['localisation']) == drop(single['localisation'])
