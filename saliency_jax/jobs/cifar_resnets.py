"""Real CIFAR-10 ResNets: JAX import vs PyTorch, and top-1 on ImageNet photos mapped to CIFAR-10.

`run(config, workdir)`, called by experiments/evaluate_cifar_resnets.py.

Writes `cifar_resnets.json` to the workdir (atomically, after every checkpoint); the entry point prints a
markdown table. What is measured, the cost and the result are in the config's docstring.
"""

import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from saliency_jax import models, report, saliency, stats, weights, xla
from saliency_jax.data import imagenet, transforms

DOMAIN_SHIFT = ('ImageNet val photos (squashed to 227x227 by the redistributor, then shrunk to 32x32), '
                'labels mapped to CIFAR-10 through WordNet hypernyms; airplane, deer and frog have no '
                'image in the sample and dogs and birds dominate: not a CIFAR-10 accuracy.')


# ----------------------------------------------------------------------------- models


def torch_twin(path: pathlib.Path, depth: int):
  """The PyTorch twin holding the checkpoint, read independently of `weights` (torch.load, strict).

  Args:
    path: the checkpoint.
    depth: the ResNet's depth.

  Returns:
    The `torch_reference.TorchCifarResNet`, in eval mode.
  """
  import torch

  from saliency_jax import torch_reference

  obj = torch.load(path, map_location='cpu', weights_only=True)
  state = {k.removeprefix('module.'): v for k, v in obj['state_dict'].items()}
  twin = torch_reference.TorchCifarResNet(depth)
  twin.load_state_dict(state, strict=True)
  return twin.eval()


def jax_outputs(model, images: np.ndarray, labels: np.ndarray, *, float64: bool,
                chunk_size: int | None) -> tuple[np.ndarray, np.ndarray]:
  """Logits and input gradients of each image's label score, from JAX, as float64 arrays.

  Args:
    model: the CifarResNet.
    images: float32 [N, H, W, 3], normalised.
    labels: int [N].
    float64: cast the model (`models.cast`) and run JAX with x64 (restored afterwards).
    chunk_size: images per call.

  Returns:
    (logits [N, K], input gradients [N, H, W, 3]).
  """
  dtype = np.float64 if float64 else np.float32
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', float64)
  try:
    x = jnp.asarray(images, dtype)
    model = models.cast(model, jnp.float64) if float64 else model
    logits = np.asarray(saliency.scores(model, x, chunk_size=chunk_size), np.float64)
    grads = np.asarray(saliency.input_gradients(model, x, labels, chunk_size=chunk_size), np.float64)
  finally:
    jax.config.update('jax_enable_x64', previous)
  return logits, grads


def torch_outputs(twin, images: np.ndarray, labels: np.ndarray, *,
                  float64: bool) -> tuple[np.ndarray, np.ndarray]:
  """The same as `jax_outputs` from the PyTorch twin (autograd), NHWC, as float64 arrays.

  Args:
    twin: the PyTorch twin.
    images: float32 [N, H, W, 3].
    labels: int [N].
    float64: run the twin in float64.

  Returns:
    (logits [N, K], input gradients [N, H, W, 3]).
  """
  import torch

  twin = twin.double() if float64 else twin.float()
  try:
    x = np.asarray(images, np.float64 if float64 else np.float32).transpose(0, 3, 1, 2)
    x = torch.from_numpy(x.copy())
    x.requires_grad_(True)
    logits = twin(x)
    logits.gather(1, torch.from_numpy(np.asarray(labels, np.int64))[:, None]).sum().backward()
  finally:
    twin.float()
  return (logits.detach().numpy().astype(np.float64),
          x.grad.detach().numpy().transpose(0, 2, 3, 1).astype(np.float64))


@jax.jit
def _min_abs_relu_input(model, images):
  smallest = []

  def recording_relu(z):  # traced inside this jit: the list only lives during tracing
    smallest.append(jnp.abs(z).reshape(z.shape[0], -1).min(axis=1))
    return jax.nn.relu(z)

  model(images, relu=recording_relu)
  return jnp.min(jnp.stack(smallest), axis=0)


def min_abs_preactivation(model, images: np.ndarray) -> np.ndarray:
  """Per image, the smallest |input| of any ReLU of the model, computed in float64.

  A pre-activation within float32 round-off of 0 can switch its ReLU between two float32
  implementations, which changes the gradient locally (a different linear piece).

  Args:
    model: the CifarResNet.
    images: float32 [N, H, W, 3].

  Returns:
    [N].
  """
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  try:
    return np.asarray(_min_abs_relu_input(models.cast(model, jnp.float64), jnp.asarray(images, jnp.float64)))
  finally:
    jax.config.update('jax_enable_x64', previous)


def compare_with_torch(model, twin, images: np.ndarray, labels: np.ndarray, ids: list[str], *,
                       chunk_size: int | None, outlier_atol: float) -> tuple[dict, np.ndarray]:
  """JAX vs PyTorch autograd, in float32 and float64: logits and input gradients of `labels` scores.

  Both frameworks get the same inputs (the float32 values, cast to float64 for the float64 run).
  Float32 gradient differences above `outlier_atol` are listed per image with the float64 reference:
  which of the two float32 gradients left it, and the image's smallest |ReLU pre-activation| (a ReLU flip
  shows there).

  Args:
    model: the CifarResNet.
    twin: its PyTorch twin.
    images: float32 [N, H, W, 3], normalised.
    labels: int [N].
    ids: the images' ids, for the outliers.
    chunk_size: images per call.
    outlier_atol: the float32 gradient difference above which an image is listed.

  Returns:
    (report, JAX float32 logits [N, K]).
  """
  out, grads = {}, {}
  for float64 in (False, True):
    dtype = 'float64' if float64 else 'float32'
    jl, jg = jax_outputs(model, images, labels, float64=float64, chunk_size=chunk_size)
    tl, tg = torch_outputs(twin, images, labels, float64=float64)
    grads[dtype] = jg, tg
    if not float64:
      logits32 = jl
    per_image = np.abs(jg - tg).reshape(len(images), -1).max(axis=1)
    out[dtype] = {
        'logits_max_abs_diff': float(np.abs(jl - tl).max()),
        'logits_max_abs': float(np.abs(tl).max()),
        'argmax_disagreements': int((jl.argmax(1) != tl.argmax(1)).sum()),
        'grads_max_abs_diff': float(per_image.max()),
        'grads_median_image_max_abs_diff': float(np.median(per_image)),
        'grads_max_abs': float(np.abs(tg).max()),
        f'grads_images_over_{outlier_atol:g}': int((per_image > outlier_atol).sum()),
    }
  (jg32, tg32), (jg64, tg64) = grads['float32'], grads['float64']
  per_image = np.abs(jg32 - tg32).reshape(len(images), -1).max(axis=1)
  flagged = np.flatnonzero(per_image > outlier_atol)
  out['float32']['grads_max_abs_diff_excluding_outliers'] = float(np.delete(per_image, flagged).max())
  min_z = min_abs_preactivation(model, images[flagged]) if len(flagged) else np.zeros(0)
  def image_max(a, i):
    return float(np.abs(a[i]).max())
  out['float32']['grads_outliers'] = [
      {'id': ids[i], 'label': int(labels[i]), 'jax_vs_torch': float(per_image[i]),
       'jax32_vs_float64': image_max(jg32 - jg64, i), 'torch32_vs_float64': image_max(tg32 - tg64, i),
       'max_abs_grad': image_max(tg64, i), 'min_abs_relu_input_float64': float(z)}
      for i, z in zip(flagged, min_z, strict=True)]
  return out, logits32


# ----------------------------------------------------------------------------- accuracy


def accuracy_report(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 accuracy of logits against labels with its 95% interval, per class, with confusions.

  The interval: percentile bootstrap over images (`stats.interval`).

  Args:
    logits: [N, 10].
    labels: int [N].

  Returns:
    {'n', 'correct', 'top1', 'top1_interval', 'majority_class_baseline', 'majority_class', 'per_class',
    'confusion', 'predictions'}.
  """
  predictions = logits.argmax(axis=1)
  k = logits.shape[1]
  confusion = np.zeros((k, k), np.int64)  # rows: mapped class, columns: prediction
  np.add.at(confusion, (labels, predictions), 1)
  per_class = {}
  for c, name in enumerate(weights.CIFAR10_CLASSES):
    n = int(confusion[c].sum())
    wrong = confusion[c].copy()
    wrong[c] = 0
    per_class[name] = {
        'n': n, 'correct': int(confusion[c, c]),
        'accuracy': float(confusion[c, c] / n) if n else None,
        'most_common_error': (weights.CIFAR10_CLASSES[int(wrong.argmax())] if wrong.any() else None),
        'predicted_as_this': int(confusion[:, c].sum()),
    }
  counts = np.bincount(labels, minlength=k)
  return {
      'n': int(len(labels)), 'correct': int((predictions == labels).sum()),
      'top1': float((predictions == labels).mean()),
      'top1_interval': [stats.interval(predictions == labels)[e] for e in ('low', 'high')],
      'majority_class_baseline': float(counts.max() / len(labels)),
      'majority_class': weights.CIFAR10_CLASSES[int(counts.argmax())],
      'per_class': per_class, 'confusion': confusion.tolist(),
      'predictions': predictions.tolist(),
  }


# ----------------------------------------------------------------------------- main


def _finished_models(path: pathlib.Path, results: dict) -> dict:
  """The per-checkpoint results of an earlier run at `path` with the same config and images, else {}."""
  if not path.is_file():
    return {}
  try:
    previous = json.loads(path.read_text())
  except json.JSONDecodeError:
    return {}
  def same(key):
    return json.loads(json.dumps(results[key])) == previous.get(key)
  return previous.get('models', {}) if same('config') and same('data') else {}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The import check; returns what it writes to workdir/cifar_resnets.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  import torch

  torch.set_num_threads(config.torch_threads)
  data_dir = pathlib.Path(config.data_dir)
  start = time.perf_counter()
  data = imagenet.cifar10_mapped(data_dir / config.sample, image_size=config.image_size,
                                 resample=config.resample)
  x = np.asarray(transforms.normalise(data['images'], weights.CIFAR10_MEAN, weights.CIFAR10_STD))
  labels = data['labels']
  logging.info('%d of %d sample images map onto CIFAR-10 (%.1f s)', len(labels), data['num_images'],
               time.perf_counter() - start)
  results = {
      'config': config.to_dict(),
      'data': {'num_sample_images': data['num_images'], 'num_mapped': len(labels),
               'images_with_mixed_labels': data['mixed_labels'],
               'preprocessing': (f'227x227 squashed JPEG -> PIL {config.resample} resize (antialiased) to '
                                 f'{config.image_size}x{config.image_size}, /255, normalised with '
                                 'weights.CIFAR10_MEAN / CIFAR10_STD'),
               'label': 'first <object> wnid -> CIFAR-10 class via saliency_jax/data/imagenet_cifar10.tsv',
               'class_counts': {n: int((labels == c).sum()) for c, n in enumerate(weights.CIFAR10_CLASSES)},
               'ids': data['ids'], 'labels': labels.tolist()},
      'domain_shift': DOMAIN_SHIFT,
      'models': {},
  }
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  out = pathlib.Path(workdir) / 'cifar_resnets.json'
  done = _finished_models(out, results)
  for name in config.checkpoints:
    if name in done:  # an interrupted run with the same config and data resumes here
      results['models'][name] = done[name]
      logging.info('%s: already in %s, not recomputed', name, out)
      continue
    path = data_dir / 'cifar10-resnet' / name
    t0 = time.perf_counter()
    model = weights.load_cifar_resnet(path)
    twin = torch_twin(path, model.depth)
    checks, logits = compare_with_torch(model, twin, x, labels, data['ids'], chunk_size=config.chunk_size,
                                        outlier_atol=config.grad_outlier_atol)
    accuracy = accuracy_report(logits, labels)
    results['models'][name] = {'depth': model.depth, 'torch_vs_jax': checks, 'accuracy': accuracy,
                               'seconds': time.perf_counter() - t0}
    report.write_json(out, results)
    logging.info('%s: top-1 %.3f, %.1f s', name, accuracy['top1'], time.perf_counter() - t0)
  results['seconds'] = time.perf_counter() - start
  report.write_json(out, results)
  return results


def markdown(results: dict) -> str:
  """cifar_resnets.md: each checkpoint against its PyTorch twin, and its top-1.

  Args:
    results: the results the job writes as JSON.

  Returns:
    The markdown text.
  """
  lines = ['| checkpoint | logits max diff f32 / f64 (max logit) | grads max diff f32 / f64 (max grad) '
           '| top-1 (N) | majority baseline |',
           '|---|---|---|---|---|']
  for name, r in results['models'].items():
    f32, f64, acc = r['torch_vs_jax']['float32'], r['torch_vs_jax']['float64'], r['accuracy']
    lines.append(f'| {name} | {f32["logits_max_abs_diff"]:.1e} / {f64["logits_max_abs_diff"]:.1e} '
                 f'({f32["logits_max_abs"]:.1f}) | {f32["grads_max_abs_diff"]:.1e} / '
                 f'{f64["grads_max_abs_diff"]:.1e} ({f32["grads_max_abs"]:.2f}) | '
                 f'{report.with_interval(acc["top1"], acc.get("top1_interval"), ".1%")} ({acc["n"]}) | '
                 f'{acc["majority_class_baseline"]:.1%} '
                 f'({acc["majority_class"]}) |')
  lines += ['', '| class | N | ' + ' | '.join(results['models']) + ' | most common error |',
            '|---|---|' + '---|' * len(results['models']) + '---|']
  for c in weights.CIFAR10_CLASSES:
    per = [r['accuracy']['per_class'][c] for r in results['models'].values()]
    if not per[0]['n']:
      continue
    cells = ' | '.join(f'{p["correct"]}/{p["n"]} ({p["accuracy"]:.0%})' for p in per)
    errors = ', '.join(p['most_common_error'] or '-' for p in per)
    lines.append(f'| {c} | {per[0]["n"]} | {cells} | {errors} |')
  lines.append('')
  for name, r in results['models'].items():  # where the errors go, e.g. into absent classes
    per_class = r['accuracy']['per_class']
    predicted = {c: p['predicted_as_this'] for c, p in per_class.items() if p['predicted_as_this']}
    lines.append(f'Predictions of {name}: ' + ', '.join(f'{c} {n}' for c, n in predicted.items()))
  lines += ['', f'Domain shift: {results["domain_shift"]}']
  return '\n'.join(lines)


def summary(results: dict, workdir) -> str:
  """What the entry point prints: the table, and where the JSON is.

  Args:
    results: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return (markdown(results) + f'\n\nwrote {os.path.join(workdir, "cifar_resnets.json")} '
          f'({results["seconds"]:.1f} s)')
