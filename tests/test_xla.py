"""xla.canonical_convolutions: the same values, every convolution in XLA:CPU's canonical layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, models, rules, xla

CASES = [  # lhs shape, kernel shape, dimension numbers, strides, padding, feature groups
    ((2, 9, 11, 6), (3, 3, 6, 8), ('NHWC', 'HWIO', 'NHWC'), (1, 1), 'SAME', 1),
    ((2, 6, 9, 11), (8, 6, 3, 3), ('NCHW', 'OIHW', 'NCHW'), (2, 1), 'VALID', 1),  # Equinox's, Haiku's NCHW
    ((2, 9, 11, 6), (3, 3, 2, 9), ('NHWC', 'HWIO', 'NHWC'), (2, 2), 'SAME', 3),
    ((2, 9, 11, 6), (9, 2, 3, 3), ('NHWC', 'OIHW', 'NCHW'), (1, 2), ((1, 0), (2, 1)), 3),
]


def _conv_specs(fn, *args):
  """The dimension numbers of every convolution in fn's program (nested calls included)."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive is jax.lax.conv_general_dilated_p:
        found.append(eqn.params['dimension_numbers'])
      for sub in rules.sub_jaxprs(eqn):
        walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


@pytest.mark.parametrize('case', CASES)
def test_canonical_convolutions_give_the_same_values_and_gradients(case):
  shape, kernel_shape, numbers, strides, padding, groups = case
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)

  def conv(x):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=(1, 2),
                                        dimension_numbers=numbers, feature_group_count=groups)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(conv(x) ** 2)))
  canonical_grad = jax.jit(xla.canonical_convolutions(jax.grad(lambda x: jnp.sum(conv(x) ** 2))))
  np.testing.assert_allclose(xla.canonical_convolutions(conv)(x), conv(x), rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(canonical_grad(x), grad(x), rtol=1e-6, atol=1e-4)
  # the backward pass's transposed convolution is not canonical until rewritten
  n = 2
  canonical = ((0, n + 1, 1, 2), (n + 1, n, 0, 1), (0, n + 1, 1, 2))
  before = _conv_specs(jax.grad(lambda x: jnp.sum(conv(x) ** 2)), x)
  after = _conv_specs(xla.canonical_convolutions(jax.grad(lambda x: jnp.sum(conv(x) ** 2))), x)
  assert len(before) == len(after) == 2
  assert any(tuple(map(tuple, s)) != canonical for s in before)
  assert all(tuple(map(tuple, s)) == canonical for s in after)


def test_a_nets_gradient_in_a_loop_is_unchanged_to_round_off():
  """Integrated Gradients with its path in chunks (a loop body) equals its one-batch program to round-off."""
  model = models.SmallConvNet(10, stages=((8,), (16,)), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  labels = jnp.array([1, 2])
  whole = attribution.integrated_gradients(model, x, labels, steps=8)
  looped = attribution.integrated_gradients(model, x, labels, steps=8, step_chunk=2)
  np.testing.assert_allclose(looped, whole, rtol=1e-5, atol=1e-6 * float(jnp.abs(whole).max()))


def test_the_backward_programs_take_the_options_named_by_use():
  """Under each name of `xla.BACKWARD_OPTIONS`, a backward kernel gives the bits of the same function jitted
  with those options; `use` restores the name in force after its block (an error too) and refuses an unknown
  one; the two sets agree to round-off."""
  net = models.SmallConvNet(10, stages=((16,), (32,)), rngs=nnx.Rngs(0))  # (8, 16) at 24 px: the same bits
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 32, 32, 3)).astype(np.float32))
  labels = jnp.asarray([1, 4, 7])
  alphas, weights = (jnp.asarray(a.reshape(2, 2)) for a in attribution.path_points(4, 'trapezoid'))
  args = (net, x, labels, jnp.zeros_like(x), alphas, weights)
  twins = {name: np.asarray(jax.jit(attribution.ig_kernel.__wrapped__,
                                    compiler_options={**xla.COMPILER_OPTIONS, **added})(*args))
           for name, added in xla.BACKWARD_OPTIONS.items()}
  if np.array_equal(*twins.values()):
    pytest.skip('the two sets of options give the same bits on this CPU: nothing tells them apart')
  np.testing.assert_allclose(*twins.values(), rtol=1e-4, atol=1e-6 * np.abs(twins['ynn_convolutions']).max())
  assert xla.backward_options() == xla.DEFAULT_BACKWARD_OPTIONS
  for name in xla.BACKWARD_OPTIONS:
    with xla.use(name):
      assert xla.backward_options() == name
      np.testing.assert_array_equal(attribution.ig_kernel(*args), twins[name])
      lowered = attribution.ig_kernel.lower(*args).compile()
      np.testing.assert_array_equal(lowered(*args), twins[name])
  np.testing.assert_array_equal(attribution.ig_kernel(*args), twins[xla.DEFAULT_BACKWARD_OPTIONS])
  with pytest.raises(RuntimeError), xla.use('ynn_convolutions'):
    raise RuntimeError('inside the block')
  assert xla.backward_options() == xla.DEFAULT_BACKWARD_OPTIONS
  with pytest.raises(ValueError, match="backward_options must be one of .*'ynn_convolutions'.*got 'fast'"):
    with xla.use('fast'):
      pass


def test_every_job_runs_under_its_configs_backward_options():
  """A job's `run` takes its config's `backward_options` however it is called (none named: those in use); an
  unknown name is one error; every job of `saliency_jax.jobs` is wrapped so."""
  import importlib
  import inspect
  import pkgutil

  import ml_collections

  from saliency_jax import jobs

  @xla.under_config
  def job(config, workdir):
    return xla.backward_options(), workdir

  named = ml_collections.ConfigDict({'backward_options': 'ynn_convolutions'})
  assert job(named, 'w') == ('ynn_convolutions', 'w')
  assert xla.backward_options() == xla.DEFAULT_BACKWARD_OPTIONS
  with xla.use('ynn_convolutions'):
    assert job(ml_collections.ConfigDict(), 'w')[0] == 'ynn_convolutions'
  default = ml_collections.ConfigDict({'backward_options': 'no_ynn_convolutions'})
  assert job(default, 'w')[0] == 'no_ynn_convolutions'
  with pytest.raises(ValueError, match="got 'fastest'"):
    job(ml_collections.ConfigDict({'backward_options': 'fastest'}), 'w')
  runs = 0
  for info in pkgutil.iter_modules(jobs.__path__):
    module = importlib.import_module(f'saliency_jax.jobs.{info.name}')
    if hasattr(module, 'run'):
      assert '@xla.under_config\ndef run(' in inspect.getsource(module), info.name
      runs += 1
  assert runs >= 13
