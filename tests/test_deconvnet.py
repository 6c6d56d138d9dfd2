"""Gradient vs DeconvNet (paper Sect. 4): backward rules, the explicit DeconvNet, the unused-rule error.

Tolerances: float64 comparisons of the explicit (hand-written) reconstruction with autodiff VJPs
differ by summation order only, as do the maps against PyTorch (float64, same weights): tested at
a relative 1e-10.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import deconvnet, layers, models, saliency

RTOL = 1e-10
TORCH_REASON = "needs torch (the optional extra: pip install 'saliency-jax[torch]')"


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _small(seed=0, **kw):
  kw.setdefault('stages', ((4,), (6, 6), (8,)))
  return models.SmallConvNet(5, rngs=nnx.Rngs(seed), **kw)


def _models():
  """(name, model, image size, layers to start from): every supported architecture, small."""
  return [
      ('small', _small(), 16, ('relu1', 'pool1', 'conv3', 'mean', 'scores')),
      ('small_bn_hidden', _small(1, batch_norm=True, hidden=(12,)), 16,
       ('bn2', 'hidden1_relu', 'scores')),
      ('paper', models.PaperConvNet(7, input_size=48, rngs=nnx.Rngs(2)), 48,
       ('relu2', 'pool5', 'relu6', 'scores')),
      ('vgg16', models.VGG16(6, rngs=nnx.Rngs(3)), 32, ('features.9', 'avgpool', 'classifier.4', 'scores')),
      ('resnet8', models.CifarResNet(8, 4, rngs=nnx.Rngs(4)), 16,
       ('relu1', 'layer2.0', 'layer3.0', 'scores')),
  ]


def _rule(backward):
  """A ReLU whose backward pass is backward(x, g): a deliberately wrong rule for the negative tests."""
  relu = jax.custom_vjp(lambda x: jnp.maximum(x, 0))
  relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (backward(x, g),))
  return relu


# Wrong gradient rules: gating by x >= 0 (differs only at x = 0), passing the signal unchanged.
GATES_AT_ZERO = _rule(lambda x, g: jnp.where(x >= 0, g, 0))
PASSES_SIGNAL = _rule(lambda x, g: g)


def _randomise_bn(model, seed):
  """Non-trivial BatchNorm statistics and affine parameters (fresh ones are the identity)."""
  rng = np.random.default_rng(seed)
  for _, m in nnx.iter_modules(model):
    if isinstance(m, nnx.BatchNorm):
      c = m.mean.shape[0]
      m.mean[...] = jnp.asarray(rng.normal(0, 0.3, c), m.mean.dtype)
      m.var[...] = jnp.asarray(rng.uniform(0.5, 2, c), m.var.dtype)
      m.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), m.scale.dtype)
      m.bias[...] = jnp.asarray(rng.normal(0, 0.3, c), m.bias.dtype)
  return model


# ----------------------------------------------------------------------------- rules


def test_rules_forward_is_relu_and_backward_gates_known_answer():
  x = jnp.array([-1.0, 2.0, -3.0, 4.0, 0.0])
  g = jnp.array([1.0, -1.0, -1.0, 2.0, 3.0])
  expected = {'gradient': [0, -1, 0, 2, 0], 'deconvnet': [1, 0, 0, 2, 3], 'guided': [0, 0, 0, 2, 0]}
  for name, rule in deconvnet.RULES.items():
    y, vjp = jax.vjp(rule, x)
    np.testing.assert_array_equal(y, jax.nn.relu(x))
    np.testing.assert_array_equal(vjp(g)[0], expected[name], err_msg=name)


def test_two_layer_net_known_answer():
  """f(x) = v . relu(W x): gradient W^T (v 1(Wx > 0)), DeconvNet W^T (v)+, guided W^T (v 1(Wx > 0))+."""
  rng = np.random.default_rng(0)
  w, v, x = rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=4)
  on = (w @ x > 0).astype(float)
  expected = {'gradient': w.T @ (v * on), 'deconvnet': w.T @ np.maximum(v, 0),
              'guided': w.T @ np.maximum(v * on, 0)}
  with jax.enable_x64(True):
    for name, rule in deconvnet.RULES.items():
      got = jax.grad(lambda x, rule=rule: jnp.dot(v, rule(jnp.asarray(w) @ x)))(jnp.asarray(x))
      np.testing.assert_allclose(got, expected[name], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize('name,model,size,starts', _models(), ids=[m[0] for m in _models()])
def test_gradient_rule_reproduces_jax_grad_exactly(name, model, size, starts):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  labels = jnp.array([1, 3])
  grad = jax.vmap(lambda xi, c: jax.grad(lambda z: model(z[None])[0, c])(xi))(x, labels)
  rule = saliency.input_gradients(model, x, labels, relu=deconvnet.gradient_relu)
  np.testing.assert_allclose(rule, grad, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(grad))))
  # Batched, as saliency computes it: the same program with another ReLU rule, bit for bit.
  plain = saliency.input_gradients(model, x, labels)
  np.testing.assert_array_equal(rule, plain)


# ----------------------------------------------------------------------------- the explicit DeconvNet


@pytest.mark.parametrize('name,model,size,starts', _models(), ids=[m[0] for m in _models()])
def test_explicit_deconvnet_equals_vjp_with_deconvnet_relu(x64, name, model, size, starts):
  model = models.cast(_randomise_bn(model, 0), jnp.float64)
  x = jax.random.normal(jax.random.key(1), (2, size, size, 3), jnp.float64)
  np.testing.assert_allclose(deconvnet.forward(model, x), model(x), rtol=1e-12, atol=1e-12)
  for layer in starts:
    out = deconvnet.forward(model, x, layer=layer)
    neurons = jnp.argmax(out.reshape(2, -1), axis=1)  # active units (a dead one reconstructs 0)
    for rule_name in ('deconvnet', 'gradient', 'guided') if layer == 'scores' else ('deconvnet',):
      relu = deconvnet.RULES[rule_name]
      explicit = deconvnet.reconstruct(model, x, layer=layer, neurons=neurons, rule=rule_name)
      vjp = deconvnet.vjp_reconstruction(model, x, layer=layer, neurons=neurons, relu=relu)
      assert float(jnp.max(jnp.abs(vjp))) > 0, (layer, rule_name)
      assert _rel(explicit, vjp) < RTOL, (layer, rule_name, _rel(explicit, vjp))


def test_gradient_and_deconvnet_differ_only_at_gate_disagreements(x64):
  model = models.cast(_randomise_bn(_small(5, batch_norm=True, hidden=(12,)), 1), jnp.float64)
  x = jax.random.normal(jax.random.key(2), (3, 16, 16, 3), jnp.float64)
  result = deconvnet.compare(model, x, neurons=jnp.array([0, 2, 4]))
  assert result['deconvnet_explicit_vs_vjp']['relative'] < RTOL
  assert result['gradient_explicit_vs_grad']['relative'] < RTOL
  assert result['grad_vs_gradient_relu']['max_abs'] == 0.0
  assert result['gradient_vs_deconvnet']['relative'] > 0.1  # the two really differ
  assert set(result['relus']) == {'relu1', 'relu2', 'relu3', 'relu4', 'hidden1_relu'}
  for name, r in result['relus'].items():
    assert r['same_set'], name
    assert r['differ'] == r['disagree']
  assert sum(r['disagree'] for r in result['relus'].values()) > 0
  kinds = {r['kind'] for r in result['steps'].values()}
  assert kinds == {'conv', 'batch_norm', 'max_pool', 'mean', 'dense', 'dropout'}
  for name, r in result['steps'].items():
    assert r['max_abs_diff'] <= 1e-12 * max(r['max_abs'], 1.0), name
  # The ReLU counts are measured on the rules: a gradient rule that passes the signal unchanged
  # differs from the DeconvNet's only where g < 0, which is not where the gates disagree.
  wrong = deconvnet.compare(model, x, neurons=jnp.array([0, 2, 4]),
                            rules={'gradient': PASSES_SIGNAL, 'deconvnet': deconvnet.deconvnet_relu})
  assert not all(r['same_set'] for r in wrong['relus'].values())
  assert wrong['grad_vs_gradient_relu']['max_abs'] > 0
  assert wrong['deconvnet_explicit_vs_vjp'] == result['deconvnet_explicit_vs_vjp']


def test_deconvnet_ignores_the_image_without_max_pooling():
  """The DeconvNet's only link to the input is the switches: a ResNet's reconstruction is image-free."""
  x = jax.random.normal(jax.random.key(6), (3, 16, 16, 3))
  resnet = _randomise_bn(models.CifarResNet(8, 4, rngs=nnx.Rngs(0)), 2)
  r = deconvnet.reconstruct(resnet, x, neurons=1)
  np.testing.assert_allclose(r[1:], jnp.broadcast_to(r[:1], r[1:].shape), rtol=1e-6, atol=1e-7)
  grad = deconvnet.reconstruct(resnet, x, neurons=1, rule='gradient')
  assert _rel(grad[1], grad[0]) > 0.1  # the gradient does depend on the image
  small = deconvnet.reconstruct(_small(), x, neurons=1)
  assert _rel(small[1], small[0]) > 0.1  # with max-pooling, the switches carry the image


def test_gate_statistics_known_answer_and_wrong_rules_fail():
  x = jnp.array([-1.0, 2.0, -3.0, 4.0, 0.0, 1.0])
  g = jnp.array([1.0, -1.0, -1.0, 2.0, 3.0, 0.0])
  stats = deconvnet.gate_statistics(x, g)
  # Disagreements: x<=0 & g>0 (units 0, 4), x>0 & g<0 (unit 1); unit 5 has no signal.
  assert stats == {'units': 6, 'signal_nonzero': 5, 'disagree': 3, 'differ': 3, 'same_set': True}
  deconv = deconvnet.deconvnet_relu
  # Gating by x >= 0 passes g at unit 4 (x = 0), as the DeconvNet does: they differ at units 0, 1 only.
  wrong = deconvnet.gate_statistics(x, g, rules={'gradient': GATES_AT_ZERO, 'deconvnet': deconv})
  assert (wrong['differ'], wrong['same_set']) == (2, False)
  # Passing g unchanged differs from the DeconvNet where g < 0: units 1, 2.
  wrong = deconvnet.gate_statistics(x, g, rules={'gradient': PASSES_SIGNAL, 'deconvnet': deconv})
  assert (wrong['differ'], wrong['same_set']) == (2, False)
  # A DeconvNet rule that gates by the forward input is the gradient rule: the rules never differ.
  wrong = deconvnet.gate_statistics(x, g, rules={'gradient': deconvnet.gradient_relu,
                                                 'deconvnet': deconvnet.gradient_relu})
  assert (wrong['differ'], wrong['same_set']) == (0, False)
  with pytest.raises(ValueError, match='missing'):
    deconvnet.gate_statistics(x, g, rules={'gradient': deconvnet.gradient_relu})
  with pytest.raises(ValueError, match='same shape'):
    deconvnet.gate_statistics(x, g[:5])


def test_transposed_conv_matches_autodiff_for_strides_and_paddings(x64):
  rngs = nnx.Rngs(0)
  for kernel, stride, padding, size in [(3, 1, 'SAME', 9), (7, 2, 'SAME', 15), (5, 2, 'SAME', 16),
                                        (3, 2, ((1, 1), (1, 1)), 9), (3, 3, 'VALID', 10)]:
    conv = nnx.Conv(3, 4, (kernel, kernel), strides=stride, padding=padding, rngs=rngs)
    conv = models.cast(conv, jnp.float64)
    x = jax.random.normal(jax.random.key(kernel + stride), (2, size, size, 3), jnp.float64)
    y, vjp = jax.vjp(conv, x)
    g = jax.random.normal(jax.random.key(7), y.shape, jnp.float64)
    got = deconvnet.transposed_conv(conv, g, x.shape[1:3])
    assert got.shape == x.shape
    assert _rel(got, vjp(g)[0]) < RTOL, (kernel, stride, padding)


def test_unpooling_equals_reduce_window_gradient_on_tie_free_inputs(x64):
  x = jax.random.normal(jax.random.key(3), (2, 13, 13, 4), jnp.float64)
  for window, strides, padding in [(2, 2, 'VALID'), (3, 2, 'SAME'), (2, 2, 'SAME')]:
    pads = layers.pool_padding(x.shape[1:3], (window, window), (strides, strides), padding)
    ref = functools.partial(jax.lax.reduce_window, init_value=-jnp.inf, computation=jax.lax.max,
                            window_dimensions=(1, window, window, 1), window_strides=(1, strides, strides, 1),
                            padding=((0, 0), *pads, (0, 0)))
    y, vjp = jax.vjp(lambda h, ref=ref: ref(h), x)
    g = jax.random.normal(jax.random.key(4), y.shape, jnp.float64)
    y2, switches = layers.max_pool_switches(x, window, strides, padding)
    np.testing.assert_array_equal(y2, y)
    got = layers.unpool(g, switches, x.shape, window, strides, padding)
    np.testing.assert_allclose(got, vjp(g)[0], rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------- errors


class _HardWired(nnx.Module):
  """Calls jax.nn.relu itself: a backward rule passed as relu= would be ignored there."""

  def __init__(self, bypass: bool, *, rngs):
    self.num_classes, self.in_channels, self.input_size = 3, 3, None
    self.bypass = bypass
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    h = jax.nn.relu(self.conv(x)) if self.bypass else relu(self.conv(x))
    return self.dense(jax.nn.relu(jnp.mean(h, axis=(1, 2))))


class _Linear(nnx.Module):

  def __init__(self, *, rngs):
    self.num_classes, self.in_channels, self.input_size = 3, 3, None
    self.dense = nnx.Linear(3, 3, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    return self.dense(jnp.mean(x, axis=(1, 2)))


def test_rule_never_called_is_an_error():
  x = jnp.ones((2, 8, 8, 3))
  model = _Linear(rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='never calls its relu'):
    saliency.input_gradients(model, x, [0, 1], relu=deconvnet.deconvnet_relu)
  with pytest.raises(ValueError, match='never calls its relu'):
    saliency.top_k_saliency(model, x, k=2, relu=deconvnet.guided_relu)
  assert saliency.input_gradients(model, x, [0, 1]).shape == x.shape  # plain gradient: fine


def test_rule_bypassed_by_hard_wired_relu_is_an_error():
  x = jnp.ones((2, 8, 8, 3))
  for bypass, message in ((True, 'never calls its relu argument .2 rectifications are hard-wired'),
                          (False, '1 rectification.s. of _HardWired bypass it')):
    model = _HardWired(bypass, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
      saliency.saliency_maps(model, x, [0, 1], relu=deconvnet.deconvnet_relu)
  # Every ReLU of the library's models goes through the rule: no error.
  saliency.saliency_maps(_small(), jnp.ones((1, 16, 16, 3)), [0], relu=deconvnet.deconvnet_relu)


def test_bad_arguments_are_clear_errors():
  model, x = _small(), jnp.ones((2, 16, 16, 3))
  with pytest.raises(ValueError, match='unknown layer'):
    deconvnet.reconstruct(model, x, layer='conv9', neurons=0)
  with pytest.raises(ValueError, match='neurons must lie in'):
    deconvnet.reconstruct(model, x, layer='scores', neurons=5)
  with pytest.raises(ValueError, match='exactly one of'):
    deconvnet.reconstruct(model, x)
  with pytest.raises(ValueError, match='signal has shape'):
    deconvnet.reconstruct(model, x, layer='scores', signal=jnp.ones((2, 4)))
  with pytest.raises(ValueError, match='rule must be one of'):
    deconvnet.reconstruct(model, x, neurons=0, rule='zeiler')
  with pytest.raises(TypeError, match='_Linear declares no layer graph'):
    deconvnet.reconstruct(_Linear(rngs=nnx.Rngs(0)), x, neurons=0)


def test_signal_argument_is_linear():
  model, x = _small(), jax.random.normal(jax.random.key(5), (2, 16, 16, 3))
  a = deconvnet.reconstruct(model, x, neurons=jnp.array([1, 1]), rule='gradient')
  b = deconvnet.reconstruct(model, x, neurons=jnp.array([2, 2]), rule='gradient')
  signal = jnp.zeros((2, 5)).at[:, 1].set(2.0).at[:, 2].set(-1.0)
  both = deconvnet.reconstruct(model, x, signal=signal, rule='gradient')
  np.testing.assert_allclose(both, 2 * a - b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PyTorch reference


def _torch_maps(twin, x, labels, rule):
  import torch

  from saliency_jax import torch_reference
  xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  scores = twin(xt, relu=torch_reference.RELUS[rule])
  (grad,) = torch.autograd.grad(scores.gather(1, torch.as_tensor(labels)[:, None]).sum(), xt)
  return grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize('arch', ['small_convnet', 'cifar_resnet20'])
def test_deconvnet_and_guided_maps_equal_pytorch_reference(x64, arch):
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  from saliency_jax import torch_reference, weights
  torch.manual_seed(0)
  if arch == 'small_convnet':
    stages = ((8,), (16,), (16,))
    twin = torch_reference.TorchSmallConvNet(6, stages)
    model = models.SmallConvNet(6, stages=stages, rngs=nnx.Rngs(0))
    state = {k: v.numpy() for k, v in twin.state_dict().items()}
    weights.assign(weights.small_convnet_entries(model), state, 'twin')
    size = 24
  else:
    twin = torch_reference.TorchCifarResNet(20, 10)
    for m in twin.modules():  # non-trivial BatchNorm statistics
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.3, 0.3)
        m.running_var.uniform_(0.5, 2)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.3, 0.3)
    state = {k: v.numpy() for k, v in twin.state_dict().items() if not k.endswith('num_batches_tracked')}
    model = weights.cifar_resnet_from_state_dict(state, 'twin')
    size = 32
  twin = twin.double().eval()
  model = models.cast(model, jnp.float64)
  x = np.random.default_rng(0).normal(size=(3, size, size, 3))
  labels = np.array([0, 3, 5])
  for rule in ('deconvnet', 'guided', 'gradient'):
    ref = _torch_maps(twin, x, labels, rule)
    got = saliency.input_gradients(model, jnp.asarray(x), labels, relu=deconvnet.RULES[rule])
    explicit = deconvnet.reconstruct(model, jnp.asarray(x), neurons=jnp.asarray(labels), rule=rule)
    assert np.max(np.abs(ref)) > 0
    assert _rel(got, ref) < RTOL, (rule, _rel(got, ref))
    assert _rel(explicit, ref) < RTOL, (rule, _rel(explicit, ref))
