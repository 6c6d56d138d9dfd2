"""Every attribution method against its anchor on the same weights and images (configs/benchmark_methods.py).

`run(config, workdir)`, called by experiments/benchmark_methods.py; writes benchmark_methods.json. The
anchors: Captum on the PyTorch twin (gradient, gradient x input, SmoothGrad, Integrated Gradients,
GradientSHAP, guided backprop, DeconvNet, Grad-CAM, occlusion, DeepLift, LRP); the pytorch-grad-cam
formulas on the twin (`torch_reference.cam_family_maps`: CAM and the CAM family); TorchRay's RISE sums on
the twin (`torch_reference.rise_maps`, the same masks); PAIR's saliency (Blur IG, Guided IG, XRAI: its
numpy core, one image at a time, the twin's autograd gradients as its callback).
"""

import contextlib
import functools
import pathlib
import platform
import statistics
import time

import jax
import numpy as np
from flax import nnx

from saliency_jax import attribution, models, report, timing, weights, xla


def twin_and_model(stages, num_classes: int, seed: int, pool_modules: bool = False):
  """The PyTorch twin SmallConvNet and the package's, with the same weights (the twin's initialisation).

  Args:
    stages: the nets' stages.
    num_classes: K.
    seed: the twin's initialisation seed.
    pool_modules: the twin's max-pooling as modules (`torch_reference.TorchSmallConvNet`).

  Returns:
    (twin in eval mode, the NNX model, (twin features, twin head) cut at the last ReLU).
  """
  import torch
  import torch.nn.functional as F

  from saliency_jax import torch_reference
  torch.manual_seed(seed)
  twin = torch_reference.TorchSmallConvNet(num_classes, stages, pool_modules).eval()
  model = models.SmallConvNet(num_classes, stages=stages, rngs=nnx.Rngs(0))
  weights.assign(weights.small_convnet_entries(model), {k: v.numpy() for k, v in twin.state_dict().items()},
                 'twin')

  def features(x):
    for i, conv in enumerate(twin.convs):
      x = F.relu(conv(x if i == 0 else F.max_pool2d(x, 2, 2, ceil_mode=True)))
    return x

  def head(a):
    return twin.classifier(F.max_pool2d(a, 2, 2, ceil_mode=True).mean(dim=(2, 3)))
  return twin, model, (features, head)


@contextlib.contextmanager
def numpy2_quantile():
  """For PAIR's Guided IG: `np.quantile(..., interpolation=)`, which NumPy 2 renamed `method=`.

  Yields:
    Nothing; np.quantile takes `interpolation` inside the block.
  """
  quantile = np.quantile

  def renamed(a, q, interpolation='linear', **kw):
    return quantile(a, q, method=interpolation, **kw)
  np.quantile = renamed
  try:
    yield
  finally:
    np.quantile = quantile


def anchors(twin, split, settings: dict, masks) -> dict:
  """The anchor of every method: {method: fn(x NCHW tensor, labels int array) -> anything}.

  Args:
    twin: the PyTorch twin.
    split: (features, head) of the twin at the package's default layer.
    settings: {method: the settings both sides run with}.
    masks: RISE's masks [N, H, W] (NumPy), the same as the package's.

  Returns:
    {method: function}, for the methods of `settings`.

  Raises:
    ValueError: a method without an anchor.
  """
  import captum.attr as ca
  import saliency.core as pair
  import torch

  from saliency_jax import torch_reference
  features, head = split
  s = settings
  last_conv = twin.convs[-1]

  def captum(explainer, **kw):
    def fn(x, labels):
      return explainer.attribute(x.requires_grad_(True), target=torch.as_tensor(labels), **kw)
    return fn

  def pair_method(method, **kw):
    def fn(x, labels):
      out = []
      for image, label in zip(x.permute(0, 2, 3, 1).numpy(), labels):
        def call(batch, call_model_args=None, expected_keys=None, label=label):
          xt = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32))
          xt.requires_grad_(True)
          (grad,) = torch.autograd.grad(twin(xt)[:, int(label)].sum(), xt)
          return {pair.INPUT_OUTPUT_GRADIENTS: grad.numpy().transpose(0, 2, 3, 1)}
        with numpy2_quantile():
          out.append(method.GetMask(image, call, **kw))
      return out
    return fn

  def cam(name):
    return lambda x, labels: torch_reference.cam_family_maps(features, head, x, labels, name)

  torch_masks = torch.from_numpy(np.asarray(masks, np.float32))

  def get(method, key):
    return s[method][key]
  builders = {
      'gradient': lambda: captum(ca.Saliency(twin), abs=False),
      'gradient_x_input': lambda: captum(ca.InputXGradient(twin)),
      'smoothgrad': lambda: captum(ca.NoiseTunnel(ca.Saliency(twin)), nt_type='smoothgrad', abs=False,
                                   nt_samples=get('smoothgrad', 'samples'),
                                   nt_samples_batch_size=get('smoothgrad', 'samples'), stdevs=0.15),
      'integrated_gradients': lambda: captum(ca.IntegratedGradients(twin), method='gausslegendre',
                                             n_steps=get('integrated_gradients', 'steps')),
      'guided_backprop': lambda: captum(ca.GuidedBackprop(twin)),
      'deconvnet': lambda: captum(ca.Deconvolution(twin)),
      'grad_cam': lambda: captum(ca.LayerGradCam(twin, last_conv)),
      'occlusion': lambda: captum(ca.Occlusion(twin),
                                  sliding_window_shapes=(3, *[get('occlusion', 'patch')] * 2),
                                  strides=(3, get('occlusion', 'stride'), get('occlusion', 'stride'))),
      'cam': lambda: cam('grad_cam'),  # no CAM anchor: the same forward and head pass as the twin's Grad-CAM
      **{name: functools.partial(cam, name) for name in attribution.CAM_FAMILY},
      'rise': lambda: lambda x, labels: torch_reference.rise_maps(twin, x, labels, torch_masks),
      'blur_ig': lambda: pair_method(pair.BlurIG(), steps=get('blur_ig', 'steps'),
                                     max_sigma=get('blur_ig', 'max_sigma')),
      'guided_ig': lambda: pair_method(pair.GuidedIG(), x_steps=get('guided_ig', 'steps')),
      'xrai': lambda: pair_method(pair.XRAI(), batch_size=get('xrai', 'steps'),
                                  extra_parameters=pair.XRAIParameters(steps=get('xrai', 'steps'))),
      'gradient_shap': lambda: lambda x, labels: ca.GradientShap(twin).attribute(
          x.requires_grad_(True), baselines=torch.zeros_like(x[:1]), target=torch.as_tensor(labels),
          n_samples=get('gradient_shap', 'samples'), stdevs=0.0),  # the package's default: one zero baseline
      'deeplift': lambda: captum(ca.DeepLift(twin)),  # the twin's ReLUs are modules, as Captum needs
      'lrp': lambda: captum(ca.LRP(twin)),  # Captum's epsilon rule on every layer
  }
  unknown = set(s) - set(builders)
  if unknown:
    raise ValueError(f'config.methods: no anchor for {sorted(unknown)}; the anchored methods: '
                     f'{sorted(builders)}')
  out = {name: builders[name]() for name in s}
  return out


@jax.jit
def bare_gradient(model, x, labels):
  """dS_label/dx as a user would jit it: one VJP, no checks (the benchmark's measure of the checks' cost).

  Args:
    model: the model.
    x: images [B, H, W, C].
    labels: int [B].

  Returns:
    [B, H, W, C].
  """
  scores, vjp = jax.vjp(model, x)
  return vjp(jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype))[0]


# The sets of XLA options the gradient's bare VJP and a large forward pass are timed under: XLA's defaults
# and the package's two for its backward passes (`xla.compiler_options`).
OPTIONS = {'default': {}, **{name: xla.compiler_options(name) for name in xla.BACKWARD_OPTIONS}}


def under(name: str, fn):
  """fn(), finished, under the backward options `name` (`xla.use`).

  Args:
    name: a key of `xla.BACKWARD_OPTIONS`.
    fn: a function of no arguments returning arrays.

  Returns:
    Its outputs.
  """
  with xla.use(name):
    return jax.block_until_ready(fn())


def forward_options(model, x, batch: int, repeats: int, settle: int) -> dict:
  """A forward pass of `batch` images under each set of `OPTIONS`, alternating.

  The batch of the methods of many forward passes (occlusion, RISE, Score-CAM).

  Args:
    model: the model.
    x: the benchmark's images [B, H, W, C] (repeated to `batch`).
    batch: the forward pass's batch.
    repeats: alternating rounds.
    settle: untimed calls before each timed one.

  Returns:
    {'batch': batch, 'seconds': {options: [...]}, 'median_seconds': {options: s}}.
  """
  big = np.resize(x, (batch, *x.shape[1:]))
  sides = {}
  for name, o in OPTIONS.items():
    compiled = jax.jit(lambda m, z: m(z), compiler_options=o)
    sides[name] = lambda c=compiled: jax.block_until_ready(c(model, big))
    sides[name]()
  times = timing.interleaved(sides, warmup=0, repeats=repeats, settle=settle)
  median = {k: statistics.median(t) for k, t in times.items()}
  return {'batch': batch, 'seconds': times, 'median_seconds': median}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark_methods.json.

  Args:
    config: the job's config (`configs/benchmark_methods.py`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  import torch
  torch.set_num_threads(config.threads)
  c = config
  twin, model, split = twin_and_model(tuple(tuple(s) for s in c.stages), c.num_classes, c.seed)
  rng = np.random.default_rng(c.seed)
  x = rng.normal(size=(c.num_images, c.image_size, c.image_size, 3)).astype(np.float32)
  labels = rng.integers(0, c.num_classes, c.num_images)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  settings = c.methods.to_dict()
  masks = np.asarray(attribution.rise_masks(jax.random.key(c.seed), settings['rise']['num_masks'],
                                            x.shape[1:3]))
  settings['rise'] = {**settings['rise'], 'masks': masks}
  theirs = anchors(twin, split, c.methods.to_dict(), masks)
  bare = {name: jax.jit(bare_gradient, compiler_options=o) for name, o in OPTIONS.items()}
  rows = {}
  for method in c.methods:
    ours = functools.partial(attribution.attribute, method, model, x, labels, **{
        k: v for k, v in settings[method].items() if not (method == 'rise' and k == 'num_masks')})
    sides = {'jax': lambda f=ours: jax.block_until_ready(f()),
             'anchor': lambda m=method: theirs[m](xt.clone(), labels)}
    for name in xla.BACKWARD_OPTIONS:  # the package's call under its other sets of backward options
      if name != xla.backward_options():
        sides[f'jax_{name}'] = lambda f=ours, n=name: under(n, f)
    if method == 'gradient':  # where the time goes: the same VJP jitted bare, without the package's checks,
      # under each set of `OPTIONS`
      sides.update({f'bare_{name}': lambda f=f: jax.block_until_ready(f(model, x, labels))
                    for name, f in bare.items()})
    look = {}
    for side, fn in sides.items():  # compiled, then one timed look: milliseconds take more rounds
      fn()
      start = time.perf_counter()
      fn()
      look[side] = time.perf_counter() - start
    slowest = max(look.values())
    fast = slowest < c.fast_below
    repeats = c.fast_repeats if fast else c.medium_repeats if slowest < c.medium_below else c.repeats
    times = timing.interleaved(sides, warmup=0, repeats=repeats, settle=c.settle if fast else 0)
    median = {side: statistics.median(t) for side, t in times.items()}
    rows[method] = {'seconds': times, 'median_seconds': median, 'speedup': median['anchor'] / median['jax']}
    log(f"{method}: jax {median['jax']:.3f} s, anchor {median['anchor']:.3f} s, "
        f"{rows[method]['speedup']:.2f}x")
  forward = forward_options(model, x, c.forward_batch, c.fast_repeats, c.settle)
  log(f'a forward pass of {c.forward_batch} images: ' + ', '.join(
      f'{k} {v:.4f} s' for k, v in forward['median_seconds'].items()))
  out = {'platform': platform.platform(), 'jax_backend': jax.default_backend(), 'torch_threads': c.threads,
         'num_images': c.num_images, 'image_size': c.image_size, 'repeats': c.repeats, 'methods': rows,
         'forward_options': forward, 'config': c.to_dict()}
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  report.write_json(workdir / 'benchmark_methods.json', out)
  return out


def summary(out: dict, workdir) -> str:
  """What the entry point prints: seconds per call of each method and its anchor, and the speed-up.

  Args:
    out: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  lines = [f"{m}: {r['median_seconds']['jax']:.4f} s vs {r['median_seconds']['anchor']:.4f} s, "
           f"{r['speedup']:.2f}x" for m, r in out['methods'].items()]
  return '\n'.join(lines + [f'benchmark_methods.json in {workdir}'])
