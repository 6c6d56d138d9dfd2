"""The scale-out benchmark (what it measures: configs/benchmark.py).

  python experiments/benchmark.py --config configs/benchmark.py --workdir runs/benchmark

Writes benchmark.json (after every part, atomically) and benchmark.md to the workdir.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from saliency_jax import localise, models, parallel, report, saliency
from saliency_jax.data import make_source, transforms

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Benchmark config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for benchmark.json and benchmark.md.')
_CHILD = flags.DEFINE_bool('child', False, 'Internal: measure the device-scaling stages and print JSON.')
flags.mark_flags_as_required(['config', 'workdir'])

ROOT = pathlib.Path(__file__).resolve().parents[1]


def setup(config):
  """(model, normalised images [N, H, W, 3], uint8 images, labels): synthetic test images, SmallConvNet."""
  data = ml_collections.ConfigDict({
      'name': 'synthetic', 'seed': config.seed, 'image_size': config.image_size, 'num_train': 0,
      'num_test': config.num_images, 'num_classes': 10, 'scale': (0.2, 0.6), 'occlusion': 0.3,
      'skip_bad': False})
  loaded = transforms.load(make_source(data, 'test'), config.image_size, skip_bad=False, progress=False)
  images = loaded['images']
  x = transforms.normalise(images, images.reshape(-1, 3).mean(0) / 255.0, np.ones(3, np.float32))
  model = models.SmallConvNet(10, stages=((16,), (32,), (64,), (128,)), hidden=(), rngs=nnx.Rngs(config.seed))
  model.eval()
  return model, x, images, np.asarray(loaded['labels'])


def images_per_second(fn, n: int, repeats: int) -> float:
  """n / the median wall time of `repeats` calls of fn, after one warm-up call (compilation)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return n / statistics.median(times)


def device_stages(config, model, x, labels) -> dict:
  """The stages that run on the devices, images/s."""
  n, c, crop = len(x), config.chunk_size, config.crop_size
  return {
      'forward': images_per_second(lambda: saliency.scores(model, x, chunk_size=c), n, config.repeats),
      'saliency': images_per_second(lambda: saliency.saliency_maps(model, x, labels, chunk_size=c), n,
                                    config.repeats),
      'ten_crop': images_per_second(lambda: saliency.class_saliency(model, x, labels[:, None], crop_size=crop,
                                                                    chunk_size=c), n, config.repeats),
      f'top{config.top_k}_ten_crop': images_per_second(
          lambda: saliency.top_k_saliency(model, x, k=config.top_k, crop_size=crop, chunk_size=c), n,
          config.repeats),
  }


def host_stages(config, model, x, images, labels) -> dict:
  """Localisation with 0 / 1 / 2 ... worker processes, and the whole pipeline, images/s."""
  maps = np.asarray(saliency.saliency_maps(model, x, labels))
  out = {}
  for w in config.workers:
    out[f'localisation_workers_{w}'] = images_per_second(
        lambda w=w: localise.localise_batch(list(images), list(maps), config.localise, workers=w),
        len(images), config.repeats)
  w, k = max(config.workers), config.top_k

  def pipeline():
    _, _, top = saliency.top_k_saliency(model, x, k=k, crop_size=config.crop_size,
                                        chunk_size=config.chunk_size)
    top = np.asarray(top).reshape(-1, *images.shape[1:3])
    return localise.localise_batch([im for im in images for _ in range(k)], list(top), config.localise,
                                   workers=w)

  out[f'pipeline_top{k}_workers_{w}'] = images_per_second(pipeline, len(images), config.repeats)
  return out


def memory_vs_chunk(config, model, x) -> list[dict]:
  """Top-k 10-crop throughput and XLA's buffers for one call against chunk size."""
  rows = []
  crop = (config.crop_size, config.crop_size)
  for c in config.chunk_sizes:
    c = min(c, len(x))
    row = {'chunk_size': c, f'top{config.top_k}_ten_crop_images_per_s': images_per_second(
        lambda c=c: saliency.top_k_saliency(model, x, k=config.top_k, crop_size=config.crop_size,
                                            chunk_size=c),
        len(x), config.repeats)}
    try:
      compiled = saliency.class_maps_kernel.lower(model, x[:c], None, relu=jax.nn.relu, crop_hw=crop,
                                             k=config.top_k).compile()
      stats = compiled.memory_analysis()
      row['temp_mib'] = stats.temp_size_in_bytes / 2 ** 20
      row['arguments_and_outputs_mib'] = (stats.argument_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20
    except (AttributeError, NotImplementedError) as e:  # a backend without memory statistics
      row['memory'] = f'unavailable: {e}'
    rows.append(row)
  return rows


def device_scaling(config) -> list[dict]:
  """Each host device count in a fresh process (XLA fixes it at start-up)."""
  rows = []
  for d in config.host_devices:
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={d}', 'JAX_PLATFORMS': 'cpu'}
    done = subprocess.run([sys.executable, __file__, f'--config={ROOT / "configs" / "benchmark.py"}',
                           f'--workdir={_WORKDIR.value}', '--child', *_overrides()], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
      raise RuntimeError(f'device-scaling child with {d} devices failed:\n{done.stderr[-3000:]}')
    rows.append({'host_devices': d, **json.loads(done.stdout.strip().splitlines()[-1])})
  return rows


def _overrides() -> list[str]:
  return [a for a in sys.argv[1:] if a.startswith('--config.')]


def external(config, workdir: pathlib.Path) -> dict:
  """benchmark_saliency (PyTorch / Captum, SmallConvNet) and benchmark_localise (OpenCV), when installed."""
  out = {}
  runs = []
  try:
    import captum  # noqa: F401
    import torch  # noqa: F401
    runs.append(('benchmark_saliency', ['--config.models=small_convnet']))
  except ImportError:
    out['benchmark_saliency'] = 'skipped: needs the torch extra (torch, captum)'
  try:
    import cv2  # noqa: F401
    runs.append(('benchmark_localise', []))
  except ImportError:
    out['benchmark_localise'] = 'skipped: needs opencv-python-headless'
  for name, extra in runs:
    done = subprocess.run([sys.executable, str(ROOT / 'experiments' / f'{name}.py'),
                           f'--config={ROOT / "configs" / f"{name}.py"}', f'--workdir={workdir}', *extra],
                          capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if done.returncode:
      out[name] = f'failed: {done.stderr[-500:]}'
      continue
    out[name] = json.loads((workdir / f'{name}.json').read_text())
  return out


def markdown(r: dict) -> str:
  lines = [f"# Benchmark ({r['platform']}, {r['devices']} device(s), {r['num_images']} images at "
           f"{r['image_size']} px, SmallConvNet)", '', '| stage | images/s |', '|---|---|']
  lines += [f'| {k} | {v:.1f} |' for k, v in {**r['device_stages'], **r['host_stages']}.items()]
  lines += ['', '| chunk size | top-5 10-crop images/s | XLA temp MiB | arguments + outputs MiB |',
            '|---|---|---|---|']
  key = f"top{r['top_k']}_ten_crop_images_per_s"
  for row in r['memory_vs_chunk']:
    lines.append(f"| {row['chunk_size']} | {row[key]:.1f} | "
                 f"{row.get('temp_mib', float('nan')):.1f} | "
                 f"{row.get('arguments_and_outputs_mib', float('nan')):.1f} |")
  if r.get('device_scaling'):
    keys = [k for k in r['device_scaling'][0] if k != 'host_devices']
    lines += ['', '| host devices | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for row in r['device_scaling']:
      lines.append(f"| {row['host_devices']} | " + ' | '.join(f'{row[k]:.1f}' for k in keys) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  model, x, images, labels = setup(config)
  if _CHILD.value:
    stages = device_stages(config, model, x, labels)
    print(json.dumps({'saliency': stages['saliency'],
                      f'top{config.top_k}_ten_crop': stages[f'top{config.top_k}_ten_crop']}))
    return
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  r = {'platform': jax.devices()[0].platform, 'devices': parallel.size(), 'num_images': len(x),
       'image_size': config.image_size, 'top_k': config.top_k, 'config': config.to_dict()}
  path = workdir / 'benchmark.json'
  r['device_stages'] = device_stages(config, model, x, labels)
  report.write_json(path, r)
  r['host_stages'] = host_stages(config, model, x, images, labels)
  report.write_json(path, r)
  r['memory_vs_chunk'] = memory_vs_chunk(config, model, x)
  report.write_json(path, r)
  if r['platform'] == 'cpu' and config.host_devices:
    r['device_scaling'] = device_scaling(config)
    report.write_json(path, r)
  if config.external:
    r['external'] = external(config, workdir)
    report.write_json(path, r)
  report.write_atomic(workdir / 'benchmark.md', markdown(r))
  print(markdown(r))


if __name__ == '__main__':
  app.run(main)
