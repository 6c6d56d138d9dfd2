"""Blur IG and Guided IG against PAIR's `saliency` package (0.2.1), its numpy core calling the JAX model.

PAIR's core takes a model callback, so both sides run the same JAX net in float64: the callback returns
`saliency.input_gradients` of the class score, as this package's methods use it. PAIR's Guided IG calls
`np.quantile(..., interpolation=)`, which NumPy 2 renamed `method=`: the test maps the one onto the other.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, models, saliency

PAIR_REASON = "PAIR's saliency package (the test extra: saliency==0.2.1)"
STAGES = ((8,), (16,), (16,))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _pair_masks(method, model, x, labels, **settings):
  pair = pytest.importorskip('saliency.core', reason=PAIR_REASON)
  out = []
  for image, label in zip(x, labels):
    def call(batch, call_model_args=None, expected_keys=None, label=label):
      grads = saliency.input_gradients(model, jnp.asarray(batch), np.full(len(batch), label))
      return {pair.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}
    out.append(getattr(pair, method)().GetMask(image, call, **settings))
  return np.stack(out)


def _net():
  return models.cast(models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0)), jnp.float64)


def test_blur_ig_equals_pair_saliency(x64):
  model = _net()
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3))
  labels = np.array([1, 2])
  for sqrt in (False, True):
    want = _pair_masks('BlurIG', model, x, labels, max_sigma=5.0, steps=10, sqrt=sqrt)
    got = np.asarray(attribution.blur_ig(model, jnp.asarray(x), labels, max_sigma=5.0, steps=10, sqrt=sqrt,
                                         step_chunk=4))  # 10 steps: chunks of 4, the last padded
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
  # scipy's filter, as a matrix
  from scipy import ndimage
  v = np.random.default_rng(1).normal(size=(23, 3))
  np.testing.assert_allclose(attribution.gaussian_blur_matrix(23, 2.7) @ v,
                             ndimage.gaussian_filter(v, [2.7, 0], mode='constant'), atol=1e-12)


def test_guided_ig_equals_pair_saliency(x64, monkeypatch):
  pytest.importorskip('saliency.core', reason=PAIR_REASON)
  quantile = np.quantile

  def renamed(a, q, interpolation='linear', **kw):
    return quantile(a, q, method=interpolation, **kw)
  monkeypatch.setattr(np, 'quantile', renamed)
  model = _net()
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 3))
  labels = np.array([1, 2])
  for max_dist in (0.02, 0.1, 1.0):
    want = _pair_masks('GuidedIG', model, x, labels, x_steps=20, fraction=0.25, max_dist=max_dist)
    got = np.asarray(attribution.guided_ig(model, jnp.asarray(x), labels, steps=20, max_dist=max_dist))
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=str(max_dist))


def test_blur_ig_memory_does_not_grow_with_the_steps():
  """XLA's temporary buffers of Blur IG's kernel for 16 and 256 steps at the same step_chunk are equal."""
  model = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0))
  x, labels = jnp.zeros((2, 16, 16, 3)), jnp.array([1, 2])

  def temp_bytes(steps):
    mats = jnp.zeros((steps // 8, 8, 2, 16, 16))
    compiled = attribution.blur_ig_kernel.lower(model, x, labels, mats, mats, jnp.zeros((steps // 8, 8)),
                                                0.01).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  assert temp_bytes(16) == temp_bytes(256) > 0


def test_xrai_equals_pair_saliency_end_to_end(x64):
  """PAIR's XRAI computes its own Integrated Gradients (black and white baselines) and Felzenszwalb
  segments from the callback; this package's xrai must give its map (PAIR sums the gradients in
  float32: hence the tolerance)."""
  pair = pytest.importorskip('saliency.core', reason=PAIR_REASON)
  model = _net()
  x = np.random.default_rng(0).normal(size=(2, 48, 48, 3))
  labels = np.array([1, 2])
  got = np.asarray(attribution.xrai(model, jnp.asarray(x), labels, steps=8))
  for image, label, ours in zip(x, labels, got):
    def call(batch, call_model_args=None, expected_keys=None, label=label):
      grads = saliency.input_gradients(model, jnp.asarray(batch), np.full(len(batch), label))
      return {pair.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}
    want = pair.XRAI().GetMask(image, call, extra_parameters=pair.XRAIParameters(steps=8), batch_size=8)
    assert len(np.unique(want)) > 3  # several regions, ranked
    np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
  # given attributions and segments, and a partial area: PAIR's ranking of the same inputs
  attr = np.random.default_rng(2).normal(size=(1, 48, 48, 3))
  segs = attribution.xrai_segments(x[0])
  want = pair.XRAI().GetMask(x[0], None, base_attribution=attr[0], segments=list(segs),
                             extra_parameters=pair.XRAIParameters(area_threshold=0.4))
  got = attribution.xrai(model, jnp.asarray(x[:1]), labels[:1], attributions=attr, segments=[segs],
                         area_threshold=0.4)
  np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-9)
  with pytest.raises(ValueError, match='segments must be'):
    attribution.xrai(model, jnp.asarray(x[:1]), labels[:1], attributions=attr, segments=[segs[:, :10]])


def test_xrai_atoms_rebuild_the_regions():
  """Each pixel's atom holds exactly the regions that hold the pixel; atoms differ; the counts add up."""
  x = np.random.default_rng(3).normal(size=(40, 52, 3))
  segs = attribution.xrai_segments(x, size=None)
  atom, members, pixels = attribution.xrai_atoms(segs)
  np.testing.assert_array_equal(members[:, atom], segs.reshape(len(segs), -1))
  assert len(np.unique(members, axis=1).T) == members.shape[1] < atom.size  # distinct, fewer than pixels
  np.testing.assert_array_equal(pixels, np.bincount(atom))
  # padded for a batch: the padding holds nothing
  fewer = attribution.xrai_atoms(segs[:5])
  atoms, padded, counts = attribution.xrai_region_atoms([(atom, members, pixels), fewer])
  assert padded.shape[1] == len(segs) and not padded[1, 5:].any() and counts[1].sum() == atom.size


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_kth_smallest_equals_sorting(dtype):
  """The bisection over bit patterns lands on the value a sort gives, with ties, zeros and too few kept."""
  rng = np.random.default_rng(1)
  values = np.abs(rng.normal(size=500)).astype(dtype)
  values[:40] = 0.0
  values[40:80] = values[80]  # ties
  keep = rng.random(500) < 0.6
  with jax.enable_x64(dtype == np.float64):
    for k in (0, 1, 39, 40, 150, int(keep.sum()) - 1, int(keep.sum()), 499):
      want = np.sort(np.where(keep, values, np.inf))[k]
      got = attribution.kth_smallest(jnp.asarray(values), jnp.asarray(keep), k)
      assert got.dtype == dtype and got == want, (k, got, want)


def test_guided_ig_ends_in_float32_with_few_steps():
  """A float32 path whose last target rounded below 0 looped forever; it ends, and keeps completeness.

  Guided IG's attributions sum to about S(x) - S(baseline), as IG's do (coarsely at 3 steps).
  """
  model = models.SmallConvNet(10, stages=((16,), (32,), (64,), (128,)), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  labels = jnp.array([0, 3])
  got = attribution.guided_ig(model, x, labels, steps=3)
  scores = model(x) - model(jnp.zeros_like(x))
  delta = scores[jnp.arange(2), labels]
  assert got.shape == x.shape and bool(jnp.all(jnp.isfinite(got)))
  np.testing.assert_allclose(got.sum(axis=(1, 2, 3)), delta, rtol=0.5)


def test_guided_ig_memory_does_not_grow_with_the_steps():
  """XLA's temporary buffers of Guided IG's kernel for 16 and 256 steps are equal (a loop over the steps)."""
  model = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0))
  x, labels = jnp.zeros((2, 16, 16, 3)), jnp.array([1, 2])

  def temp_bytes(steps):
    compiled = attribution.guided_ig_kernel.lower(model, x, labels, x, steps=steps, fraction=0.25,
                                                  max_dist=0.02).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  assert temp_bytes(16) == temp_bytes(256) > 0
