"""Nothing silent: a model that gives NaN, a model that returns something else than scores [B, K], a split
that is not the model's, a model whose images interact, and small argument mistakes each get one error
naming the problem, never a map."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, deconvnet, faithfulness, localise, rules, saliency

X = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
LABELS = np.array([0, 1, 2])
W = jax.random.normal(jax.random.key(1), (3, 4))


def linear(x):
  return x.mean(axis=(1, 2)) @ W


def nan_model(x):
  """A linear model whose scores are NaN for the images that hold a pixel over 50 (`marked`; their
  gradients stay finite)."""
  return linear(x) + jnp.where(x.max(axis=(1, 2, 3)) > 50, jnp.nan, 0.0)[:, None]


def marked(rows):
  """X with the images `rows` marked for `nan_model` (a pixel of 100 at the centre)."""
  return X.at[np.asarray(rows), 4, 4, 0].set(100.0)


def nan_features(x):
  """The images as features, NaN for the images `nan_model` marks."""
  return x + jnp.where(x.max(axis=(1, 2, 3)) > 50, jnp.nan, 0.0)[:, None, None, None]


def nan_channel(x):
  """Finite scores, but a NaN gradient in channel 0 where a pixel is 0 (0 x d sqrt(x) / dx = 0 x inf): a max
  over channels could drop it (-inf or the other channels' maximum on XLA:CPU)."""
  return 0.0 * jnp.sqrt(x[..., :1]).mean(axis=(1, 2, 3))[:, None] + linear(x)


@pytest.mark.parametrize('method', ['saliency_maps', 'input_gradients', 'top_k', 'class_saliency', 'ten_crop',
                                    'integrated_gradients', 'smoothgrad', 'occlusion', 'grad_cam', 'cam',
                                    'guided_backprop', 'region_maps', 'gradient_and_grad_cam', 'scores',
                                    'deletion_insertion'])
def test_non_finite_scores_are_refused_by_every_method(method):
  """Before: NaN scores gave saliency maps of finite values or -inf, IG / occlusion / Grad-CAM NaN maps."""
  f, x = nan_model, marked([1])
  split = (lambda z: z, nan_model)
  region = attribution.class_region_maps
  calls = {
      'saliency_maps': lambda: saliency.saliency_maps(f, x, LABELS),
      'input_gradients': lambda: saliency.input_gradients(f, x, LABELS),
      'top_k': lambda: saliency.top_k_saliency(f, x, k=2),
      'class_saliency': lambda: saliency.class_saliency(f, x, LABELS[:, None], crop_size=6),
      'ten_crop': lambda: saliency.ten_crop_saliency_batch(f, x, LABELS, crop_size=6),
      'integrated_gradients': lambda: attribution.integrated_gradients(f, x, LABELS, steps=4),
      'smoothgrad': lambda: attribution.smoothgrad(f, x, LABELS, samples=2),
      'occlusion': lambda: attribution.occlusion(f, x, LABELS, patch=4, stride=4),
      'grad_cam': lambda: attribution.grad_cam(linear, x, LABELS, layer=split),
      'cam': lambda: attribution.cam(linear, x, LABELS, layer=(nan_features, W)),
      'guided_backprop': lambda: attribution.guided_backprop(lambda z: nan_model(jax.nn.relu(z)), x, LABELS),
      'region_maps': lambda: region('grad_cam', linear, x, LABELS[:, None], layer=split, crop_size=6),
      'gradient_and_grad_cam': lambda: attribution.gradient_and_grad_cam(linear, x, k=2, layer=split),
      'scores': lambda: saliency.scores(f, x),
      'deletion_insertion': lambda: faithfulness.deletion_insertion(f, x, LABELS, x[..., 0], steps=2),
  }
  with pytest.raises(ValueError, match=r'NaN or infinite for \d+ of 3 images'):
    calls[method]()


def test_the_images_with_non_finite_scores_are_named():
  with pytest.raises(ValueError, match=r'NaN or infinite for 2 of 3 images \(0, 2\)'):
    saliency.saliency_maps(nan_model, marked([0, 2]), LABELS, chunk_size=2)
  with pytest.raises(ValueError, match=r'1 of 3 images \(2\)'):
    saliency.top_k_saliency(nan_model, marked([2]), k=2, sequential=True)


def test_a_nan_gradient_in_one_channel_is_refused():
  """The map max_c |g_c| must not hide a NaN channel."""
  x = X.at[..., 0].set(jnp.abs(X[..., 0]) + 0.1).at[1, 2, 3, 0].set(0.0)
  assert np.isfinite(np.asarray(nan_channel(x))).all()
  with pytest.raises(ValueError, match=r'NaN or infinite for 1 of 3 images \(1\)'):
    saliency.saliency_maps(nan_channel, x, LABELS)
  with pytest.raises(ValueError, match=r'NaN or infinite for 1 of 3 images \(1\)'):
    saliency.top_k_saliency(nan_channel, x, k=2)


@pytest.mark.parametrize('returns, message', [
    (lambda s: s[:, 0], r'returned shape \(2,\)'),
    (lambda s: (s, s), 'returned a tuple of 2'),
    (lambda s: {'logits': s}, 'returned a dict of 1'),
    (lambda s: s.astype(jnp.int32), 'returned int32 scores'),
])
def test_a_model_that_does_not_return_float_scores_is_named(returns, message):
  """Before: '[B]' gave 'labels must lie in [0, 1)', a tuple "'tuple' object has no attribute 'shape'",
  integer scores all-zero maps."""
  def model(x):
    return returns(linear(x))
  with pytest.raises(ValueError, match='the model must return class scores .B, K.*' + message):
    saliency.saliency_maps(model, X, LABELS)
  with pytest.raises(ValueError, match=message):
    attribution.occlusion(model, X, LABELS)


def test_a_grad_cam_split_that_is_not_the_model_is_refused():
  features, head = (lambda x: x), linear
  np.testing.assert_allclose(attribution.grad_cam(linear, X, LABELS, layer=(features, head), upsample=False),
                             np.maximum(np.einsum('bhwc,bc->bhw', X, np.asarray(W)[:, LABELS].T) / 64, 0),
                             rtol=1e-5, atol=1e-6)
  negated = (features, lambda a: -head(a))
  with pytest.raises(ValueError, match=r'must split the model, head\(features\(x\)\) == model\(x\); on the'):
    attribution.grad_cam(linear, X, LABELS, layer=negated)
  with pytest.raises(ValueError, match='must split the model'):
    attribution.class_region_maps('grad_cam', linear, X, LABELS[:, None], layer=negated)
  with pytest.raises(ValueError, match='head\\(features\\(x\\)\\) gives \\(1, 3\\)'):
    attribution.grad_cam(linear, X, LABELS, layer=(features, lambda a: head(a)[:, :3]))


class BatchStatsNet(nn.Module):
  train: bool = True

  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=not self.train)(nn.Conv(4, (3, 3))(x))
    x = nn.Dropout(0.5, deterministic=not self.train)(nn.relu(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


def test_models_whose_images_interact_are_refused():
  """A linen BatchNorm on batch statistics, dropout with a key, and an NNX module in training mode
  wrapped in a function (before: batch-dependent maps, or flax's TraceContextError)."""
  net = BatchStatsNet()
  variables = net.init({'params': jax.random.key(2), 'dropout': jax.random.key(3)}, X)
  batch_stats = lambda x: net.apply(  # noqa: E731
      variables, x, mutable=['batch_stats'], rngs={'dropout': jax.random.key(4)})[0]
  dropout = lambda x: nn.Dropout(0.5, deterministic=False).apply(  # noqa: E731
      {}, linear(x), rngs={'dropout': jax.random.key(5)})
  for model in (batch_stats, dropout):
    with pytest.raises(ValueError, match='depend on the other images of its batch'):
      saliency.saliency_maps(model, X, LABELS)
    with pytest.raises(ValueError, match='depend on the other images of its batch'):
      saliency.top_k_saliency(model, X[:1], k=2)  # one image: checked beside a second made from it
  inference = lambda x: BatchStatsNet(train=False).apply(variables, x)  # noqa: E731
  assert np.isfinite(np.asarray(saliency.saliency_maps(inference, X, LABELS))).all()

  class NNXNet(nnx.Module):
    def __init__(self, rngs):
      self.conv, self.bn = nnx.Conv(3, 4, (3, 3), rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
      self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
      return self.dense(jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))

  module = NNXNet(nnx.Rngs(0))  # built in training mode
  with pytest.raises(ValueError, match=r'changes the state of an NNX module .* call module.eval\(\)'):
    saliency.saliency_maps(lambda x: module(x), X, LABELS)
  with pytest.raises(ValueError, match='is in training mode'):
    saliency.saliency_maps(module, X, LABELS)
  module.eval()
  assert np.isfinite(np.asarray(saliency.saliency_maps(lambda x: module(x), X, LABELS))).all()


def test_small_mistakes_name_the_argument():
  f = linear
  for chunk in (2.5, '2', 0, True):
    with pytest.raises(ValueError, match='chunk_size must be a positive integer'):
      saliency.saliency_maps(f, X, LABELS, chunk_size=chunk)
  with pytest.raises(ValueError, match='labels is None'):
    saliency.saliency_maps(f, X, None)
  with pytest.raises(ValueError, match=r'classes must be \[B, k\] class indices, k >= 1, got shape \(3, 0\)'):
    saliency.class_saliency(f, X, np.zeros((3, 0), int))
  with pytest.raises(ValueError, match=r"relu must be a ReLU backward rule.*deconvnet.RULES\['guided'\]"):
    saliency.saliency_maps(f, X, LABELS, relu='guided')
  with pytest.raises(ValueError, match='smoothgrad: key must be a JAX random key'):
    attribution.smoothgrad(f, X, LABELS, key=0)
  with pytest.raises(ValueError, match='integer samples >= 1'):
    attribution.smoothgrad(f, X, LABELS, samples=2.5)
  with pytest.raises(ValueError, match=r'weights \[C, K\] = \(3, 4\).*weights \(4, 3\)'):
    attribution.cam(f, X, LABELS, layer=(lambda x: x, W.T))
  with pytest.raises(ValueError, match='covariance_floor must be > 0, got -1'):
    localise.settings(covariance_floor=-1)
  with pytest.raises(ValueError, match='gmm_iters must be >= 1, got -1'):
    localise.settings(gmm_iters=-1)
  with pytest.raises(ValueError, match='num_components must be an integer'):
    localise.settings(num_components=2.5)


def test_a_rule_refusal_names_the_rule_the_user_passed():
  """Before: 'relu=marker asks for a ReLU backward rule' (the internal marker's name)."""
  with pytest.raises(ValueError, match='relu=guided_relu asks for a ReLU backward rule, but the model has'):
    saliency.saliency_maps(lambda x: jnp.tanh(linear(x)), X, LABELS, relu=deconvnet.guided_relu)


def test_torch_tensors_are_named():
  torch = pytest.importorskip('torch', reason='the torch extra')
  images = torch.zeros(3, 8, 8, 3)
  with pytest.raises(TypeError, match=r'got a PyTorch tensor \(3, 8, 8, 3\): convert it'):
    saliency.saliency_maps(linear, images, LABELS)
  with pytest.raises(TypeError, match='PyTorch tensor'):
    rules.as_model(linear, images)
