"""Any JAX model: a Flax linen net, a plain function, an NNX module without `relu=`; ReLU rules applied
by transforming the program equal the rules injected through `relu=` on every network of the package."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_DATA, shared_data
from flax import nnx

from saliency_jax import attribution, class_models, deconvnet, faithfulness, models, rules, saliency, weights

pytestmark = pytest.mark.xdist_group('test_any_model')
RULES = (jax.nn.relu, deconvnet.deconvnet_relu, deconvnet.guided_relu)


class LinenCNN(nn.Module):
  """A researcher's own net: convolutions, ReLU, max-pooling, dense layers; `act` is the activation."""
  act: object = nn.relu

  def setup(self):
    self.conv1, self.conv2 = nn.Conv(8, (3, 3)), nn.Conv(16, (3, 3))
    self.dense1, self.dense2 = nn.Dense(32), nn.Dense(5)

  def features(self, x):
    x = nn.max_pool(self.act(self.conv1(x)), (2, 2), (2, 2))
    return self.act(self.conv2(x))

  def head(self, a):
    a = nn.max_pool(a, (2, 2), (2, 2)).reshape(a.shape[0], -1)
    return self.dense2(self.act(self.dense1(a)))

  def __call__(self, x):
    return self.head(self.features(x))


@pytest.fixture(scope='module')
def linen():
  x = jax.random.normal(jax.random.key(0), (6, 16, 16, 3))
  net = LinenCNN()
  params = net.init(jax.random.key(1), x)
  return net, params, x, jnp.array([0, 1, 2, 3, 4, 0])


def _grads_with_activation(act, params, x, labels):
  """The reference: the same network built with the rule as its activation, differentiated by JAX."""
  net = LinenCNN(act=act)
  return jax.grad(lambda z: jnp.take_along_axis(net.apply(params, z), labels[:, None], 1).sum())(x)


def test_a_linen_net_as_a_lambda_gets_every_rule(linen):
  net, params, x, labels = linen
  f = lambda z: net.apply(params, z)  # noqa: E731
  assert rules.count(f, x) == {'relu': 3, 'relu6': 0, 'other': []}
  for relu in RULES:
    ours = saliency.input_gradients(f, x, labels, relu=relu, chunk_size=4)
    np.testing.assert_array_equal(ours, _grads_with_activation(relu, params, x, labels))
  np.testing.assert_array_equal(saliency.saliency_maps(f, x, labels),
                                np.abs(_grads_with_activation(jax.nn.relu, params, x, labels)).max(-1))
  np.testing.assert_array_equal(attribution.guided_backprop(f, x, labels),
                                _grads_with_activation(deconvnet.guided_relu, params, x, labels))
  np.testing.assert_array_equal(attribution.deconvnet_attribution(f, x, labels),
                                _grads_with_activation(deconvnet.deconvnet_relu, params, x, labels))
  ig = attribution.integrated_gradients(f, x, labels, steps=16, rule='gauss_legendre')
  scores = np.asarray(f(x))[np.arange(6), labels] - np.asarray(f(jnp.zeros_like(x)))[np.arange(6), labels]
  np.testing.assert_allclose(np.asarray(ig).sum(axis=(1, 2, 3)), scores, rtol=0.05, atol=0.02)  # completeness
  for method in attribution.INPUT_SPACE + ('occlusion',):
    a = attribution.attribute(method, f, x, labels)
    assert np.isfinite(np.asarray(a)).all(), method
  classes, _, maps = saliency.top_k_saliency(f, x, k=2, relu=deconvnet.guided_relu)
  assert maps.shape == (6, 2, 16, 16) and (np.asarray(classes) < 5).all()
  one = _grads_with_activation(deconvnet.guided_relu, params, x, jnp.asarray(classes)[:, 1])
  np.testing.assert_allclose(np.asarray(maps)[:, 1], np.abs(one).max(-1), rtol=1e-5, atol=1e-7)


def test_weights_are_arguments_not_constants(linen):
  """A closure's weights are found in its program and passed to the jitted function as arguments (XLA
  never constant-folds them); a partial of `apply` and an NNX module carry theirs as pytree leaves."""
  net, params, x, labels = linen
  f = lambda z: net.apply(params, z)  # noqa: E731
  model = rules.as_model(f, x)
  assert len(model.hoisted) == len(jax.tree.leaves(params))
  hlo = jax.jit(lambda m, z: m(z, relu=deconvnet.deconvnet_relu)).lower(model, x[:2]).as_text()
  assert 'constant(' not in hlo or all(len(line) < 300 for line in hlo.splitlines() if 'constant(' in line)
  partial = rules.as_model(functools.partial(net.apply, params), x)
  assert len(jax.tree.leaves(partial)) == len(jax.tree.leaves(params))  # the weights, found by identity
  for relu in RULES:
    np.testing.assert_array_equal(saliency.input_gradients(functools.partial(net.apply, params), x, labels,
                                                           relu=relu),
                                  _grads_with_activation(relu, params, x, labels))


class NNXNet(nnx.Module):
  """An NNX module whose __call__ takes no relu."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 6, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(6, 4, rngs=rngs)

  def __call__(self, x):
    return self.dense(jnp.maximum(self.conv(x), 0.0).mean(axis=(1, 2)))


def test_an_nnx_module_without_relu_and_the_rules_found_in_nested_programs():
  model = NNXNet(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (3, 8, 8, 3))
  labels = jnp.array([0, 1, 3])
  def by_rule(z, relu):
    return jnp.take_along_axis(model.dense(relu(model.conv(z)).mean(axis=(1, 2))), labels[:, None], 1).sum()

  for relu in RULES:
    want = jax.grad(by_rule)(x, relu)
    np.testing.assert_array_equal(saliency.input_gradients(model, x, labels, relu=relu), want)

  w = jax.random.normal(jax.random.key(3), (3, 4))

  def nested(z):  # ReLUs inside jit, remat, scan and cond, and relu6
    h = z.mean(axis=(1, 2)) @ w
    h = jax.jit(jax.nn.relu)(h)
    h = jax.checkpoint(lambda u: jnp.maximum(0.0, u - 0.1))(h)
    h, _ = jax.lax.scan(lambda c, _: (jax.nn.relu(c * 1.5 - 0.2), None), h, None, length=2)
    h = jax.lax.cond(True, lambda u: jax.nn.relu6(u * 3.0), lambda u: u, h)
    return h

  def by_hand(z, relu):
    h = relu(z.mean(axis=(1, 2)) @ w)
    h = relu(h - 0.1)
    for _ in range(2):
      h = relu(h * 1.5 - 0.2)
    return jnp.minimum(relu(h * 3.0), 6.0)

  assert rules.count(nested, x) == {'relu': 3, 'relu6': 1, 'other': []}  # a site in a loop counts once
  def score(z, relu):
    return jnp.take_along_axis(by_hand(z, relu), labels[:, None], 1).sum()

  for relu in RULES:
    ours = saliency.input_gradients(nested, x, labels, relu=relu)
    np.testing.assert_allclose(ours, jax.grad(score)(x, relu), rtol=1e-6, atol=1e-7)


def test_a_rule_on_a_network_without_relus_is_refused(linen):
  _, _, x, labels = linen
  net = LinenCNN(act=jnp.tanh)
  params = net.init(jax.random.key(1), x)
  f = lambda z: net.apply(params, z)  # noqa: E731
  with pytest.raises(ValueError, match='has no ReLUs.*nonlinearities: tanh'):
    saliency.input_gradients(f, x, labels, relu=deconvnet.deconvnet_relu)
  with pytest.raises(ValueError, match='has no ReLUs.*nonlinearities: tanh'):  # GELU's tanh form
    attribution.guided_backprop(lambda z: jax.nn.gelu(z).mean(axis=(1, 2)), x, labels % 3)
  assert np.isfinite(np.asarray(saliency.saliency_maps(f, x, labels))).all()  # the gradient needs no ReLU
  with pytest.raises(TypeError, match='must be callable'):
    saliency.saliency_maps(np.zeros(3), x, labels)


def test_layer_methods_on_a_foreign_model_take_the_split_the_user_names(linen):
  net, params, x, labels = linen
  f = lambda z: net.apply(params, z)  # noqa: E731
  features = lambda z: net.apply(params, z, method=LinenCNN.features)  # noqa: E731
  head = lambda a: net.apply(params, a, method=LinenCNN.head)  # noqa: E731
  g = np.asarray(attribution.grad_cam(f, x, labels, layer=(features, head), upsample=False))
  a = features(x)
  grads = jax.grad(lambda t: jnp.take_along_axis(head(t), labels[:, None], 1).sum())(a)
  want = np.maximum(np.einsum('bhwc,bc->bhw', a, np.asarray(grads).mean(axis=(1, 2))), 0)
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r'needs the layer it reads: layer=\(features, head\)'):
    attribution.grad_cam(f, x, labels)
  with pytest.raises(ValueError, match=r'CAM on a model without a layer graph .* layer=\(features, weights'):
    attribution.cam(f, x, labels)
  w = jax.random.normal(jax.random.key(4), (16, 5))
  c = np.asarray(attribution.cam(f, x, labels, layer=(features, w), upsample=False))
  want = np.einsum('bhwc,bc->bhw', a, np.asarray(w)[:, labels].T)
  np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-6)
  pair = (features, head)
  both = attribution.class_region_maps('grad_cam', f, x, np.stack([labels, labels], 1), layer=pair)
  np.testing.assert_allclose(np.asarray(both)[:, 1], attribution.grad_cam(f, x, labels, layer=pair),
                             rtol=1e-5, atol=1e-6)


def test_class_models_and_deletion_on_a_foreign_model(linen):
  net, params, x, labels = linen
  f = lambda z: net.apply(params, z)  # noqa: E731
  out = class_models.visualise(f, [1, 2], image_shape=(16, 16, 3), steps=5)
  assert np.asarray(out).shape == (2, 16, 16, 3)
  maps = saliency.saliency_maps(f, x, labels)
  curves = faithfulness.deletion_insertion(f, x, labels, maps, steps=4)
  assert np.isfinite(curves['deletion']).all() and np.isfinite(curves['insertion']).all()


def _package_models():
  return [
      ('small', models.SmallConvNet(5, stages=((4,), (6, 6), (8,)), rngs=nnx.Rngs(0)), 16),
      ('small_bn_hidden', models.SmallConvNet(5, stages=((4,), (6,)), batch_norm=True, hidden=(12,),
                                              rngs=nnx.Rngs(1)), 16),
      ('paper', models.PaperConvNet(7, input_size=48, rngs=nnx.Rngs(2)), 48),
      ('vgg16', models.VGG16(6, rngs=nnx.Rngs(3)), 32),
      ('resnet8', models.CifarResNet(8, 4, rngs=nnx.Rngs(4)), 16),
  ]


@pytest.mark.parametrize('name', [n for n, _, _ in _package_models()])
def test_transformed_rules_equal_injected_rules_on_every_package_model(name):
  """Main check: on each network of the package, a rule applied by transforming the traced program
  gives exactly (bit for bit) what the same rule injected through `relu=` gives."""
  model, size = next((m, s) for n, m, s in _package_models() if n == name)
  model.eval()
  x = jax.random.normal(jax.random.key(5), (3, size, size, 3))
  labels = jnp.array([0, 2, 3])
  plain = lambda z: model(z)  # noqa: E731
  for relu in RULES:
    injected = saliency.input_gradients(model, x, labels, relu=relu)
    transformed = saliency.input_gradients(plain, x, labels, relu=relu)
    np.testing.assert_array_equal(transformed, injected, err_msg=f'{name} {relu.__name__}')


def test_transformed_rules_equal_injected_rules_on_mobilenet():
  shared_data('imagenet-mobilenet', 'model.json')
  model = weights.load_tfjs_layers_model(SHARED_DATA / 'imagenet-mobilenet' / 'model.json')
  x = jax.random.uniform(jax.random.key(6), (2, 96, 96, 3), minval=-1, maxval=1)
  labels = jnp.array([3, 951])
  plain = lambda z: model(z)  # noqa: E731
  counted = rules.count(plain, x)
  assert counted['relu'] == 27 and counted['relu6'] == 0  # relu6 = a relu step and a clip step
  for relu in RULES:
    np.testing.assert_array_equal(saliency.input_gradients(plain, x, labels, relu=relu),
                                  saliency.input_gradients(model, x, labels, relu=relu))
