"""Which clamps of a program are ReLUs of the network: normalisations' variance clamps and the relu6 inside
hard_swish / hard_sigmoid are not; `jnp.clip(x, 0)` is. Each net is checked against the same net written
with the rule as its activation, differentiated by JAX (a hand-written guided backprop / DeconvNet)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, deconvnet, rules, saliency

RULES = (deconvnet.guided_relu, deconvnet.deconvnet_relu)
X = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
LABELS = jnp.array([0, 2, 1])


class NormNet(nn.Module):
  """conv -> norm -> act -> conv -> act -> mean -> dense; `act` takes the rule in the reference."""
  norm: object
  act: object = nn.relu
  mutable_stats: bool = False

  @nn.compact
  def __call__(self, x):
    x = self.act(self.norm()(nn.Conv(6, (3, 3))(x)))
    x = self.act(nn.Conv(8, (3, 3))(x))
    return nn.Dense(4)(x.mean(axis=(1, 2)))


LINEN_NORMS = {
    'layer_norm': nn.LayerNorm,
    'layer_norm_two_pass': lambda: nn.LayerNorm(use_fast_variance=False),
    'group_norm': lambda: nn.GroupNorm(num_groups=3),
    'rms_norm': nn.RMSNorm,
    'batch_norm_inference': lambda: nn.BatchNorm(use_running_average=True),
    'batch_norm_batch_statistics': lambda: nn.BatchNorm(use_running_average=False),
}


def _linen(norm: str, act=nn.relu):
  net = NormNet(LINEN_NORMS[norm], act)
  variables = net.init(jax.random.key(1), X)
  if norm == 'batch_norm_batch_statistics':
    return lambda x: net.apply(variables, x, mutable=['batch_stats'])[0]
  return lambda x: net.apply(variables, x)


def _score_grad(f, labels=LABELS):
  return jax.grad(lambda z: jnp.take_along_axis(f(z), labels[:, None], 1).sum())(X)


@pytest.mark.parametrize('norm', sorted(LINEN_NORMS))
def test_linen_normalisations_are_not_rectifications(norm):
  """The variance clamp max(0, E[x^2] - E[x]^2) is not a ReLU: two ReLUs counted, and the transformed
  program's guided / DeconvNet gradient equals the same net with the rule as its activation."""
  f = _linen(norm)
  assert rules.count(f, X) == {'relu': 2, 'relu6': 0, 'other': []}
  for relu in RULES:
    want = _score_grad(_linen(norm, relu))
    np.testing.assert_allclose(_score_grad(rules.with_relu(f, relu)), want, rtol=1e-6, atol=1e-7,
                               err_msg=f'{norm} {relu.__name__}')


@pytest.mark.parametrize('norm', ['layer_norm', 'group_norm', 'rms_norm', 'batch_norm_inference'])
def test_guided_backprop_on_linen_nets_with_normalisation(norm):
  """Through the public API: guided backprop and the DeconvNet maps of a linen net with a normalisation
  layer equal the hand-written ones (before: the LayerNorm net's map was off by 1.06x its maximum)."""
  f = _linen(norm)
  np.testing.assert_allclose(attribution.guided_backprop(f, X, LABELS),
                             _score_grad(_linen(norm, deconvnet.guided_relu)), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(saliency.saliency_maps(f, X, LABELS, relu=deconvnet.deconvnet_relu),
                             np.abs(_score_grad(_linen(norm, deconvnet.deconvnet_relu))).max(-1),
                             rtol=1e-5, atol=1e-7)


class NNXNormNet(nnx.Module):
  def __init__(self, norm: str, rngs):
    self.conv1 = nnx.Conv(3, 6, (3, 3), rngs=rngs)
    self.norm = {'layer_norm': lambda: nnx.LayerNorm(6, rngs=rngs),
                 'group_norm': lambda: nnx.GroupNorm(6, num_groups=3, rngs=rngs),
                 'rms_norm': lambda: nnx.RMSNorm(6, rngs=rngs),
                 'batch_norm': lambda: nnx.BatchNorm(6, rngs=rngs)}[norm]()
    self.conv2 = nnx.Conv(6, 8, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(8, 4, rngs=rngs)

  def __call__(self, x, act=jax.nn.relu):
    x = act(self.conv2(act(self.norm(self.conv1(x)))))
    return self.dense(x.mean(axis=(1, 2)))


@pytest.mark.parametrize('norm', ['layer_norm', 'group_norm', 'rms_norm', 'batch_norm'])
def test_nnx_normalisations_are_not_rectifications(norm):
  model = NNXNormNet(norm, nnx.Rngs(0))
  model.eval()
  assert rules.count(lambda x: model(x), X)['relu'] == 2
  for relu in RULES:
    want = _score_grad(lambda z, relu=relu: model(z, act=relu))
    np.testing.assert_allclose(saliency.input_gradients(lambda z: model(z), X, LABELS, relu=relu), want,
                               rtol=1e-5, atol=1e-7)


def test_equinox_normalisations_are_not_rectifications():
  eqx = pytest.importorskip('equinox', reason='the test extra installs equinox')

  class Net(eqx.Module):
    conv1: eqx.nn.Conv2d
    norm: eqx.Module
    conv2: eqx.nn.Conv2d
    dense: eqx.nn.Linear

    def __init__(self, norm, key):
      k1, k2, k3 = jax.random.split(key, 3)
      self.conv1 = eqx.nn.Conv2d(3, 6, 3, padding=1, key=k1)
      self.conv2 = eqx.nn.Conv2d(6, 8, 3, padding=1, key=k2)
      self.norm = norm
      self.dense = eqx.nn.Linear(8, 4, key=k3)

    def one(self, x, act):  # x [H, W, C]: Equinox layers take channels first, one example
      h = self.conv1(x.transpose(2, 0, 1))
      h = jax.vmap(jax.vmap(self.norm, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(h) if isinstance(
          self.norm, eqx.nn.LayerNorm) else self.norm(h)
      h = act(self.conv2(act(h)))
      return self.dense(h.mean(axis=(1, 2)))

    def __call__(self, x, act=jax.nn.relu):
      return jax.vmap(lambda e: self.one(e, act))(x)

  for norm in (eqx.nn.LayerNorm(6), eqx.nn.GroupNorm(3, 6)):
    net = Net(norm, jax.random.key(2))
    assert rules.count(net, X)['relu'] == 2, type(norm).__name__
    for relu in RULES:
      want = _score_grad(lambda z, net=net, relu=relu: net(z, act=relu))
      got = saliency.input_gradients(net, X, LABELS, relu=relu)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('act', ['hard_swish', 'hard_sigmoid'])
def test_hard_swish_and_hard_sigmoid_are_not_rectifiers(act):
  """Their relu6(x + 3) is part of the nonlinearity: a net with them and no ReLU is refused by name; a net
  with them beside ReLUs gets the rule at the ReLUs only."""
  fn = getattr(jax.nn, act)
  only = _linen('layer_norm', fn)
  other = {'hard_swish': ['hard_sigmoid', 'hard_silu'], 'hard_sigmoid': ['hard_sigmoid']}[act]  # jit names
  assert rules.count(only, X) == {'relu': 0, 'relu6': 0, 'other': other}
  with pytest.raises(ValueError, match='has no ReLUs.*hard_sigmoid'):
    attribution.guided_backprop(only, X, LABELS)

  class Mixed(nn.Module):
    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
      x = fn(nn.Conv(6, (3, 3))(x))
      x = self.act(nn.Conv(8, (3, 3))(x))
      return nn.Dense(4)(x.mean(axis=(1, 2)))

  variables = Mixed().init(jax.random.key(3), X)
  mixed = lambda x: Mixed().apply(variables, x)  # noqa: E731
  assert rules.count(mixed, X)['relu'] == 1 and rules.count(mixed, X)['relu6'] == 0
  want = _score_grad(lambda z: Mixed(deconvnet.guided_relu).apply(variables, z))
  np.testing.assert_allclose(attribution.guided_backprop(mixed, X, LABELS), want, rtol=1e-6, atol=1e-7)


def test_clip_at_zero_is_a_rectification():
  """`jnp.clip(x, 0)` is a ReLU and `jnp.clip(x, 0, 6)` a relu6 (the rule, then the upper bound);
  `jnp.clip(x, None, 6)` rectifies nothing."""
  clip = _linen('layer_norm', lambda x: jnp.clip(x, 0))
  assert rules.count(clip, X)['relu'] == 2
  np.testing.assert_allclose(attribution.guided_backprop(clip, X, LABELS),
                             _score_grad(_linen('layer_norm', deconvnet.guided_relu)), rtol=1e-6, atol=1e-7)
  six = _linen('layer_norm', lambda x: jnp.clip(x * 4.0, 0, 6))
  assert rules.count(six, X)['relu'] == 2
  want = _score_grad(_linen('layer_norm', lambda x: jnp.minimum(deconvnet.deconvnet_relu(x * 4.0), 6.0)))
  np.testing.assert_allclose(attribution.deconvnet_attribution(six, X, LABELS), want, rtol=1e-6, atol=1e-7)
  assert rules.count(lambda x: jnp.clip(x, None, 6.0), X)['relu'] == 0


def test_gelu_and_layer_norm_net_is_refused():
  """A ViT / ConvNeXt-style net (GELU and LayerNorm) has no rectification: every rule but the gradient's is
  refused, naming its nonlinearities (before: the LayerNorm's clamp took the rule)."""
  f = _linen('layer_norm', nn.gelu)
  assert rules.count(f, X)['relu'] == 0
  with pytest.raises(ValueError, match='has no ReLUs.*nonlinearities: tanh'):
    attribution.guided_backprop(f, X, LABELS)
  with pytest.raises(ValueError, match='has no ReLUs'):
    deconvnet.rule_maps(f, X, LABELS)
  assert np.isfinite(np.asarray(saliency.saliency_maps(f, X, LABELS))).all()


def test_a_relu_before_a_normalisation_stays_a_rectification():
  """An activation that the next LayerNorm normalises reaches the square root only through the mean:
  it is still a ReLU (norm -> relu -> norm)."""
  class Net(nn.Module):
    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
      x = nn.LayerNorm()(self.act(nn.LayerNorm()(nn.Conv(6, (3, 3))(x))))
      return nn.Dense(4)(x.mean(axis=(1, 2)))

  variables = Net().init(jax.random.key(4), X)
  f = lambda x: Net().apply(variables, x)  # noqa: E731
  assert rules.count(f, X)['relu'] == 1
  np.testing.assert_allclose(attribution.guided_backprop(f, X, LABELS),
                             _score_grad(lambda z: Net(deconvnet.guided_relu).apply(variables, z)),
                             rtol=1e-6, atol=1e-7)


def test_haiku_net_with_layer_norm_takes_every_rule():
  hk = pytest.importorskip('haiku', reason='the test extra installs dm-haiku')

  def forward(x, act):
    x = act(hk.LayerNorm(-1, True, True)(hk.Conv2D(6, 3)(x)))
    x = act(hk.Conv2D(8, 3)(x))
    return hk.Linear(4)(x.mean(axis=(1, 2)))

  net = hk.without_apply_rng(hk.transform(forward))
  params = net.init(jax.random.key(5), X, jax.nn.relu)
  f = lambda x: net.apply(params, x, jax.nn.relu)  # noqa: E731
  assert rules.count(f, X) == {'relu': 2, 'relu6': 0, 'other': []}
  for relu in (jax.nn.relu, *RULES):
    want = _score_grad(lambda z, relu=relu: net.apply(params, z, relu))
    np.testing.assert_allclose(saliency.input_gradients(f, X, LABELS, relu=relu), want, rtol=1e-6, atol=1e-7)
