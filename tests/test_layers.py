import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.test_util import check_grads

from saliency_jax import graph, layers

CASES = [  # shape, window, strides, padding
    ((2, 8, 8, 3), 2, 2, 'VALID'),
    ((2, 9, 11, 3), 2, 2, 'SAME'),
    ((2, 9, 11, 3), 3, 2, 'SAME'),
    ((2, 9, 11, 3), 3, 2, 'VALID'),
    ((1, 7, 7, 2), 3, 1, ((1, 1), (1, 1))),
    ((1, 10, 6, 4), (3, 2), (2, 1), ((0, 2), (1, 0))),
]


def _tie_free(shape, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float32) / 10)


def _reference(x, window, strides, padding):
  window, strides = layers.pair(window), layers.pair(strides)
  pads = layers.pool_padding(x.shape[1:3], window, strides, padding)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


@pytest.mark.parametrize('shape,window,strides,padding', CASES)
def test_max_pool_matches_reduce_window_and_its_gradient(shape, window, strides, padding):
  x = _tie_free(shape)
  y = layers.max_pool(x, window, strides, padding)
  np.testing.assert_array_equal(y, _reference(x, window, strides, padding))
  g = jax.random.normal(jax.random.key(1), y.shape)
  grad = jax.grad(lambda x: jnp.sum(layers.max_pool(x, window, strides, padding) * g))(x)
  grad_ref = jax.grad(lambda x: jnp.sum(_reference(x, window, strides, padding) * g))(x)
  np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize('shape,window,strides,padding', CASES)
def test_switches_and_unpool_are_the_gradient(shape, window, strides, padding):
  x = _tie_free(shape, seed=3)
  y, switches = layers.max_pool_switches(x, window, strides, padding)
  np.testing.assert_array_equal(y, _reference(x, window, strides, padding))
  g = jax.random.normal(jax.random.key(2), y.shape)
  _, vjp = jax.vjp(lambda x: layers.max_pool(x, window, strides, padding), x)
  np.testing.assert_allclose(layers.unpool(g, switches, shape, window, strides, padding), vjp(g)[0],
                             rtol=0, atol=1e-6)


def test_switch_indexes_window_position_row_major():
  x = jnp.asarray([[1., 5., 2., 0.], [3., 4., 9., 8.]]).reshape(1, 2, 4, 1)
  y, switches = layers.max_pool_switches(x, 2, 2)
  np.testing.assert_array_equal(y[0, 0, :, 0], [5., 9.])
  np.testing.assert_array_equal(switches[0, 0, :, 0], [1, 2])  # (0, 1) and (1, 0) of each 2x2 window


def test_ties_route_to_first_maximum_only():
  x = jnp.ones((1, 2, 2, 1))
  grad = jax.grad(lambda x: layers.max_pool(x, 2, 2).sum())(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[1., 0.], [0., 0.]])


@pytest.mark.parametrize('padding', ['VALID', 'SAME'])
def test_max_pool_finite_differences_both_modes(padding):
  x = _tie_free((1, 7, 6, 2), seed=5)
  check_grads(lambda x: layers.max_pool(x, 3, 2, padding), (x,), order=1, modes=('fwd', 'rev'), eps=1e-2)


def test_max_pool_rejects_window_larger_than_input():
  with pytest.raises(ValueError, match='does not fit'):
    layers.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 1)


def test_max_pool_rejects_bad_padding():
  with pytest.raises(ValueError, match='padding'):
    layers.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, 'FULL')


@pytest.mark.parametrize('size,out', [((14, 14), 7), ((9, 13), 7), ((5, 3), (2, 2)), ((7, 7), 7)])
def test_adaptive_avg_pool_matches_pytorch_bins(size, out):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, *size, 3)).astype(np.float32)
  oh, ow = layers.pair(out)
  expected = np.zeros((2, oh, ow, 3), np.float32)
  for i in range(oh):  # PyTorch's rule: bin i spans [floor(i * H / n), ceil((i + 1) * H / n))
    for j in range(ow):
      r0, r1 = int(np.floor(i * size[0] / oh)), int(np.ceil((i + 1) * size[0] / oh))
      c0, c1 = int(np.floor(j * size[1] / ow)), int(np.ceil((j + 1) * size[1] / ow))
      expected[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  np.testing.assert_allclose(layers.adaptive_avg_pool(jnp.asarray(x), out), expected, rtol=1e-5, atol=1e-6)


STRIDED = [  # input shape, kernel size, out channels, strides, padding
    ((2, 16, 16, 3), (3, 3), 8, 2, 'SAME'),
    ((2, 15, 17, 3), (3, 3), 8, 2, 'SAME'),
    ((1, 15, 17, 5), (7, 7), 4, 2, 'VALID'),
    ((1, 12, 11, 2), (3, 2), 6, (2, 3), ((1, 0), (2, 1))),
    ((2, 9, 9, 4), (1, 1), 3, 2, 'VALID'),
]


@pytest.mark.parametrize('shape,kernel_size,out,strides,padding', STRIDED)
def test_strided_conv_is_nnx_conv_forward_and_its_derivatives(shape, kernel_size, out, strides, padding):
  conv = nnx.Conv(shape[-1], out, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0))
  assert graph.is_strided(conv)
  x = jax.random.normal(jax.random.key(2), shape)
  step = graph.Step('conv', 'conv', conv)
  np.testing.assert_array_equal(graph.apply(step, x, jax.nn.relu), conv(x))  # the forward pass, to the bit
  kernel = conv.kernel[...]
  reference = lambda x, k: lax.conv_general_dilated(  # noqa: E731
      x, k, layers.pair(strides), layers.pool_padding(shape[1:3], kernel_size, layers.pair(strides), padding),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(lambda x, k: layers.strided_conv(x, k, strides, padding), x, kernel)
  g = jax.random.normal(jax.random.key(3), y.shape)
  for got, want in zip(vjp(g), jax.vjp(reference, x, kernel)[1](g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # reverse mode in x alone (the saliency maps' case), and forward mode in both arguments
  (gx,) = jax.vjp(lambda x: layers.strided_conv(x, kernel, strides, padding), x)[1](g)
  np.testing.assert_allclose(gx, jax.vjp(lambda x: reference(x, kernel), x)[1](g)[0], rtol=1e-5, atol=1e-5)
  dx, dk = jax.random.normal(jax.random.key(4), shape), jax.random.normal(jax.random.key(5), kernel.shape)
  _, tangent = jax.jvp(lambda x, k: layers.strided_conv(x, k, strides, padding), (x, kernel), (dx, dk))
  np.testing.assert_allclose(tangent, jax.jvp(reference, (x, kernel), (dx, dk))[1], rtol=1e-5, atol=1e-5)
  check_grads(lambda x, k: layers.strided_conv(x, k, strides, padding), (x, kernel), order=1,
              modes=('fwd', 'rev'), eps=1e-2)


def test_is_strided_only_for_plain_strided_convolutions():
  rngs = nnx.Rngs(0)
  assert graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=2, rngs=rngs))
  assert not graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=1, rngs=rngs))
  assert not graph.is_strided(nnx.Conv(4, 4, (3, 3), strides=2, feature_group_count=2, rngs=rngs))
  assert not graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=2, kernel_dilation=2, rngs=rngs))
  assert not graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=2, padding='CIRCULAR', rngs=rngs))
  assert not graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=2, padding=1, rngs=rngs))
  assert not graph.is_strided(nnx.Conv(3, 4, (3, 3), strides=2, padding=(1, 1), rngs=rngs))


def test_graph_runs_strided_convs_by_strided_conv_on_cpu_only(monkeypatch):
  conv = nnx.Conv(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
  step = graph.Step('conv', 'conv', conv)
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))

  def backward_convolutions(backend):  # the input-dilated convolutions of the input gradient's program
    monkeypatch.setattr(jax, 'default_backend', lambda: backend)
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: graph.apply(step, x, jax.nn.relu).sum()))(x)
    return [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'conv_general_dilated'
            and tuple(e.params['lhs_dilation']) != (1, 1)]

  assert not backward_convolutions('cpu')
  assert backward_convolutions('gpu')  # elsewhere the convolution's own transpose
