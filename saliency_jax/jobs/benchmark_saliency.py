"""Saliency speed: JAX against PyTorch autograd and Captum on the same weights.

`run(config, workdir)`, called by experiments/benchmark_saliency.py.

Writes `benchmark_saliency.json` to the workdir (after every model, atomically); the entry point prints a
markdown table. What is measured, and the cost, are in the config's docstring.
"""

import copy
import os
import platform
import statistics
import time
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from saliency_jax import models, report, saliency, timing, weights, xla

try:
  import torch

  from saliency_jax import torch_reference
except ImportError:
  torch = None
try:
  import captum
  from captum import attr as captum_attr
except ImportError:
  captum = captum_attr = None



# ----------------------------------------------------------------------------- models


def _torch_state(twin) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def build_models(name: str, cfg: types.SimpleNamespace, seed: int):
  """A model and its PyTorch twin with the same weights, both in eval mode.

  The twin keeps its own random init (or, for a CIFAR ResNet, loads `cfg.checkpoint` when that file
  exists) and the NNX model gets its state dict; without torch, the NNX model's own init.

  Args:
    name: 'small_convnet', 'vgg16', 'cifar_resnet20' or 'mobilenet'.
    cfg: the model's settings (configs/benchmark_saliency.py).
    seed: the initialisation's seed.

  Returns:
    (NNX model, torch twin or None, where the weights come from).

  Raises:
    ValueError: an unknown model, or a checkpoint that does not match the twin.
  """
  cifar = name.startswith('cifar_resnet')
  if name == 'mobilenet':
    # the real ImageNet MobileNet v1 (TF.js layers model); the twin reads the same files
    model = weights.load_tfjs_layers_model(cfg.path)
    if torch is None:
      return model, None, cfg.path
    model_config, arrays = weights.read_tfjs_layers_model(cfg.path)
    return model, torch_reference.TorchKerasChain(model_config['config']['layers'], arrays).eval(), cfg.path
  if name == 'small_convnet':
    model = models.SmallConvNet(cfg.num_classes, stages=cfg.stages, rngs=nnx.Rngs(seed))
  elif name == 'vgg16':
    model = models.VGG16(cfg.num_classes, rngs=nnx.Rngs(seed))
  elif cifar:
    model = models.CifarResNet(cfg.depth, cfg.num_classes, rngs=nnx.Rngs(seed))
  else:
    raise ValueError(f'unknown model {name!r}; expected small_convnet, vgg16, cifar_resnet20 or mobilenet')
  model.eval()
  if torch is None:
    return model, None, 'random init (NNX)'

  torch.manual_seed(seed)
  source = 'random init (torch twin)'
  if name == 'small_convnet':
    twin = torch_reference.TorchSmallConvNet(cfg.num_classes, cfg.stages)
    weights.assign(weights.small_convnet_entries(model), _torch_state(twin), 'torch twin')
  elif name == 'vgg16':
    twin = torch_reference.TorchVGG16(cfg.num_classes)
    model = weights.vgg16_from_state_dict(_torch_state(twin), 'torch twin')
  else:
    twin = torch_reference.TorchCifarResNet(cfg.depth, cfg.num_classes)
    if cfg.checkpoint and os.path.isfile(cfg.checkpoint):
      state = weights.read_torch_state_dict(cfg.checkpoint)  # num_batches_tracked dropped
      result = twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
      missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
      if missing or result.unexpected_keys:
        raise ValueError(f'{cfg.checkpoint} does not match the torch twin: missing {missing}, '
                         f'unexpected {result.unexpected_keys}')
      source = cfg.checkpoint
    model = weights.cifar_resnet_from_state_dict(_torch_state(twin), source)
  model.eval()
  twin.eval()
  return model, twin, source


def use_host_devices(n: int) -> None:
  """Splits the CPU into n XLA devices (must run before JAX first touches a device).

  XLA:CPU runs the small convolutions of these nets on about one core; n devices, each with a slice
  of the batch, run side by side.

  Args:
    n: the number of devices.

  Raises:
    RuntimeError: JAX was initialised before the flag could apply.
  """
  flag = f'--xla_force_host_platform_device_count={n}'
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
  if jax.device_count() != n:
    raise RuntimeError(f'host_devices={n}: JAX was initialised before {flag} could apply; '
                       f'it has {jax.device_count()} devices')


# ----------------------------------------------------------------------------- timing


def _call(fn):
  """Seconds one call of fn takes, its result ready; and the result."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def relative_diff(a, b) -> float:
  """Max |a - b| / max |b|.

  Args:
    a: an array.
    b: the reference, a's shape.

  Returns:
    A float.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def relative_l2(a, b) -> float:
  """||a - b|| / ||b||.

  Args:
    a: an array.
    b: the reference, a's shape.

  Returns:
    A float.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ----------------------------------------------------------------------------- PyTorch side


def torch_functions(twin, x, labels, k: int) -> dict:
  """The PyTorch measurements on the same images: name -> fn.

  Args:
    twin: the PyTorch model.
    x: images [B, H, W, C] (NHWC; transposed here).
    labels: int [B].
    k: the top-k classes.

  Returns:
    {name: a function of no argument}: forward, saliency, top-k by autograd and by Captum.
  """
  xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  lt = torch.from_numpy(np.asarray(labels).astype(np.int64))

  def torch_forward():
    with torch.no_grad():
      return twin(xt)

  def torch_saliency():
    # One backward of the selected scores' sum, to the input only (as Captum does; `.backward()`
    # would also accumulate every parameter's gradient).
    xg = xt.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin(xg).gather(1, lt[:, None]).sum(), xg)
    return grad.abs().amax(dim=1)

  fns = {'torch_forward': torch_forward, 'torch_saliency': torch_saliency}
  if captum_attr is None:
    return fns
  method = captum_attr.Saliency(twin)

  def captum_saliency():
    return method.attribute(xt, target=lt, abs=True).amax(dim=1)

  def captum_top_k():
    # What a Captum user does: rank the classes, then one `attribute` call (a forward and a
    # backward) per class rank.
    with torch.no_grad():
      classes = twin(xt).topk(k, dim=1).indices
    maps = [method.attribute(xt, target=classes[:, j], abs=True).amax(dim=1) for j in range(k)]
    return classes, torch.stack(maps, dim=1)

  return {**fns, 'captum_saliency': captum_saliency, 'captum_top_k': captum_top_k}


def float64_agreement(model, twin, x, labels, n: int) -> float:
  """Max-relative difference of the JAX and PyTorch saliency maps of the first n images, in float64.

  In float32 the maps of deep nets differ by a few percent at a few pixels: rounding flips max-pool
  switches between near-equal inputs (JAX float32 against JAX float64 differs as much). In float64 that
  noise is gone and what remains is any real difference between the two implementations.

  Args:
    model: the NNX model.
    twin: its PyTorch twin.
    x: images [B, H, W, C].
    labels: int [B].
    n: how many images.

  Returns:
    A float.
  """
  with jax.enable_x64(True):
    model64 = models.cast(model, jnp.float64)
    maps = saliency.saliency_maps(model64, jnp.asarray(x[:n], jnp.float64), labels[:n])
    maps = np.asarray(maps)
  twin64 = copy.deepcopy(twin).double()
  xt = torch.from_numpy(np.asarray(x[:n], np.float64).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  lt = torch.from_numpy(np.asarray(labels[:n]).astype(np.int64))
  (grad,) = torch.autograd.grad(twin64(xt).gather(1, lt[:, None]).sum(), xt)
  return relative_diff(maps, grad.abs().amax(dim=1).numpy())


# ----------------------------------------------------------------------------- one model


def benchmark_model(name: str, cfg: types.SimpleNamespace, *, batch_size: int, top_k: int, seed: int,
                    float64_check_images: int) -> dict:
  """Times and cross-checks one model.

  Args:
    name: the model.
    cfg: its settings.
    batch_size: images per call.
    top_k: the top-k protocol's classes.
    seed: the images' and weights' seed.
    float64_check_images: images of the float64 agreement check.

  Returns:
    Its entry of the JSON (seconds, ratios, diffs).
  """
  b, k = batch_size, top_k
  model, twin, source = build_models(name, cfg, seed)
  x = jax.random.normal(jax.random.key(seed), (b, cfg.image_size, cfg.image_size, 3), jnp.float32)
  if jax.device_count() > 1:  # batch split over the devices, model replicated
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
    x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
    model = jax.device_put(model, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  labels = None  # each image's top-1 class, from the first forward

  jax_fns = {
      'jax_forward': lambda: saliency.scores(model, x),
      'jax_saliency': lambda: saliency.saliency_maps(model, x, labels),
      'jax_top_k': lambda: saliency.top_k_saliency(model, x, k=k),
  }
  # Compile time: the first call of each (traces, compiles and runs once).
  compile_s, out = {}, {}
  for fn_name, fn in jax_fns.items():
    compile_s[fn_name], out[fn_name] = _call(fn)
    if fn_name == 'jax_forward':
      labels = jnp.argmax(out[fn_name], axis=-1)

  fns, checks = dict(jax_fns), {}
  if twin is not None:
    torch_fns = torch_functions(twin, x, labels, k)
    fns = {**jax_fns, **torch_fns}
    torch_maps = torch_fns['torch_saliency']().numpy()
    checks['scores_rel_diff'] = relative_diff(out['jax_forward'], torch_fns['torch_forward']().numpy())
    checks['saliency_rel_diff'] = relative_diff(out['jax_saliency'], torch_maps)
    checks['saliency_rel_diff_l2'] = relative_l2(out['jax_saliency'], torch_maps)
    if float64_check_images:
      checks['saliency_rel_diff_float64'] = float64_agreement(model, twin, x, labels, float64_check_images)
    if 'captum_saliency' in torch_fns:
      captum_maps = torch_fns['captum_saliency']().numpy()
      checks['captum_saliency_rel_diff'] = relative_diff(out['jax_saliency'], captum_maps)
      classes_t, maps_t = torch_fns['captum_top_k']()
      classes_j, _, maps_j = out['jax_top_k']
      same = np.asarray(classes_j) == classes_t.numpy()
      checks['top_k_classes_agree'] = float(same.mean())
      # Maps compared where both rank the same class (near-ties in the scores may swap ranks).
      checks['top_k_rel_diff'] = relative_diff(np.asarray(maps_j)[same], maps_t.numpy()[same])

  logging.info('%s: timing %s (%d warm-up, %d repeats)', name, ', '.join(fns), cfg.warmup, cfg.repeats)
  load_before = os.getloadavg()[0]
  times = timing.interleaved({name: lambda fn=fn: jax.block_until_ready(fn()) for name, fn in fns.items()},
                             warmup=cfg.warmup, repeats=cfg.repeats, settle=cfg.settle)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  fastest = {name: min(t) for name, t in times.items()}

  derived = {
      'jax_saliency_over_forward': seconds['jax_saliency'] / seconds['jax_forward'],
      'jax_top_k_over_forward': seconds['jax_top_k'] / seconds['jax_forward'],
      'jax_saliency_images_per_s': b / seconds['jax_saliency'],
  }
  if 'torch_saliency' in seconds:
    derived['torch_saliency_over_forward'] = seconds['torch_saliency'] / seconds['torch_forward']
    derived['torch_saliency_images_per_s'] = b / seconds['torch_saliency']
    derived['speedup_forward_jax_vs_torch'] = seconds['torch_forward'] / seconds['jax_forward']
    derived['speedup_saliency_jax_vs_torch'] = seconds['torch_saliency'] / seconds['jax_saliency']
  if 'captum_saliency' in seconds:
    derived['captum_saliency_images_per_s'] = b / seconds['captum_saliency']
    derived['speedup_saliency_jax_vs_captum'] = seconds['captum_saliency'] / seconds['jax_saliency']
    derived['speedup_top_k_jax_vs_captum'] = seconds['captum_top_k'] / seconds['jax_top_k']
  return {'image_size': cfg.image_size, 'batch_size': b, 'warmup': cfg.warmup, 'repeats': cfg.repeats,
          'settle': cfg.settle,
          'weights': source,
          'parameters': int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))),
          'median_s': seconds, 'min_s': fastest, 'compile_s': compile_s, 'derived': derived, 'checks': checks,
          # 1-minute load average of the machine: above its core count, other processes competed.
          'load_average': [load_before, os.getloadavg()[0]]}


# ----------------------------------------------------------------------------- report


def _device() -> dict:
  cpu = platform.processor()
  if os.path.isfile('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  d = jax.devices()[0]
  return {'jax_backend': jax.default_backend(), 'jax_device': f'{d.platform}:{d.device_kind}',
          'jax_device_count': jax.device_count(), 'cpu': cpu, 'cpu_count': os.cpu_count()}


def markdown_table(results: dict) -> str:
  """One row per model: times in ms (medians), the ratio, throughput, speedups, map agreement.

  Args:
    results: {model: `benchmark_model`'s entry}.

  Returns:
    The markdown table.
  """
  cols = ['model', 'px', 'JAX fwd', 'JAX sal', 'sal/fwd', 'JAX top-5', 'compile fwd/sal/top-5 s',
          'torch fwd', 'torch sal', 'Captum sal', 'Captum top-5', 'JAX img/s', 'Captum img/s',
          'x Captum sal', 'x Captum top-5', 'map diff f32 / f64']
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  def ms(s):
    return '-' if s is None else f'{1e3 * s:.1f}'
  def num(v, f='.2f'):
    return '-' if v is None else format(v, f)
  for name, r in results.items():
    s, d, c = r['median_s'], r['derived'], r['compile_s']
    row = [name, r['image_size'], ms(s['jax_forward']), ms(s['jax_saliency']),
           num(d['jax_saliency_over_forward']), ms(s['jax_top_k']),
           '/'.join(f'{c[n]:.1f}' for n in ('jax_forward', 'jax_saliency', 'jax_top_k')),
           ms(s.get('torch_forward')), ms(s.get('torch_saliency')), ms(s.get('captum_saliency')),
           ms(s.get('captum_top_k')), num(d['jax_saliency_images_per_s'], '.1f'),
           num(d.get('captum_saliency_images_per_s'), '.1f'), num(d.get('speedup_saliency_jax_vs_captum')),
           num(d.get('speedup_top_k_jax_vs_captum')),
           ' / '.join(num(r['checks'].get(c), '.0e')
                      for c in ('saliency_rel_diff', 'saliency_rel_diff_float64'))]
    lines.append('| ' + ' | '.join(map(str, row)) + ' |')
  return '\n'.join(lines)


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """Benchmarks every model of `config.models`; writes workdir/benchmark_saliency.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  names = [n for entry in config.models for n in entry.split(',') if n]  # also accepts 'a,b'
  notes = []
  if config.host_devices > 1:
    use_host_devices(config.host_devices)
  if torch is None:
    notes.append('torch not installed: PyTorch and Captum columns skipped (pip install torch==2.13.0)')
  else:
    torch.set_num_threads(config.torch_threads)
  if torch is not None and captum_attr is None:
    notes.append('captum not installed: Captum columns skipped (pip install captum)')
  out = {
      'config': config.to_dict(),
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   'flax': flax.__version__,
                   'torch': None if torch is None else torch.__version__,
                   'captum': None if captum_attr is None else captum.__version__},
      'device': _device(),
      'torch_num_threads': None if torch is None else torch.get_num_threads(),
      'notes': notes,
      'models': {},
  }
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'benchmark_saliency.json')
  for name in names:
    out['models'][name] = benchmark_model(name, types.SimpleNamespace(**config[name].to_dict()),
                                          batch_size=config.batch_size, top_k=config.top_k, seed=config.seed,
                                          float64_check_images=config.float64_check_images)
    report.write_json(path, out)
    logging.info('%s done: %s', name, out['models'][name]['derived'])
  return out


def summary(out: dict, workdir) -> str:
  """What the entry point prints: the table, and the notes.

  Args:
    out: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return '\n'.join([markdown_table(out['models'])] + [f'note: {note}' for note in out['notes']])
