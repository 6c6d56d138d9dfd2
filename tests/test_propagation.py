"""LRP and DeepLift by program transformation: known answers, Captum 0.9 and Zennit 0.5 on the same weights.

The twin (`torch_reference.TorchSmallConvNet`) has its ReLUs and its global average as modules, which
is what Captum's and Zennit's hooks act on; its max-pooling is functional (the gradient in both, as in
the package). Zennit 1.0 needs Python >= 3.11.11; 0.5.1 is checked, installed without its torchvision
dependency (`pip install --no-deps zennit==0.5.1`: torchvision does not import beside the CPU build
of torch; Zennit's `torchvision` module, its ResNet canonizers, is stubbed).
"""

import copy
import functools
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, models, propagation, rules

TORCH_REASON = 'the PyTorch twins need the torch extra'
STAGES = ((8,), (16,), (16,))
RTOL = 1e-9


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _twin_and_model(pool_modules=False):
  import torch

  from saliency_jax.jobs import benchmark_methods
  twin, model, _ = benchmark_methods.twin_and_model(STAGES, 6, 0, pool_modules)
  with torch.no_grad():  # biases of both signs: the rules treat them differently
    for p in twin.parameters():
      if p.ndim == 1:
        p.copy_(0.1 * torch.randn(p.shape))
  from saliency_jax import weights
  weights.assign(weights.small_convnet_entries(model), {k: v.numpy() for k, v in twin.state_dict().items()},
                 'twin')
  return twin.double().eval(), models.cast(model, jnp.float64)


def _batch(n=3, size=24, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, size, size, 3)), np.array([1, 4, 0])[:n]


def _nchw(x):
  import torch
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _zennit():
  """Zennit, importable without torchvision (its ResNet canonizers stubbed), or a skip."""
  pytest.importorskip('torch', reason=TORCH_REASON)
  try:
    import torchvision  # noqa: F401
  except Exception:  # absent, or present and broken beside the CPU torch (a RuntimeError on import)
    stub = types.ModuleType('torchvision')
    stub.models = types.ModuleType('torchvision.models')
    stub.models.resnet = types.ModuleType('torchvision.models.resnet')
    stub.models.resnet.Bottleneck = type('Bottleneck', (), {})
    stub.models.resnet.BasicBlock = type('BasicBlock', (), {})
    sys.modules.update({'torchvision': stub, 'torchvision.models': stub.models,
                        'torchvision.models.resnet': stub.models.resnet})
  return pytest.importorskip('zennit', reason='Zennit: pip install --no-deps zennit==0.5.1 (the README\'s '
                             'test command installs it)')


# ----------------------------------------------------------------------------- known answers


def test_lrp_zero_is_gradient_times_input_and_every_rule_conserves(x64):
  """LRP-0 equals gradient x input on a ReLU net (Ancona et al. 2018), biases and all; with zero biases every
  rule hands the class score down whole. On a CIFAR ResNet the strided convolutions (a custom derivative
  of the package's) and the residual sums are found too."""
  x, labels = _batch(size=16)
  net = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0))
  for conv in net.convs:
    conv.bias[...] = 0.1 * jax.random.normal(jax.random.key(1), conv.bias.shape, jnp.float32)
  net = models.cast(net, jnp.float64)
  resnet = models.cast(models.CifarResNet(8, 6, rngs=nnx.Rngs(1)), jnp.float64)
  for model in (net, resnet):
    lrp0 = attribution.lrp(model, x, labels, composite=propagation.Rule(epsilon=0.0))
    np.testing.assert_allclose(lrp0, attribution.gradient_x_input(model, x, labels), rtol=1e-9, atol=1e-14)
  assert len(propagation.layers(resnet, x)) == 1 + 3 * 2 + 1  # the stem, two convs in 3 blocks, the head
  unbiased = models.cast(models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0)), jnp.float64)
  scores = np.asarray(unbiased(x))[np.arange(3), labels]
  for name in propagation.COMPOSITES:
    r = np.asarray(attribution.lrp(unbiased, x, labels, composite=name)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(r, scores, rtol=1e-4, err_msg=name)  # the stabilisers (1e-6) take a little
  # the epsilon rule absorbs: a large epsilon hands down less than the score
  damped = np.asarray(attribution.lrp(unbiased, x, labels, composite=propagation.Rule(epsilon=1.0)))
  assert np.all(np.abs(damped.sum(axis=(1, 2, 3))) < np.abs(scores))


def test_lrp_on_a_vit_is_conservative_with_the_transformer_rules(x64):
  """With LayerNorm's scale, the attention weights and GELU's gate held constant (Ali et al. 2022) and no
  biases, the ViT is linear in its input along the backward pass: LRP-0 sums to the score. The plain
  gradient x input does not (the control)."""
  vit = models.ViT(5, image_size=16, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, rngs=nnx.Rngs(0))
  state = nnx.state(vit, nnx.Param)
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if any(getattr(k, 'key', None) in ('bias', 'position', 'cls')
                                               for k in path) else v, state)
  nnx.update(vit, zeroed)
  vit = models.cast(vit, jnp.float64)
  x, labels = _batch(size=16)
  scores = np.asarray(vit(x))[np.arange(3), labels]
  r = np.asarray(attribution.lrp(vit, x, labels, composite=propagation.Rule(epsilon=0.0)))
  np.testing.assert_allclose(r.sum(axis=(1, 2, 3)), scores, rtol=1e-9)
  plain = np.asarray(attribution.gradient_x_input(vit, x, labels)).sum(axis=(1, 2, 3))
  assert np.max(np.abs(plain - scores) / np.abs(scores)) > 0.05
  # 2 blocks x (q, k, v, out, mlp1, mlp2) + patches + head; the softmax of each block and 5 LayerNorms
  assert len(propagation.layers(vit, x)) == 14
  flat, _ = propagation.flat_program(lambda z: vit(z), jnp.asarray(x))
  kinds = [flat.jaxpr.eqns[i].primitive.name for i in propagation.plan(flat.jaxpr).detached]
  assert sorted(kinds) == ['div'] * 2 + ['rsqrt'] * 5 + ['tanh'] * 2


def test_deeplift_sums_to_the_score_difference_on_any_relu_function():
  """Completeness (summation to delta) on a plain function with jnp.maximum ReLUs and no max-pooling,
  and the rescale rule differs from gradient x (x - x')."""
  key = jax.random.split(jax.random.key(0), 4)
  w3 = jax.random.normal(key[3], (5, 5))
  w1, w2 = jax.random.normal(key[0], (3, 3, 3, 8)), jax.random.normal(key[1], (8, 5))
  b1 = jax.random.normal(key[2], (8,))

  def net(x):
    h = jnp.maximum(jax.lax.conv_general_dilated(x, w1, (2, 2), 'SAME',
                                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b1, 0.0)
    return jnp.maximum(h.mean(axis=(1, 2)) @ w2 + 0.5, 0.0) @ w3 - 1.0
  x, labels = _batch(size=8)
  x = x.astype(np.float32)
  base = np.random.default_rng(5).normal(size=x.shape[1:]).astype(np.float32)
  model = rules.as_model(net, jnp.asarray(x))
  a = np.asarray(attribution.deeplift(model, x, labels, baseline=base))
  delta = np.asarray(net(x) - net(jnp.broadcast_to(base, x.shape)))[np.arange(3), labels]
  np.testing.assert_allclose(a.sum(axis=(1, 2, 3)), delta, rtol=1e-5, atol=1e-5)
  g = np.asarray(attribution.gradient(model, x, labels)) * (x - base)
  assert not np.allclose(a, g, rtol=1e-3)


def test_bad_settings_and_models_are_named(x64):
  x, labels = _batch(size=16)
  net = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='LRP composite must be one of'):
    attribution.lrp(net, x, labels, composite='alpha2beta1')
  with pytest.raises(ValueError, match='LRP rule must be one of'):
    propagation.Rule('alpha')
  with pytest.raises(ValueError, match='low and high are ZBox'):
    propagation.Rule('zbox', low=-1.0)
  with pytest.raises(ValueError, match='for the first layer only'):  # an input rule on every convolution
    attribution.lrp(net, x, labels, composite=propagation.Rule('flat'))
  with pytest.raises(ValueError, match='computes something from its input first'):
    attribution.lrp(lambda z: net(2.0 * z), x, labels, composite='epsilon_plus_flat')
  with pytest.raises(ValueError, match='call propagation.relevance'):
    propagation.with_lrp(net, 'epsilon_plus_flat')(jnp.asarray(x, jnp.float32))
  with pytest.raises(ValueError, match='baseline must be'):
    attribution.deeplift(net, x, labels, baseline=np.zeros((3, 3, 3)))
  vit = models.ViT(5, image_size=16, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='never calls its relu argument'):
    attribution.deeplift(vit, x, labels)  # no rectification: the rescale rule would act on nothing
  three = np.array([0, 2, 1])  # the functions below score the 3 channels
  with pytest.raises(ValueError, match='no ReLUs'):
    attribution.deeplift(lambda z: jnp.tanh(z).mean(axis=(1, 2)), x, three)
  with pytest.raises(ValueError, match='no linear layer'):
    attribution.lrp(lambda z: jnp.maximum(z, 0).mean(axis=(1, 2)), x, three)
  w = jnp.ones((3, 3), jnp.float32)

  def looped(z):
    return jax.lax.fori_loop(0, 2, lambda i, h: jnp.maximum(h @ w, 0.0), z.mean(axis=(1, 2)))
  with pytest.raises(ValueError, match='inside a scan'):
    attribution.lrp(looped, x, three)


# ----------------------------------------------------------------------------- the anchors


def test_lrp_equals_captum_epsilon_and_a_composite(x64):
  pytest.importorskip('torch', reason=TORCH_REASON)
  import torch
  from captum.attr import LRP
  from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule
  twin, model = _twin_and_model(pool_modules=True)
  x, labels = _batch()
  xt = _nchw(x)

  def captum(first, conv, dense):  # rule classes: Captum's rules hold state, one instance per layer
    net = copy.deepcopy(twin)
    for i, c in enumerate(net.convs):
      c.rule = first() if i == 0 else conv()
    net.classifier.rule = dense()
    for p in net.pools:  # max-pooling: the winner takes all, as the gradient and Zennit give it
      p.rule = EpsilonRule(1e-12)
    return _nhwc(LRP(net).attribute(xt, target=torch.from_numpy(labels)))

  ours = attribution.lrp(model, x, labels, composite=propagation.Rule(epsilon=0.1))
  epsilon = functools.partial(EpsilonRule, 0.1)
  expected = captum(epsilon, epsilon, epsilon)
  # Captum's average takes the epsilon rule with 1e-9, the package's none: 1e-8 of the largest relevance
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
  # gamma and z+ (Captum's Alpha1_Beta0) agree with Zennit's where their inputs are ReLU outputs, the
  # biases are left out, and (gamma) the negative outputs go into a ReLU: the classifier takes z+
  composite = propagation.Composite(conv=propagation.Rule('gamma', epsilon=1e-9, zero_bias=True),
                                    dense=propagation.Rule('zplus', epsilon=1e-9, zero_bias=True),
                                    first=propagation.Rule('epsilon', epsilon=0.1))
  ours = attribution.lrp(model, x, labels, composite=composite)
  expected = captum(epsilon, functools.partial(GammaRule, 0.25, set_bias_to_zero=True),
                    functools.partial(Alpha1_Beta0_Rule, True))
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
  assert not np.allclose(ours, attribution.lrp(model, x, labels, composite=propagation.Rule(epsilon=0.1)),
                         rtol=1e-2)


def test_lrp_equals_zennit_composites(x64):
  _zennit()
  import torch
  from zennit.attribution import Gradient
  from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
  from zennit.rules import Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus
  from zennit.types import Activation, AvgPool, Convolution
  twin, model = _twin_and_model()
  x, labels = _batch()
  xt = _nchw(x).requires_grad_(True)
  # Zennit's base map, its average's Norm with no stabiliser to speak of (the package's average is LRP-0)
  base = [(Activation, Pass()), (AvgPool, Norm(stabilizer=1e-30))]
  hot = torch.nn.functional.one_hot(torch.from_numpy(labels), 6).double()
  zennit_composites = {
      'epsilon_plus': LayerMapComposite(base + [(Convolution, ZPlus(stabilizer=1e-6)),
                                                (torch.nn.Linear, Epsilon(epsilon=1e-6))]),
      'epsilon_gamma': SpecialFirstLayerMapComposite(
          base + [(Convolution, Gamma(gamma=0.25, stabilizer=1e-6)),
                  (torch.nn.Linear, Epsilon(epsilon=1e-6))],
          first_map=[(Convolution, Epsilon(epsilon=1e-6))]),
      'gamma': LayerMapComposite(base + [(Convolution, Gamma(gamma=0.25, stabilizer=1e-6)),
                                         (torch.nn.Linear, Gamma(gamma=0.25, stabilizer=1e-6))]),
  }
  # the input rules on the first layer: Zennit's EpsilonPlusFlat, EpsilonGammaBox (per-channel bounds), and
  # w-square under EpsilonPlus
  low, high = (-2.0, -1.5, -2.5), (2.0, 2.5, 1.5)
  bounds = (torch.tensor(low).view(1, 3, 1, 1).double(), torch.tensor(high).view(1, 3, 1, 1).double())
  zennit_composites['epsilon_plus_flat'] = SpecialFirstLayerMapComposite(
      base + [(Convolution, ZPlus(stabilizer=1e-6)), (torch.nn.Linear, Epsilon(epsilon=1e-6))],
      first_map=[(Convolution, Flat(stabilizer=1e-6))])
  box = propagation.Composite(conv=propagation.Rule('gamma'),
                              first=propagation.Rule('zbox', low=low, high=high))
  zennit_composites[box] = SpecialFirstLayerMapComposite(
      base + [(Convolution, Gamma(gamma=0.25, stabilizer=1e-6)), (torch.nn.Linear, Epsilon(epsilon=1e-6))],
      first_map=[(Convolution, ZBox(*bounds, stabilizer=1e-6))])
  square = propagation.Composite(conv=propagation.Rule('zplus'), first=propagation.Rule('wsquare'))
  zennit_composites[square] = SpecialFirstLayerMapComposite(
      base + [(Convolution, ZPlus(stabilizer=1e-6)), (torch.nn.Linear, Epsilon(epsilon=1e-6))],
      first_map=[(Convolution, WSquare(stabilizer=1e-6))])
  for name, composite in zennit_composites.items():
    with Gradient(model=twin, composite=composite) as attributor:
      _, relevance = attributor(xt, lambda out: out * hot)  # the score as the output's relevance
    expected = _nhwc(relevance)
    ours = attribution.lrp(model, x, labels, composite=name)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max(),
                               err_msg=str(name))


def test_deeplift_equals_captum(x64):
  pytest.importorskip('torch', reason=TORCH_REASON)
  import torch
  from captum.attr import DeepLift
  twin, model = _twin_and_model()
  x, labels = _batch()
  base = np.random.default_rng(3).normal(size=x.shape)
  expected = _nhwc(DeepLift(twin).attribute(_nchw(x), baselines=_nchw(base), target=torch.from_numpy(labels)))
  ours = attribution.deeplift(model, x, labels, baseline=base)
  np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-10 * np.abs(expected).max())
  g = np.asarray(attribution.gradient(model, x, labels)) * (x - base)
  assert not np.allclose(ours, g, rtol=1e-2)


def test_deeplift_max_pool_rule_equals_captum_on_a_pooling_module(x64):
  """max_pool='rescale': Captum's DeepLift on a net whose max-pooling is an `nn.MaxPool2d` module (its rule
  for it), conv -> max-pool -> conv -> ReLU -> linear, and the same net in JAX with the package's
  max-pooling and with XLA's (flax's); the attributions then sum to the score difference, where the
  gradient rule's do not. (Captum 0.9 loses its rule when an `nn.ReLU` module feeds the pooling module:
  its result then equals the gradient rule's, so that order is not the anchor.)"""
  pytest.importorskip('torch', reason=TORCH_REASON)
  import flax.linen
  import torch
  from captum.attr import DeepLift

  from saliency_jax import layers
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(2, 2),
                            torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(5 * 6 * 6, 6)).double().eval()
  w1, b1 = net[0].weight.detach().numpy().transpose(2, 3, 1, 0), net[0].bias.detach().numpy()
  w2, b2 = net[2].weight.detach().numpy().transpose(2, 3, 1, 0), net[2].bias.detach().numpy()
  wd, bd = net[5].weight.detach().numpy(), net[5].bias.detach().numpy()

  def model(x, pool):
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding='SAME',
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    h = jax.nn.relu(conv(pool(conv(x, w1) + b1), w2) + b2)
    return h.transpose(0, 3, 1, 2).reshape(len(x), -1) @ wd.T + bd  # PyTorch's flattening order
  x, labels = _batch(size=12)
  base = np.random.default_rng(3).normal(size=x.shape)
  expected = _nhwc(DeepLift(net).attribute(_nchw(x), baselines=_nchw(base), target=torch.from_numpy(labels)))
  difference = np.asarray(model(x, layers.max_pool) - model(base, layers.max_pool))[np.arange(3), labels]
  np.testing.assert_allclose(expected.sum(axis=(1, 2, 3)), difference, rtol=1e-9)  # Captum's rule at work
  for pool in (layers.max_pool, functools.partial(flax.linen.max_pool, window_shape=(2, 2), strides=(2, 2))):
    fn = rules.as_model(lambda z, pool=pool: model(z, pool), x)
    ours = np.asarray(attribution.deeplift(fn, x, labels, baseline=base, max_pool='rescale'))
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-10 * np.abs(expected).max())
    gradient_rule = np.asarray(attribution.deeplift(fn, x, labels, baseline=base))
    assert np.abs(gradient_rule.sum(axis=(1, 2, 3)) - difference).max() > 1e-3 * np.abs(difference).max()
  with pytest.raises(ValueError, match='max_pool must be one of'):
    attribution.deeplift(fn, x, labels, max_pool='winner')


def test_lrp_merges_batchnorm_as_zennit_canonizers(x64):
  """merge_batchnorm=True: the BatchNorm after a convolution merged into it before its rule, as Zennit's
  `SequentialMergeBatchNorm` canonizer does, on conv -> BN -> ReLU twice, average, linear (EpsilonPlus).
  Zennit leaves each merged BatchNorm as x / sqrt(1 + eps) (its variance set to 1, its eps kept), a factor
  on the forward pass and the relevance: with eps = 1e-12 here it is 1 to float64 round-off."""
  _zennit()
  import torch
  from zennit.attribution import Gradient
  from zennit.canonizers import SequentialMergeBatchNorm
  from zennit.composites import LayerMapComposite
  from zennit.rules import Epsilon, Norm, Pass, ZPlus
  from zennit.types import Activation, AvgPool, Convolution
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4, eps=1e-12),
                            torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3, padding=1, bias=False),
                            torch.nn.BatchNorm2d(5, eps=1e-12),
                            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                            torch.nn.Linear(5, 6)).double().eval()
  with torch.no_grad():  # running statistics and affine parameters of both signs
    for bn in (net[1], net[4]):
      bn.running_mean.copy_(0.3 * torch.randn(bn.num_features))
      bn.running_var.copy_(0.5 + torch.rand(bn.num_features))
      bn.weight.copy_(torch.randn(bn.num_features))
      bn.bias.copy_(0.2 * torch.randn(bn.num_features))
  p = {k: v.detach().numpy() for k, v in net.state_dict().items()}

  def model(x):
    def bn(z, i):
      scale = p[f'{i}.weight'] * jax.lax.rsqrt(p[f'{i}.running_var'] + 1e-12)
      return (z - p[f'{i}.running_mean']) * scale + p[f'{i}.bias']
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding='SAME',
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    h = jax.nn.relu(bn(conv(x, p['0.weight'].transpose(2, 3, 1, 0)) + p['0.bias'], 1))
    h = jax.nn.relu(bn(conv(h, p['3.weight'].transpose(2, 3, 1, 0)), 4))
    return h.mean(axis=(1, 2)) @ p['8.weight'].T + p['8.bias']
  x, labels = _batch(size=10)
  xt = _nchw(x).requires_grad_(True)
  composite = LayerMapComposite([(Activation, Pass()), (AvgPool, Norm(stabilizer=1e-30)),
                                 (Convolution, ZPlus(stabilizer=1e-6)),
                                 (torch.nn.Linear, Epsilon(epsilon=1e-6))],
                                canonizers=[SequentialMergeBatchNorm()])
  hot = torch.nn.functional.one_hot(torch.from_numpy(labels), 6).double()
  with Gradient(model=net, composite=composite) as attributor:
    _, relevance = attributor(xt, lambda out: out * hot)
  expected = _nhwc(relevance)
  fn = rules.as_model(model, x)
  ours = attribution.lrp(fn, x, labels, composite=propagation.Composite(conv=propagation.Rule('zplus'),
                                                                      merge_batchnorm=True))
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
  found = propagation.plan(propagation.flat_program(fn, x)[0].jaxpr)
  assert [len(chain) for chain in found.affine.values()] == [3, 3]  # subtract, multiply, add: each BatchNorm
  unmerged = attribution.lrp(fn, x, labels, composite='epsilon_plus')  # the BatchNorm by its gradient
  assert not np.allclose(unmerged, expected, rtol=1e-2)
