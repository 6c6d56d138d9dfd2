"""Data parallelism: 1 and 8 (host) devices give the same results, outputs spread over the 8.

The 8-device run is its own process (XLA fixes the host device count at start-up); the 1-device
reference runs the same script in the test process."""

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# module-scoped fixtures: keep this file's tests on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group('test_parallel')

SCRIPT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from saliency_jax import attribution, class_models, faithfulness, metrics, models, parallel, saliency, train

def biased(model, seed):  # random biases: a trained net's ReLUs are not all at 0 on the zero image
  params = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed), 100))
  nnx.update(model, jax.tree_util.tree_map_with_path(
      lambda p, x: 0.1 * jax.random.normal(next(keys), x.shape) if 'bias' in jax.tree_util.keystr(p) else x,
      params))
  return model

model = biased(models.SmallConvNet(5, stages=((4,), (8,)), hidden=(), rngs=nnx.Rngs(0)), 0)
model.eval()
x = jax.random.normal(jax.random.key(1), (13, 16, 16, 3))  # 13: not a multiple of 8
y = np.arange(13) % 5
out = {}
out['maps'] = saliency.saliency_maps(model, x, y)
out['maps_chunked'] = saliency.saliency_maps(model, x, y, chunk_size=4)
out['top_classes'], out['top_scores'], out['top_maps'] = saliency.top_k_saliency(model, x, k=2, crop_size=12,
                                                                                 chunk_size=6)
# the sequential kernels: each device takes its share of a chunk one image after another
out['top_maps_sequential'] = saliency.top_k_saliency(model, x, k=2, crop_size=12, chunk_size=8,
                                                     sequential=True)[2]
out['fused_sequential'] = jnp.stack(attribution.gradient_and_grad_cam(
    model, x, k=2, crop_size=12, chunk_size=8, sequential=True)[2:])
out['ig'] = attribution.integrated_gradients(model, x, y, steps=4, chunk_size=5)
out['smoothgrad'] = attribution.smoothgrad(model, x, y, samples=3)
out['grad_cam'] = attribution.grad_cam(model, x, y)
out['occlusion'] = attribution.occlusion(model, x, y, patch=8, stride=8)
out['deletion'] = faithfulness.deletion_insertion(model, x, y, np.asarray(out['maps']), steps=4)['deletion']
out['class_models'] = class_models.visualise(model, [0, 1, 2], image_shape=(16, 16, 3), steps=5, jitter=1)
out['accuracy'] = np.array(train.accuracy(model, np.asarray(x), y, batch_size=5))

# one training step on a batch of 8, model and optimiser replicated, batch sharded
net = biased(models.SmallConvNet(5, stages=((4,), (8,)), hidden=(), rngs=nnx.Rngs(2)), 1)
optimizer = nnx.Optimizer(net, optax.sgd(0.1), wrt=nnx.Param)
parallel.replicate(net)
parallel.replicate(optimizer)
(xb, yb), _ = parallel.shard((x[:8], jnp.asarray(y[:8])))
out['train_loss'], _ = train.train_step(net, optimizer, jax.random.key(3), xb, yb)
out['trained_kernel'] = net.classifier.kernel[...]

even = saliency.saliency_maps(model, x[:8], y[:8])
sequential = saliency.top_k_saliency(model, x[:8], k=2, crop_size=12, sequential=True)[2]
spread = {'devices': jax.device_count(), 'mesh': parallel.size(), 'maps_on': len(even.sharding.device_set),
          'batch_on': len(xb.sharding.device_set), 'sequential_maps_on': len(sequential.sharding.device_set)}
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in out.items()})
print(json.dumps(spread))
'''


def _run(tmp_path: pathlib.Path, devices: int):
  path = tmp_path / f'out{devices}.npz'
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'JAX_PLATFORMS': 'cpu'}
  env.pop('SALIENCY_JAX_DEVICES', None)
  done = subprocess.run([sys.executable, '-c', SCRIPT, str(path)], env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(np.load(path)), json.loads(done.stdout.strip().splitlines()[-1])


def _run_here(tmp_path: pathlib.Path):
  """The same script in this (one-device) process: saves a process start-up and its compilations."""
  import jax
  if jax.device_count() != 1:
    return _run(tmp_path, 1)
  path, argv, out = tmp_path / 'out1.npz', sys.argv, io.StringIO()
  try:
    sys.argv = ['script', str(path)]
    with contextlib.redirect_stdout(out):
      exec(compile(SCRIPT, 'parallel-script', 'exec'), {'__name__': 'parallel_script'})
  finally:
    sys.argv = argv
  return dict(np.load(path)), json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('parallel')
  return _run_here(tmp), _run(tmp, 8)


def test_outputs_are_spread_over_all_devices(runs):
  (_, one), (_, eight) = runs
  assert one == {'devices': 1, 'mesh': 1, 'maps_on': 1, 'batch_on': 1, 'sequential_maps_on': 1}
  assert eight == {'devices': 8, 'mesh': 8, 'maps_on': 8, 'batch_on': 8, 'sequential_maps_on': 8}


def test_one_and_eight_devices_agree_on_every_batched_function(runs):
  (one, _), (eight, _) = runs
  assert set(one) == set(eight)
  for name in one:
    assert one[name].shape == eight[name].shape, name
    if one[name].dtype.kind in 'iub':
      np.testing.assert_array_equal(one[name], eight[name], err_msg=name)
    else:
      np.testing.assert_allclose(one[name], eight[name], rtol=2e-5, atol=1e-6, err_msg=name)
  # chunked == unchunked, and the uneven batch of 13 kept all its rows
  np.testing.assert_allclose(eight['maps_chunked'], eight['maps'], rtol=1e-6, atol=1e-7)
  assert eight['maps'].shape == (13, 16, 16) and eight['top_maps'].shape == (13, 2, 16, 16)
  # one image at a time on each device: the vmapped maps, to float round-off
  np.testing.assert_allclose(eight['top_maps_sequential'], eight['top_maps'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(eight['fused_sequential'][0], eight['top_maps'], rtol=1e-5, atol=1e-7)


def test_padding_helpers():
  from saliency_jax import parallel
  assert (parallel.padded_size(13, 8) == 16 and parallel.padded_size(16, 8) == 16
          and parallel.padded_size(1, 8) == 8)
  (a, none), n = parallel.shard((np.arange(5.0), None))
  assert n == 5 and none is None and a.shape[0] == parallel.padded_size(5)
  assert parallel.unshard({'x': a}, n)['x'].shape == (5,)
