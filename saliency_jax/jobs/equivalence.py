"""The paper's Sect. 4 as a report: gradient vs DeconvNet, layer type by layer type and on whole nets.

`run(config, workdir)` (called by experiments/deconvnet_vs_gradient.py) writes
  equivalence.json / equivalence.md  the proof table: one row per claim, the measured numbers and
                                     whether they confirm it, in float64 and in float32;
  relu_gates.md                      per ReLU of one network: units, gate disagreements, units
                                     where the two rules' VJPs differ;
  reconstructions.png                gradient, DeconvNet and guided-backprop maps side by side;
  sanity.png                         the model-randomisation check of Adebayo et al. (2018);
and returns the JSON's content. Every setting comes from the config
(configs/deconvnet_vs_gradient.py). Each row compares two independent computations (see
`layer_rows`, `relu_row`, `network_rows`); the backward rules under test are the `rules` argument,
so that a wrong rule makes its rows fail.
"""

import functools
import pathlib
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import (
  deconvnet,
  faithfulness,
  layers,
  metrics,
  models,
  report,
  saliency,
  stats,
  train,
  weights,
  xla,
)
from saliency_jax.data import imagenet, synthetic, transforms, voc
from saliency_jax.protocol import setup

METHODS = tuple(deconvnet.RULES)  # the three backward rules
NETWORKS = ('small_random', 'small_trained', 'paper', 'vgg16', 'resnet_pretrained', 'resnet_random',
            'mobilenet')


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _row(claim: str, setting: str, measured: str, confirmed: bool, **numbers) -> dict:
  return {'claim': claim, 'setting': setting, 'measured': measured, 'confirmed': bool(confirmed), **numbers}


# ----------------------------------------------------------------------------- layer types on their own


@jax.jit
def _conv_pair(conv, x, g):
  """(explicit transposed convolution of g, autodiff VJP of the convolution at x applied to g)."""
  return deconvnet.transposed_conv(conv, g, x.shape[1:3]), jax.vjp(conv, x)[1](g)[0]


@functools.partial(jax.jit, static_argnames=('window', 'stride', 'padding'))
def _pool_triple(x, g, *, window, stride, padding):
  """(unpooling of g through x's switches, VJP of lax.reduce_window max, VJP of layers.max_pool)."""
  pads = layers.pool_padding(x.shape[1:3], (window, window), (stride, stride), padding)
  def reference(h):
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                                (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))
  _, switches = layers.max_pool_switches(x, window, stride, padding)
  explicit = layers.unpool(g, switches, x.shape, window, stride, padding)
  def ours(h):
    return layers.max_pool(h, window, stride, padding)
  return explicit, jax.vjp(reference, x)[1](g)[0], jax.vjp(ours, x)[1](g)[0]


def layer_rows(seed: int, dtype, tol: float, *, rules=deconvnet.RULES) -> list[dict]:
  """One row per layer type: the explicit DeconvNet step against autodiff on the same signal.

  The ReLU row measures the backward rules under test against the gate prediction and against
  independent references (see `relu_row`).

  Args:
    seed: the random inputs' seed.
    dtype: float32 or float64.
    tol: the relative difference a row confirms below.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test.

  Returns:
    The rows.
  """
  rows, rng, rngs = [], np.random.default_rng(seed), nnx.Rngs(seed)
  def normal(shape):
    return jnp.asarray(rng.normal(size=shape), dtype)  # no compilation per shape

  worst = 0.0
  for kernel, stride, padding, size in [(7, 2, 'SAME', 33), (5, 2, 'SAME', 17), (3, 1, 'SAME', 16),
                                        (3, 1, ((1, 1), (1, 1)), 16), (3, 2, ((1, 1), (1, 1)), 15)]:
    conv = models.cast(nnx.Conv(3, 8, (kernel, kernel), strides=stride, padding=padding, rngs=rngs), dtype)
    x = normal((2, size, size, 3))
    g = normal(jax.eval_shape(conv, x).shape)
    worst = max(worst, _rel(*_conv_pair(conv, x, g)))
  rows.append(_row('convolution: DeconvNet (filters flipped) = gradient', '5 geometries: 7x7/2, 5x5/2, '
                   '3x3/1 SAME / torch padding, 3x3/2', f'max rel diff {worst:.1e}', worst < tol,
                   max_rel_diff=worst))

  worst_ref, worst_ours = 0.0, 0.0
  for window, stride, padding in [(2, 2, 'VALID'), (3, 2, 'SAME'), (2, 2, 'SAME')]:
    x = normal((2, 15, 15, 4))  # continuous random values: no ties
    g = normal(jax.eval_shape(lambda h, w=window, s=stride, p=padding: layers.max_pool(h, w, s, p), x).shape)
    explicit, reference, ours = _pool_triple(x, g, window=window, stride=stride, padding=padding)
    worst_ref = max(worst_ref, float(jnp.max(jnp.abs(explicit - reference))))
    worst_ours = max(worst_ours, float(jnp.max(jnp.abs(explicit - ours))))
  rows.append(_row('max-pooling: switch = argmax of the gradient (unpooling = gradient)',
                   '2x2/2, 3x3/2 SAME (overlapping), 2x2/2 SAME; vs VJP of lax.reduce_window',
                   f'max abs diff {worst_ref:.1e} (vs our max_pool VJP {worst_ours:.1e})',
                   worst_ref <= tol and worst_ours <= tol, max_abs_diff=worst_ref,
                   max_abs_diff_layers_max_pool=worst_ours))

  rows.append(relu_row(normal((4, 64)), normal((4, 64)), rules=rules))

  dense = models.cast(nnx.Linear(50, 20, rngs=rngs), dtype)
  x = normal((3, 50))
  y, vjp = jax.vjp(dense, x)
  g = normal(y.shape)
  diff = _rel(g @ dense.kernel[...].T, vjp(g)[0])
  rows.append(_row('dense: DeconvNet (transposed weights) = gradient', '50 -> 20', f'max rel diff {diff:.1e}',
                   diff < tol, max_rel_diff=diff))
  return rows


def relu_row(x: jax.Array, g: jax.Array, *, rules=deconvnet.RULES) -> dict:
  """The ReLU row: where the two backward rules differ, measured, against where the gates disagree.

  Three independent comparisons on x, g (every 8th x and every 8th g, offset by 4, are set to exactly 0,
  where the subgradient convention shows): the units where the VJPs of `rules['gradient']` and
  `rules['deconvnet']` differ against the units where 1(x > 0) != 1(g > 0) and g != 0
  (`deconvnet.gate_statistics`); the gradient rule's VJP against `jax.nn.relu`'s (exactly); the DeconvNet
  rule's VJP against numpy's max(g, 0) (exactly).

  Args:
    x: [B, N], the ReLU's input.
    g: [B, N], the signal.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test.

  Returns:
    The row.
  """
  x, g = jnp.asarray(x).at[:, ::8].set(0), jnp.asarray(g).at[:, 4::8].set(0)
  stats = deconvnet.gate_statistics(x, g, rules=rules)
  def vjp_of(f):
    return np.asarray(jax.vjp(f, x)[1](g)[0])
  grad_exact = float(np.max(np.abs(vjp_of(jax.nn.relu) - vjp_of(rules['gradient']))))
  deconv_exact = float(np.max(np.abs(np.maximum(np.asarray(g), 0) - vjp_of(rules['deconvnet']))))
  return _row('ReLU: the two differ exactly where 1(x > 0) != 1(g > 0)',
              f'{x.size} units, random x and g with exact zeros; the rules\' VJPs',
              f"{stats['differ']} units differ, {stats['disagree']} gates disagree, same set: "
              f"{stats['same_set']}; gradient rule vs jax.nn.relu VJP {grad_exact:.0e}, DeconvNet rule vs "
              f'max(g, 0) {deconv_exact:.0e}',
              stats['same_set'] and stats['differ'] > 0 and grad_exact == 0 and deconv_exact == 0,
              gradient_vs_jax_relu=grad_exact, deconvnet_vs_numpy=deconv_exact, **stats)


# ----------------------------------------------------------------------------- whole networks


def _strongest(model, images, layer: str) -> jax.Array:
  """Each image's most active neuron of `layer` (Zeiler & Fergus visualise the strongest)."""
  out = deconvnet.forward(model, images, layer=layer)
  return jnp.argmax(out.reshape(out.shape[0], -1), axis=1)


def network_rows(name: str, model, images, starts, tol: float, *,
                 rules=deconvnet.RULES) -> tuple[list[dict], dict]:
  """Rows for one network and each start layer; and the full `deconvnet.compare` results.

  What each row compares (never a quantity with itself): the explicit DeconvNet (hand-written transposes
  and rectification) with the VJP of the model under `rules['deconvnet']`; the VJP under
  `rules['gradient']` with `jax.grad` through `jax.nn.relu`; explicit backprop with `jax.grad`; at every
  ReLU, the units where the two rules' VJPs of that ReLU differ with the units where the gates disagree
  (`deconvnet.gate_statistics`), and at every other step the explicit transpose with the step's autodiff
  VJP; the image dependence of the VJP under `rules['deconvnet']` (`image_dependence_row`).

  Args:
    name: the network.
    model: the model.
    images: float images [B, H, W, C].
    starts: the start layers.
    tol: the relative difference a row confirms below.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test.

  Returns:
    (rows, {start layer: `deconvnet.compare` results}).
  """
  rows, results = [], {}
  for layer in starts:
    neurons = _strongest(model, images, layer)
    r = deconvnet.compare(model, images, layer=layer, neurons=neurons, rules=rules)
    results[layer] = r
    relus = r['relus'].values()
    steps_worst = max((s['max_abs_diff'] / max(s['max_abs'], 1e-300) for s in r['steps'].values()), default=0)
    disagree, differ = sum(s['disagree'] for s in relus), sum(s['differ'] for s in relus)
    same = all(s['same_set'] for s in relus)
    setting = f'{name}, from {layer} ({"top class" if layer == "scores" else "strongest neuron"})'
    e, z, g = r['deconvnet_explicit_vs_vjp'], r['grad_vs_gradient_relu'], r['gradient_explicit_vs_grad']
    rows.append(_row('explicit DeconvNet = VJP with deconvnet_relu', setting,
                     f"max rel diff {e['relative']:.1e}", e['relative'] < tol, max_rel_diff=e['relative']))
    rows.append(_row('VJP with gradient_relu = jax.grad (exactly)', setting,
                     f"max abs diff {z['max_abs']:.0e}", z['max_abs'] == 0, max_abs_diff=z['max_abs']))
    rows.append(_row('explicit backprop (gradient gates) = jax.grad', setting,
                     f"max rel diff {g['relative']:.1e}", g['relative'] < tol, max_rel_diff=g['relative']))
    rows.append(_row('gradient and DeconvNet differ only at ReLU gate disagreements', setting,
                     f'{differ} ReLU units where the rules differ, {disagree} gate disagreements (same set: '
                     f'{same}) in {len(r["relus"])} ReLU layers; every other step: max rel diff '
                     f"{steps_worst:.1e}; maps differ by {r['gradient_vs_deconvnet']['relative']:.2f} (rel)",
                     same and steps_worst < tol, disagree=disagree, differ=differ,
                     other_steps_max_rel_diff=steps_worst,
                     gradient_vs_deconvnet_rel=r['gradient_vs_deconvnet']['relative']))
  if len(images) > 1:  # the claim compares images
    rows.append(image_dependence_row(name, model, images, tol, rules=rules))
  return rows, results


def image_dependence_row(name: str, model, images, tol: float, *, rules=deconvnet.RULES) -> dict:
  """The DeconvNet sees the image only through the max-pool switches (Mahendran & Vedaldi 2016).

  Its backward pass gates by the sign of the signal, never by the forward activations; convolutions,
  BatchNorm and dense layers are fixed linear maps. Without max-pooling (CIFAR ResNets) the
  reconstruction of a class is therefore the same for every image; with max-pooling it varies. Measured
  on the VJP of the model under `rules['deconvnet']`, with the gradient on the same images as the control:
  it must vary between them, or the images could not show a dependence.

  Args:
    name: the network.
    model: the model.
    images: float images [B, H, W, C].
    tol: the relative difference a row confirms below.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test.

  Returns:
    The row.
  """
  kinds = {s.kind for s in deconvnet.steps(model)}
  has_pool, has_clip = 'max_pool' in kinds, 'clip' in kinds
  spreads = {}
  for method, relu in (('deconvnet', rules['deconvnet']), ('gradient', jax.nn.relu)):
    r = deconvnet.vjp_reconstruction(model, images, neurons=0, relu=relu)
    spreads[method] = _rel(r, jnp.broadcast_to(r[:1], r.shape))
  spread, control = spreads['deconvnet'], spreads['gradient']
  # A relu6 clip keeps its derivative under every rule: a gate by the forward value, like a switch.
  gated = has_pool or has_clip
  confirmed = (spread > 1e-3 if gated else spread < tol) and control > 1e-3
  what = ' and '.join(w for w, present in (('max-pooling', has_pool), ('relu6 clips', has_clip)) if present)
  return _row('DeconvNet depends on the image only through max-pool switches (and relu6 clips)',
              f'{name}, class 0, {len(images)} images ({what or "no max-pooling, no clip"})',
              f'max rel diff between images {spread:.1e} (gradient: {control:.1e})', confirmed,
              max_rel_diff_between_images=spread, gradient_max_rel_diff_between_images=control,
              has_max_pool=has_pool, has_clip=has_clip)


# ----------------------------------------------------------------------------- the networks of the report


def trained_small_convnet(c: types.SimpleNamespace, seed: int, log=print):
  """A SmallConvNet trained on the synthetic set, and its test data.

  Args:
    c: config.synthetic's settings (`c.steps` training steps).
    seed: the set's and the net's seed.
    log: where progress is said.

  Returns:
    (model, {'images', 'x', 'labels', 'accuracy', ...}).
  """
  train_data = transforms.load(synthetic.SyntheticSource(c.num_train, split='train', seed=seed,
                                                         image_size=c.image_size))
  test = transforms.load(synthetic.SyntheticSource(c.num_test, split='test', seed=seed,
                                                   image_size=c.image_size))
  mean = train_data['images'].reshape(-1, 3).mean(0) / 255.0
  def prep(images):
    return (images.astype(np.float32) / 255.0 - mean).astype(np.float32)
  model = models.SmallConvNet(len(synthetic.CLASSES), stages=c.stages, rngs=nnx.Rngs(seed))
  start = time.perf_counter()
  train.fit(model, prep(train_data['images']), train_data['labels'], steps=c.steps, batch_size=c.batch_size,
            learning_rate=c.learning_rate, weight_decay=c.weight_decay, seed=seed)
  model.eval()
  x = prep(test['images'])
  correct = np.asarray(jnp.argmax(saliency.scores(model, x), axis=1)) == test['labels']
  acc = float(np.mean(correct))
  seconds = time.perf_counter() - start
  log(f'SmallConvNet trained on synthetic shapes: test accuracy {acc:.3f} ({seconds:.0f} s)')
  return model, {'images': test['images'], 'x': x, 'labels': test['labels'], 'accuracy': acc,
                 'correct': correct,
                 'names': [synthetic.CLASSES[i] for i in test['labels']]}


def pretrained_resnet(path: pathlib.Path, sample: pathlib.Path, log=print):
  """The pretrained CIFAR ResNet of `path` and the CIFAR-mapped ImageNet images of `sample`.

  Args:
    path: the checkpoint.
    sample: the imagenet-val-sample folder.
    log: where a skip is said.

  Returns:
    (model, {'images', 'x', 'labels', 'accuracy', ...}), or (None, None) without the data.
  """
  if not (path.is_file() and sample.is_dir()):
    log(f'skipped the pretrained ResNet: {path} or {sample} not found')
    return None, None
  try:
    model, _ = setup.load_model(setup.Checkpoint('cifar_resnet', str(path)), input_size=32, num_classes=10)
  except ImportError as e:
    log(f'skipped the pretrained ResNet: {e}')
    return None, None
  data = imagenet.cifar10_mapped(sample, image_size=32)
  x = transforms.normalise(data['images'], weights.CIFAR10_MEAN, weights.CIFAR10_STD)
  correct = np.asarray(jnp.argmax(saliency.scores(model, x), axis=1)) == data['labels']
  acc = float(np.mean(correct))
  log(f'{path.name}: top-1 {acc:.3f} on {len(x)} CIFAR-mapped ImageNet sample images')
  return model, {'images': data['images'], 'x': np.asarray(x), 'labels': data['labels'], 'accuracy': acc,
                 'correct': correct,
                 'names': [weights.CIFAR10_CLASSES[i] for i in data['labels']]}


def pretrained_mobilenet(path: pathlib.Path, sample: pathlib.Path, num_images: int, log=print):
  """The imported MobileNet v1 0.75 of `path` and the first ImageNet val sample images.

  The centre 224 px of the 227 px photos, `x / 127.5 - 1`.

  Args:
    path: the TF.js model folder.
    sample: the imagenet-val-sample folder.
    num_images: how many images.
    log: where a skip is said.

  Returns:
    (model, {'images', 'x', 'labels', 'accuracy', 'correct', ...}), or (None, None) without the data.
  """
  if not ((path / 'model.json').is_file() and sample.is_dir()):
    log(f'skipped MobileNet: {path} or {sample} not found')
    return None, None
  model, _ = setup.load_model(setup.Checkpoint('tfjs_layers', str(path)), input_size=224, num_classes=1000)
  synsets = imagenet.read_synsets(sample / 'synset_words.txt')
  wnids, names = [w for w, _ in synsets], [name.split(',')[0] for _, name in synsets]
  source = voc.VOCSource(sample, wnids, layout='ilsvrc', squashed=True)
  items = [source[i] for i in range(min(num_images, len(source)))]
  images = np.stack([it['image'][1:-2, 1:-2] for it in items])  # the centre 224 of 227
  x = (images.astype(np.float32) / 127.5 - 1).astype(np.float32)
  labels = np.array([it['label'] for it in items])
  correct = np.argmax(np.asarray(saliency.scores(model, x, chunk_size=16)), 1) == labels
  acc = float(np.mean(correct))
  log(f'MobileNet: top-1 {acc:.3f} on {len(x)} ImageNet sample images')
  return model, {'images': images, 'x': x, 'labels': labels, 'accuracy': acc, 'correct': correct,
                 'names': [names[i] for i in labels]}


def clip_statistics(model, images) -> dict:
  """At every relu6 clip (a 'clip' step): the units whose forward input reaches the clip.

  There (x >= max) every rule, the DeconvNet's included, passes no signal back.

  Args:
    model: a model with clip steps.
    images: float images [B, H, W, C].

  Returns:
    {clip: {'units', 'clipped'}}.
  """
  record = {}
  deconvnet.forward(model, images, record=record)
  return {s.name: {'units': int(record[s.name]['input'].size),
                   'clipped': int(jnp.sum(record[s.name]['input'] >= s.options['max']))}
          for s in deconvnet.steps(model) if s.kind == 'clip'}


def start_layers(model) -> tuple[str, ...]:
  """Where the proof starts reconstructions.

  Args:
    model: a model with a layer graph.

  Returns:
    A middle ReLU (or residual block), the last max-pool, the last ReLU before the scores, and the class
    scores.
  """
  model_steps = deconvnet.steps(model)
  relus = [s.name for s in model_steps if s.kind in ('relu', 'block')]
  pools = [s.name for s in model_steps if s.kind == 'max_pool']
  return tuple(dict.fromkeys([relus[len(relus) // 2], *pools[-1:], relus[-1], 'scores']))


def networks(entries) -> set[str]:
  """The names of config.proof.networks (also accepts 'a,b' from a flag).

  Args:
    entries: the names.

  Returns:
    The set of names.
  """
  return {n for entry in entries for n in entry.split(',') if n}


def proof_networks(c: types.SimpleNamespace, synthetic_stages, size: int, seed: int, names: set[str],
                   trained: dict) -> list[tuple[str, object, np.ndarray]]:
  """(name, model, float images) for every network `names` of the proof.

  Args:
    c: config.proof's settings.
    synthetic_stages: the synthetic nets' stages.
    size: their image size.
    seed: the seed.
    names: the networks.
    trained: the trained nets and their data ({name: (model, data)}).

  Returns:
    [(name, model, images)].

  Raises:
    ValueError: unknown networks.
  """
  key = jax.random.key(seed)
  synth = transforms.load(synthetic.SyntheticSource(c.num_images, split='test', seed=seed,
                                                    image_size=size))['images']
  if names - set(NETWORKS):
    raise ValueError(f'unknown networks {sorted(names - set(NETWORKS))}; expected some of {NETWORKS}')
  nets = []
  if 'small_random' in names:
    nets.append(('SmallConvNet (random, BatchNorm, hidden layer)',
                 models.SmallConvNet(len(synthetic.CLASSES), stages=synthetic_stages, batch_norm=True,
                                     hidden=(64,), rngs=nnx.Rngs(seed)),
                 synth.astype(np.float32) / 255.0 - 0.5))
  if 'small_trained' in names and 'small_convnet' in trained:
    model, data = trained['small_convnet']
    nets.append(('SmallConvNet (trained, synthetic)', model, data['x'][:c.num_images]))
  if 'paper' in names:
    paper = models.PaperConvNet(c.paper_classes, input_size=c.paper_size, rngs=nnx.Rngs(seed))
    shape = (c.num_images, c.paper_size, c.paper_size, 3)
    nets.append((f'PaperConvNet (random, {c.paper_size} px)', paper,
                 np.asarray(jax.random.normal(key, shape))))
  if 'vgg16' in names:
    shape = (c.vgg16_images, c.vgg16_size, c.vgg16_size, 3)
    nets.append((f'VGG16 (random, {c.vgg16_size} px)', models.VGG16(1000, rngs=nnx.Rngs(seed)),
                 np.asarray(jax.random.normal(jax.random.fold_in(key, 1), shape))))
  if 'resnet_pretrained' in names and 'resnet' in trained:
    model, data = trained['resnet']
    nets.append(('CifarResNet-20 (pretrained, ImageNet sample)', model, data['x'][:c.num_images]))
  if 'mobilenet' in names and 'mobilenet' in trained:
    model, data = trained['mobilenet']
    nets.append(('MobileNet v1 0.75 (pretrained, ImageNet sample, 224 px)', model,
                 data['x'][:c.mobilenet_images]))
  if 'resnet_random' in names:
    nets.append(('CifarResNet-20 (random)', models.CifarResNet(20, rngs=nnx.Rngs(seed)),
                 np.asarray(jax.random.normal(jax.random.fold_in(key, 2), (c.num_images, 32, 32, 3)))))
  return nets


# ----------------------------------------------------------------------------- maps and the sanity check


def sanity_check(model, fresh, x, labels) -> dict:
  """Cascading randomisation (Adebayo et al. 2018): Spearman of each rule's map with its original.

  Args:
    model: the trained net.
    fresh: the same architecture, freshly initialised.
    x: float images [B, H, W, C].
    labels: int [B].

  Returns:
    {'layers': [names randomised so far, top-down], method: [mean rho per stage], ...}.
  """
  return faithfulness.cascading_randomisation(model, fresh, lambda m: deconvnet.rule_maps(m, x, labels))


# ----------------------------------------------------------------------------- figures and tables


def reconstructions_figure(path, rows: list[tuple[str, np.ndarray, dict]]) -> None:
  """One row per image: image | gradient | DeconvNet | guided backprop (each map scaled to its max).

  Args:
    path: the file to write.
    rows: [(title, image, {rule: map})].
  """
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2 * len(rows)), squeeze=False)
  for i, (title, image, maps) in enumerate(rows):
    axes[i, 0].imshow(image)
    axes[i, 0].set_title(title, fontsize=7)
    for j, m in enumerate(METHODS):
      a = maps[m] / max(maps[m].max(), 1e-30)
      axes[i, j + 1].imshow(a, cmap='gray')
      axes[i, j + 1].set_title(m, fontsize=7)
    for ax in axes[i]:
      ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sanity_figure(path, checks: dict[str, dict]) -> None:
  """sanity.png: each network's rank correlation with the original map as layers are re-drawn, per rule.

  Args:
    path: the file to write.
    checks: {network: `faithfulness.cascading_randomisation`'s dict}.
  """
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(checks), figsize=(6 * len(checks), 4), squeeze=False)
  for ax, (name, c) in zip(axes[0], checks.items()):
    stages = np.arange(len(c['layers']) + 1)
    for m in METHODS:
      ax.errorbar(stages, [1.0] + c[m], yerr=[0.0] + c[f'{m}_std'], label=m, marker='o', capsize=2)
    ax.set_xticks(stages, ['original'] + c['layers'], rotation=70, fontsize=7)
    ax.set_ylabel('Spearman rank correlation with the original map')
    ax.set_title(f'{name}: cascading randomisation (top-down)', fontsize=9)
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color='grey', lw=0.5)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown(rows: list[dict]) -> str:
  """The proof table: one row per claim, setting and precision.

  Args:
    rows: the proof's rows.

  Returns:
    The markdown text.
  """
  lines = ['| precision | claim (paper Sect. 4) | setting | measured | confirmed |', '|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['precision']} | {r['claim']} | {r['setting']} | {r['measured']} | "
                 f"{'yes' if r['confirmed'] else '**no**'} |")
  return '\n'.join(lines)


def summary(result: dict, workdir) -> str:
  """What the entry point prints: the proof table and whether every claim is confirmed.

  Args:
    result: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return f"{markdown(result['rows'])}\nall claims confirmed: {result['all_confirmed']}"


def gates_markdown(name: str, layer: str, relus: dict) -> str:
  """The ReLU gates table of one network: per ReLU, where the rules differ against the gates' prediction.

  Args:
    name: the network.
    layer: the layer the reconstruction starts from.
    relus: {ReLU: `deconvnet.gate_statistics`}.

  Returns:
    The markdown text.
  """
  lines = [f'ReLU gates of {name}, reconstructing from {layer} (float64): the DeconvNet signal g at each '
           'ReLU, its input x; the rules differ where the VJPs of the ReLU under the gradient and the '
           'DeconvNet rules, applied to g, differ.', '',
           '| ReLU | units | g != 0 | gates disagree: 1(x>0) != 1(g>0) | units where the rules differ | '
           'same set |', '|---|---|---|---|---|---|']
  for relu, s in relus.items():
    lines.append(f"| {relu} | {s['units']} | {s['signal_nonzero']} | {s['disagree']} | {s['differ']} | "
                 f"{'yes' if s['same_set'] else '**no**'} |")
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- the run


@xla.under_config
def run(config, workdir: str, log=print, *, rules=deconvnet.RULES) -> dict:
  """The report (see the module docstring).

  Args:
    config: the job's config.
    workdir: where it writes its files.
    log: where progress is said.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test.

  Returns:
    What it writes as JSON.

  Raises:
    ValueError: unknown networks.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  data_dir, names = pathlib.Path(config.data_dir), networks(config.proof.networks)
  if names - set(NETWORKS):
    raise ValueError(f'unknown networks {sorted(names - set(NETWORKS))}; expected some of {NETWORKS}')
  proof = types.SimpleNamespace(**config.proof.to_dict())
  trained = {}
  model, data = trained_small_convnet(types.SimpleNamespace(**config.synthetic.to_dict()), config.seed, log)
  trained['small_convnet'] = (model, data)
  model, data = pretrained_resnet(data_dir / config.resnet.checkpoint, data_dir / config.resnet.sample, log)
  if model is not None:
    trained['resnet'] = (model, data)
  if 'mobilenet' in names:
    m = config.mobilenet
    model, data = pretrained_mobilenet(data_dir / m.checkpoint, data_dir / m.sample, m.num_images, log)
    if model is not None:
      trained['mobilenet'] = (model, data)

  rows, gate_tables = [], []
  for precision, dtype, tol in (('float64', jnp.float64, config.tolerance_float64),
                                ('float32', jnp.float32, config.tolerance_float32)):
    with jax.enable_x64(precision == 'float64'):
      for r in layer_rows(config.seed, dtype, tol, rules=rules):
        rows.append({'precision': precision, **r})
      for name, model, x in proof_networks(proof, config.synthetic.stages, config.synthetic.image_size,
                                           config.seed, names, trained):
        t = time.perf_counter()
        only_scores = config.proof.scores_only or name.startswith('MobileNet')  # 224 px in float64: costly
        starts = ('scores',) if only_scores else start_layers(model)
        net_rows, results = network_rows(name, models.cast(model, dtype), jnp.asarray(x, dtype), starts, tol,
                                         rules=rules)
        rows += [{'precision': precision, **r} for r in net_rows]
        if precision == 'float64':
          gate_tables.append(gates_markdown(name, 'scores', results['scores']['relus']))
        log(f'{precision} {name}: {time.perf_counter() - t:.1f} s')

  # Reconstructions side by side and the sanity check, on the trained networks (float32).
  figure_rows, similarity, checks = [], {}, {}
  n = config.num_figure
  for key_name, (model, data) in trained.items():
    x, labels = jnp.asarray(data['x'][:config.num_maps]), jnp.asarray(data['labels'][:config.num_maps])
    maps = deconvnet.rule_maps(model, x, labels)
    pairs = {f'{a} vs {b}': float(np.mean([metrics.spearman(p, q) for p, q in zip(maps[a], maps[b])]))
             for a, b in (('gradient', 'deconvnet'), ('gradient', 'guided'), ('deconvnet', 'guided'))}
    similarity[key_name] = {'num_images': int(len(x)), 'mean_spearman': pairs}
    for i in range(n):
      figure_rows.append((f'{key_name}: {data["names"][i]}', data['images'][i],
                          {m: maps[m][i] for m in METHODS}))
    fresh = faithfulness.fresh_like(model, config.seed + 1)  # the same architecture, other random weights
    checks[key_name] = sanity_check(model, fresh, x[:config.num_sanity], labels[:config.num_sanity])
    final = ', '.join(f'{m} {checks[key_name][m][-1]:.2f}' for m in METHODS)
    log(f'sanity check {key_name}: rho after randomising every layer: {final}')
  reconstructions_figure(workdir / 'reconstructions.png', figure_rows)
  sanity_figure(workdir / 'sanity.png', checks)

  clips = {k: clip_statistics(model, jnp.asarray(data['x'][:config.num_sanity])) for k, (model, data) in
           trained.items() if any(s.kind == 'clip' for s in deconvnet.steps(model))}
  confirmed = all(r['confirmed'] for r in rows)
  result = {'rows': rows, 'all_confirmed': confirmed, 'similarity': similarity, 'sanity_check': checks,
            'relu6_clips': clips,
            'accuracy': {k: v[1]['accuracy'] for k, v in trained.items()},
            'accuracy_interval': {k: [stats.interval(v[1]['correct'])[e] for e in ('low', 'high')]
                                  for k, v in trained.items()},
            'seconds': time.perf_counter() - start, 'config': config.to_dict()}
  report.write_json(workdir / 'equivalence.json', result)
  report.write_atomic(workdir / 'equivalence.md', '\n'.join([
      '# Gradient vs DeconvNet (paper Sect. 4)', '',
      f"All claims confirmed: {'yes' if confirmed else '**no**'}.", '', markdown(rows), '',
      '## Map similarity (mean Spearman rank correlation)', '',
      '| network | images | ' + ' | '.join(next(iter(similarity.values()))['mean_spearman']) + ' |',
      '|---|---|---|---|---|',
      *[f"| {k} | {v['num_images']} | " + ' | '.join(f'{s:.3f}' for s in v['mean_spearman'].values()) + ' |'
        for k, v in similarity.items()], '',
      '![reconstructions](reconstructions.png)', '', '![sanity](sanity.png)', '']))
  report.write_atomic(workdir / 'relu_gates.md', '\n\n'.join(gate_tables) + '\n')
  return result
