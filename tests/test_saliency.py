import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models, saliency


class LinearModel(nnx.Module):
  """S(x) = W^T vec(x) + b: its saliency for class c is |W[:, c]| reshaped, max over channels."""

  def __init__(self, shape, num_classes, *, rngs):
    self.num_classes, self.in_channels, self.input_size = num_classes, shape[-1], None
    self.dense = nnx.Linear(int(np.prod(shape)), num_classes, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    return self.dense(x.reshape(x.shape[0], -1))


class TemplateModel(nnx.Module):
  """S_c(x) = sum(x * T_c) on [h, w, C] crops: the gradient of every crop is T_c, position-dependent."""

  def __init__(self, templates):
    self.num_classes, self.in_channels, self.input_size = templates.shape[0], templates.shape[-1], None
    self.templates = nnx.Param(jnp.asarray(templates))

  def __call__(self, x, *, relu=jax.nn.relu):
    return jnp.einsum('bhwc,khwc->bk', x, self.templates[...])


def _images(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def test_linear_model_map_is_max_over_channels_of_abs_weights():
  shape = (6, 5, 3)
  model = LinearModel(shape, 4, rngs=nnx.Rngs(0))
  labels = np.array([2, 0, 3])
  maps = saliency.saliency_maps(model, _images((3, *shape)), labels)
  w = np.asarray(model.dense.kernel[...]).reshape(*shape, 4)
  for i, c in enumerate(labels):
    np.testing.assert_allclose(maps[i], np.abs(w[..., c]).max(axis=-1), rtol=1e-6)


def test_grey_image_map_is_abs_gradient():
  model = LinearModel((4, 4, 1), 2, rngs=nnx.Rngs(1))
  grads = saliency.input_gradients(model, _images((2, 4, 4, 1)), [1, 1])
  maps = saliency.saliency_maps(model, _images((2, 4, 4, 1)), [1, 1])
  np.testing.assert_allclose(maps, np.abs(grads[..., 0]))
  w = np.asarray(model.dense.kernel[...])
  np.testing.assert_allclose(grads[0, ..., 0], w[:, 1].reshape(4, 4), rtol=1e-6)


@pytest.mark.parametrize('make,shape', [
    (lambda: models.SmallConvNet(rngs=nnx.Rngs(0)), (5, 40, 40, 3)),
    (lambda: models.CifarResNet(20, rngs=nnx.Rngs(0)), (5, 32, 32, 3)),
    (lambda: models.PaperConvNet(7, input_size=64, rngs=nnx.Rngs(0)), (3, 64, 64, 3)),
])
def test_batched_gradients_equal_one_by_one(make, shape):
  model = make()
  x = _images(shape)
  labels = np.arange(shape[0]) % model.num_classes
  grads = saliency.input_gradients(model, x, labels)
  grad_one = jax.jit(jax.grad(lambda xi, m, c: m(xi[None])[0, c]))
  for i, c in enumerate(labels):
    one = grad_one(x[i], model, c)
    # float32 round-off at the scale of the map
    np.testing.assert_allclose(grads[i], one, rtol=1e-5, atol=1e-5 * float(jnp.abs(one).max()))


def test_gradient_matches_central_differences_along_random_directions():
  jax.config.update('jax_enable_x64', True)
  model = models.cast(models.SmallConvNet(stages=((8,), (16,)), rngs=nnx.Rngs(0)), jnp.float64)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3), jnp.float64)
  labels = np.array([3, 7])
  grads = saliency.input_gradients(model, x, labels)
  assert grads.dtype == jnp.float64
  for seed in range(3):
    v = jax.random.normal(jax.random.key(seed + 10), x.shape, jnp.float64)
    eps = 1e-6
    def s(t, v=v):
      return model(x + t * v)[jnp.arange(2), labels]
    fd = (s(eps) - s(-eps)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grads * v, axis=(1, 2, 3)), fd, rtol=1e-6)


def _expected_ten_crop(m, image_hw):
  """Independent loop: M at each corner / centre offset, mirrored M for the reflections, averaged."""
  (h, w), (ch, cw) = image_hw, m.shape
  offsets = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
  total, count = np.zeros((h, w)), np.zeros((h, w))
  for flipped in (False, True):
    for top, left in offsets:
      total[top:top + ch, left:left + cw] += m[:, ::-1] if flipped else m
      count[top:top + ch, left:left + cw] += 1
  return total / count


@pytest.mark.parametrize('image_hw,crop', [((12, 12), 8), ((13, 10), (9, 7)), ((8, 8), 8)])
def test_ten_crop_geometry_on_a_model_with_known_gradient(image_hw, crop):
  crop_hw = (crop, crop) if isinstance(crop, int) else crop
  templates = np.random.default_rng(0).normal(size=(3, *crop_hw, 2)).astype(np.float32)
  model = TemplateModel(templates)
  image = _images((*image_hw, 2))
  got = saliency.ten_crop_saliency(model, image, 1, crop_size=crop)
  m = np.abs(templates[1]).max(axis=-1)
  np.testing.assert_allclose(got, _expected_ten_crop(m, image_hw), rtol=1e-5)
  # the top-left pixel is covered by the top-left crop and its reflection only
  np.testing.assert_allclose(got[0, 0], (m[0, 0] + m[0, -1]) / 2, rtol=1e-5)


def test_ten_crops_are_corners_centre_and_reflections():
  image = jnp.arange(6 * 8).reshape(6, 8, 1).astype(jnp.float32)
  crops = saliency.ten_crops(image, (4, 4))
  np.testing.assert_array_equal(crops[0], image[:4, :4])
  np.testing.assert_array_equal(crops[1], image[:4, 4:])
  np.testing.assert_array_equal(crops[2], image[2:, :4])
  np.testing.assert_array_equal(crops[3], image[2:, 4:])
  np.testing.assert_array_equal(crops[4], image[1:5, 2:6])
  np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_top_k_classes_scores_and_maps_are_consistent():
  model = models.SmallConvNet(rngs=nnx.Rngs(0))
  x = _images((4, 32, 32, 3), seed=3)
  classes, scores, maps = saliency.top_k_saliency(model, x, k=3)
  full = np.asarray(saliency.scores(model, x))
  np.testing.assert_array_equal(classes, np.argsort(-full, axis=1)[:, :3])
  np.testing.assert_allclose(scores, np.take_along_axis(full, np.asarray(classes), 1), rtol=1e-5)
  for j in range(3):
    one = saliency.saliency_maps(model, x, classes[:, j])
    np.testing.assert_allclose(maps[:, j], one, rtol=1e-5, atol=1e-8)


def test_top_k_with_crops_matches_per_class_ten_crop_maps():
  model = models.SmallConvNet(rngs=nnx.Rngs(0))
  x = _images((3, 36, 36, 3), seed=4)
  classes, scores, maps = saliency.top_k_saliency(model, x, k=2, crop_size=28)
  crops = jax.vmap(saliency.ten_crops, in_axes=(0, None))(x, (28, 28))
  mean_scores = np.asarray(saliency.scores(model, crops.reshape(-1, 28, 28, 3))).reshape(3, 10, -1).mean(1)
  np.testing.assert_array_equal(classes, np.argsort(-mean_scores, axis=1)[:, :2])
  np.testing.assert_allclose(scores, np.sort(mean_scores, axis=1)[:, ::-1][:, :2], rtol=1e-5)
  for i in range(3):
    for j in range(2):
      one = saliency.ten_crop_saliency(model, x[i], int(classes[i, j]), crop_size=28)
      np.testing.assert_allclose(maps[i, j], one, rtol=1e-5, atol=1e-9)


def test_sequential_kernels_give_the_vmapped_maps():
  """sequential=True: a chunk's images, and their k backward passes, one after another inside the call
  (`saliency.each`); the same classes, scores and maps as vmapped, to float round-off, with a ReLU rule,
  on 10 crops and on whole images, in a padded last chunk."""
  from saliency_jax import deconvnet
  model = models.CifarResNet(8, rngs=nnx.Rngs(1))
  x = _images((5, 36, 36, 3), seed=6)
  for crop in (28, None):
    a = saliency.top_k_saliency(model, x, k=3, crop_size=crop, chunk_size=2, sequential=True)
    b = saliency.top_k_saliency(model, x, k=3, crop_size=crop, chunk_size=2)
    np.testing.assert_array_equal(a[0], b[0])
    for u, v in zip(a[1:], b[1:]):
      np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
  classes = np.array([[0, 3], [9, 1], [2, 2], [5, 4], [7, 8]])
  a = saliency.class_saliency(model, x, classes, crop_size=28, relu=deconvnet.guided_relu, chunk_size=3,
                              sequential=True)
  b = saliency.class_saliency(model, x, classes, crop_size=28, relu=deconvnet.guided_relu, chunk_size=3)
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
  assert float(np.max(a[1])) > 0


def test_chunked_equals_unchunked():
  model = models.CifarResNet(20, rngs=nnx.Rngs(0))
  x = _images((7, 32, 32, 3), seed=5)
  labels = np.arange(7) % 10
  np.testing.assert_allclose(saliency.input_gradients(model, x, labels, chunk_size=3),
                             saliency.input_gradients(model, x, labels), rtol=1e-5, atol=1e-8)
  a = saliency.top_k_saliency(model, x, k=2, crop_size=28, chunk_size=2)
  b = saliency.top_k_saliency(model, x, k=2, crop_size=28)
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-8)


def test_injected_relu_rule_is_used():
  @jax.custom_vjp
  def relu_passthrough(x):
    return jax.nn.relu(x)

  relu_passthrough.defvjp(lambda x: (jax.nn.relu(x), None), lambda _, g: (g,))
  model = models.SmallConvNet(rngs=nnx.Rngs(0))
  x = _images((2, 32, 32, 3))
  plain = saliency.input_gradients(model, x, [1, 2])
  np.testing.assert_array_equal(saliency.input_gradients(model, x, [1, 2], relu=jax.nn.relu), plain)
  assert not np.allclose(saliency.input_gradients(model, x, [1, 2], relu=relu_passthrough), plain)


MODEL = models.SmallConvNet(rngs=nnx.Rngs(0))
X = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize('call,match', [
    (lambda: saliency.saliency_maps(MODEL, X[0], [1]), 'rank 4'),
    (lambda: saliency.saliency_maps(MODEL, (X * 255).astype(np.uint8), [1, 2]), 'floating point'),
    (lambda: saliency.saliency_maps(MODEL, X[..., :2], [1, 2]), 'expects 3'),
    (lambda: saliency.saliency_maps(MODEL, np.where(X > 2, np.nan, X), [1, 2]), 'NaN'),
    (lambda: saliency.saliency_maps(MODEL, np.where(X > 2, np.inf, X), [1, 2]), 'infinite'),
    (lambda: saliency.saliency_maps(MODEL, X, [1, 10]), r'\[0, 10\)'),
    (lambda: saliency.saliency_maps(MODEL, X, [-1, 0]), r'\[0, 10\)'),
    (lambda: saliency.saliency_maps(MODEL, X, [1.0, 2.0]), 'integer'),
    (lambda: saliency.saliency_maps(MODEL, X, [1, 2, 3]), 'one per image'),
    (lambda: saliency.ten_crop_saliency(MODEL, X[0], 1, crop_size=17), 'does not fit'),
    (lambda: saliency.top_k_saliency(MODEL, X, k=11), 'k must'),
    (lambda: saliency.class_saliency(MODEL, X, [1, 2]), r'\[B, k\]'),
    (lambda: saliency.input_gradients(MODEL, X, [1, 2], chunk_size=0), 'chunk_size'),
    (lambda: saliency.saliency_maps(MODEL, X, [[1], [2]]), r'one class index per image.* got shape \(2, 1\)'),
    (lambda: saliency.top_k_saliency(MODEL, X, k=2.5), r'k must be an integer in \[1, 10\], got 2\.5'),
    (lambda: saliency.top_k_saliency(MODEL, X, k=True), 'k must be an integer'),
    (lambda: saliency.top_k_saliency(MODEL, X, k=2, crop_size=12.0), r'crop_size must be an int.* got 12\.0'),
    (lambda: saliency.class_saliency(MODEL, X, [[1], [2]], crop_size=(12, 12, 3)), 'crop_size must be'),
])
def test_bad_input_raises_clear_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_wrong_input_size_for_a_fixed_size_model_is_refused():
  model = models.PaperConvNet(5, input_size=64, rngs=nnx.Rngs(0))
  x = np.zeros((1, 72, 72, 3), np.float32)
  with pytest.raises(ValueError, match=r'built for \(64, 64\)'):
    saliency.saliency_maps(model, x, [0])
  with pytest.raises(ValueError, match=r'got \(60, 60\)'):
    saliency.top_k_saliency(model, x, k=2, crop_size=60)
  assert saliency.top_k_saliency(model, x, k=2, crop_size=64)[2].shape == (1, 2, 72, 72)


def test_training_mode_is_refused():
  model = models.SmallConvNet(batch_norm=True, dropout=0.5, rngs=nnx.Rngs(0))
  model.train()
  with pytest.raises(ValueError, match='model.eval'):
    saliency.saliency_maps(model, X, [1, 2])
  # a model found in inference mode once is refused again when put back in training mode, by either layer
  model.eval()
  saliency.saliency_maps(model, X, [1, 2])
  model.train()
  with pytest.raises(ValueError, match='model.eval'):
    saliency.saliency_maps(model, X, [1, 2])
  model.eval()
  model.dropout.deterministic = False
  with pytest.raises(ValueError, match='dropout is in training mode'):
    saliency.check_eval_mode(model)
