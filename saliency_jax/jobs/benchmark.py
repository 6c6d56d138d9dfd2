"""The scale-out benchmark (what it measures: configs/benchmark.py).

`run(config, workdir)`, called by experiments/benchmark.py; writes benchmark.json (after every part,
atomically) and benchmark.md.
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
from flax import nnx

from saliency_jax import localise, models, parallel, report, saliency, xla
from saliency_jax.data import make_source, transforms

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository


def setup(*, seed: int, image_size: int, num_images: int):
  """The benchmark's images and net: synthetic test images and a SmallConvNet (random weights).

  Args:
    seed: the set's and the net's seed.
    image_size: the side in pixels.
    num_images: how many.

  Returns:
    (model, normalised images [N, H, W, 3], uint8 images, labels [N]).
  """
  data = ml_collections.ConfigDict({
      'name': 'synthetic', 'seed': seed, 'image_size': image_size, 'num_train': 0,
      'num_test': num_images, 'num_classes': 10, 'scale': (0.2, 0.6), 'occlusion': 0.3,
      'skip_bad': False})
  loaded = transforms.load(make_source(data, 'test'), image_size, skip_bad=False, progress=False)
  images = loaded['images']
  x = transforms.normalise(images, images.reshape(-1, 3).mean(0) / 255.0, np.ones(3, np.float32))
  model = models.SmallConvNet(10, stages=((16,), (32,), (64,), (128,)), hidden=(), rngs=nnx.Rngs(seed))
  model.eval()
  return model, x, images, np.asarray(loaded['labels'])


def images_per_second(fn, n: int, repeats: int) -> float:
  """N / the median wall time of `repeats` calls of fn, after one warm-up call (compilation).

  Args:
    fn: a function of no argument that blocks until done.
    n: the images one call handles.
    repeats: timed calls after the warm-up.

  Returns:
    Images per second.
  """
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return n / statistics.median(times)


def device_stages(model, x, labels, *, chunk_size: int, crop_size: int, top_k: int, repeats: int) -> dict:
  """The stages that run on the devices, in images/s.

  Args:
    model: the net.
    x: normalised images [N, H, W, 3].
    labels: int [N].
    chunk_size: images per call.
    crop_size: the 10 crops' size.
    top_k: classes per image.
    repeats: timed calls after the warm-up.

  Returns:
    {stage: images/s} of the forward pass, saliency, the 10-crop map and the top-k 10-crop maps.
  """
  n, c, crop = len(x), chunk_size, crop_size
  return {
      'forward': images_per_second(lambda: saliency.scores(model, x, chunk_size=c), n, repeats),
      'saliency': images_per_second(lambda: saliency.saliency_maps(model, x, labels, chunk_size=c), n,
                                    repeats),
      'ten_crop': images_per_second(lambda: saliency.class_saliency(model, x, labels[:, None], crop_size=crop,
                                                                    chunk_size=c), n, repeats),
      f'top{top_k}_ten_crop': images_per_second(
          lambda: saliency.top_k_saliency(model, x, k=top_k, crop_size=crop, chunk_size=c), n, repeats),
  }


def host_stages(model, x, images, labels, *, cut: localise.Settings, workers, top_k: int, crop_size: int,
                chunk_size: int, repeats: int) -> dict:
  """Localisation with 0 / 1 / 2 ... worker processes, and the whole pipeline, in images/s.

  Args:
    model: the net.
    x: normalised images [N, H, W, 3].
    images: uint8 [N, H, W, 3].
    labels: int [N].
    cut: the localisation settings.
    workers: the worker counts to time.
    top_k: classes per image.
    crop_size: the 10 crops' size.
    chunk_size: images per call.
    repeats: timed calls after the warm-up.

  Returns:
    {stage: images/s}.
  """
  maps = np.asarray(saliency.saliency_maps(model, x, labels))
  out = {}
  for w in workers:
    out[f'localisation_workers_{w}'] = images_per_second(
        lambda w=w: localise.localise_batch(list(images), list(maps), cut, workers=w), len(images), repeats)
  w, k = max(workers), top_k

  def pipeline():
    _, _, top = saliency.top_k_saliency(model, x, k=k, crop_size=crop_size, chunk_size=chunk_size)
    top = np.asarray(top).reshape(-1, *images.shape[1:3])
    return localise.localise_batch([im for im in images for _ in range(k)], list(top), cut, workers=w)

  out[f'pipeline_top{k}_workers_{w}'] = images_per_second(pipeline, len(images), repeats)
  return out


def memory_vs_chunk(model, x, *, chunk_sizes, crop_size: int, top_k: int, repeats: int) -> list[dict]:
  """Top-k 10-crop throughput and XLA's buffers for one call against chunk size.

  Args:
    model: the net.
    x: normalised images [N, H, W, 3].
    chunk_sizes: the chunk sizes to try.
    crop_size: the 10 crops' size.
    top_k: classes per image.
    repeats: timed calls after the warm-up.

  Returns:
    [{'chunk_size', images/s, XLA's temporary and argument / output MiB}].
  """
  rows = []
  crop = (crop_size, crop_size)
  for c in chunk_sizes:
    c = min(c, len(x))
    row = {'chunk_size': c, f'top{top_k}_ten_crop_images_per_s': images_per_second(
        lambda c=c: saliency.top_k_saliency(model, x, k=top_k, crop_size=crop_size, chunk_size=c),
        len(x), repeats)}
    try:
      compiled = saliency.class_maps_kernel.lower(model, x[:c], None, relu=jax.nn.relu, crop_hw=crop,
                                                  k=top_k).compile()
      stats = compiled.memory_analysis()
      row['temp_mib'] = stats.temp_size_in_bytes / 2 ** 20
      row['arguments_and_outputs_mib'] = (stats.argument_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20
    except (AttributeError, NotImplementedError) as e:  # a backend without memory statistics
      row['memory'] = f'unavailable: {e}'
    rows.append(row)
  return rows


def device_scaling(host_devices, workdir: pathlib.Path) -> list[dict]:
  """Each host device count in a fresh process (XLA fixes it at start-up).

  experiments/benchmark.py with this command line's config overrides and --config.child=True.

  Args:
    host_devices: the device counts.
    workdir: the benchmark's workdir.

  Returns:
    One row per device count, its device stages.

  Raises:
    RuntimeError: a child process failed (its stderr's tail).
  """
  rows = []
  for d in host_devices:
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={d}', 'JAX_PLATFORMS': 'cpu'}
    done = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'benchmark.py'),
                           f'--config={ROOT / "configs" / "benchmark.py"}', f'--workdir={workdir}',
                           *_overrides(), '--config.child=True'], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
      raise RuntimeError(f'device-scaling child with {d} devices failed:\n{done.stderr[-3000:]}')
    rows.append({'host_devices': d, **json.loads(done.stdout.strip().splitlines()[-1])})
  return rows


def _overrides() -> list[str]:
  return [a for a in sys.argv[1:] if a.startswith('--config.')]


def external(workdir: pathlib.Path) -> dict:
  """benchmark_saliency (PyTorch / Captum, SmallConvNet) and benchmark_localise (OpenCV), when installed.

  Args:
    workdir: the benchmark's workdir.

  Returns:
    {part: its results, or why it was skipped or failed}.
  """
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
  """benchmark.md: images/s per stage, memory against chunk size, device scaling.

  Args:
    r: the results the job writes as JSON.

  Returns:
    The markdown text.
  """
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


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark.json.

  With config.child, the device stages of one device count, printed as JSON for `device_scaling`.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  model, x, images, labels = setup(seed=config.seed, image_size=config.image_size,
                                   num_images=config.num_images)
  timing = {'crop_size': config.crop_size, 'top_k': config.top_k, 'repeats': config.repeats}
  if config.child:
    stages = device_stages(model, x, labels, chunk_size=config.chunk_size, **timing)
    print(json.dumps({'saliency': stages['saliency'],
                      f'top{config.top_k}_ten_crop': stages[f'top{config.top_k}_ten_crop']}))
    return {}
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  r = {'platform': jax.devices()[0].platform, 'devices': parallel.size(), 'num_images': len(x),
       'image_size': config.image_size, 'top_k': config.top_k, 'config': config.to_dict()}
  path = workdir / 'benchmark.json'
  r['device_stages'] = device_stages(model, x, labels, chunk_size=config.chunk_size, **timing)
  report.write_json(path, r)
  r['host_stages'] = host_stages(model, x, images, labels, cut=localise.settings(config.localise),
                                 workers=config.workers, chunk_size=config.chunk_size, **timing)
  report.write_json(path, r)
  r['memory_vs_chunk'] = memory_vs_chunk(model, x, chunk_sizes=config.chunk_sizes, **timing)
  report.write_json(path, r)
  if r['platform'] == 'cpu' and config.host_devices:
    r['device_scaling'] = device_scaling(config.host_devices, workdir)
    report.write_json(path, r)
  if config.external:
    r['external'] = external(workdir)
    report.write_json(path, r)
  report.write_atomic(workdir / 'benchmark.md', markdown(r))
  return r


def summary(r: dict, workdir) -> str:
  """What the entry point prints: the markdown tables (nothing for a device-scaling child).

  Args:
    r: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return markdown(r) if r else ''
