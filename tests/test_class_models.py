"""Class model visualisation (Sect. 2): known optimum of a linear model, monotone ascent, vmap = loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import class_models, models


class Linear(nnx.Module):
  """S(x) = W flatten(x) + b: the optimum of S_c - lam ||x||^2 is W[:, c] / (2 lam)."""

  def __init__(self, shape, num_classes, rngs):
    self.dense = nnx.Linear(int(np.prod(shape)), num_classes, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    return self.dense(x.reshape(x.shape[0], -1))


def test_linear_model_reaches_the_closed_form_optimum():
  shape, lam = (4, 5, 3), 0.5
  model = Linear(shape, 6, nnx.Rngs(0))
  images = class_models.visualise(model, [1, 4], image_shape=shape, l2_weight=lam, steps=300,
                                  learning_rate=0.1, optimizer='sgd', momentum=0.0)
  w = np.asarray(model.dense.kernel[...])  # [in, classes]
  for image, c in zip(images, [1, 4]):
    np.testing.assert_allclose(np.asarray(image).ravel(), w[:, c] / (2 * lam), rtol=1e-5, atol=1e-6)


def _with_biases(model, seed):
  """Random biases, as a trained net has (zero biases leave every ReLU at 0 on the zero image)."""
  params = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed), 100))
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (0.1 * jax.random.normal(next(keys), x.shape) if 'bias' in jax.tree_util.keystr(path)
                       else x),
      params)
  nnx.update(model, params)
  return model


def test_ascent_raises_the_objective_monotonically_on_a_small_net():
  # Plain gradient ascent with a small step (Adam, the default, need not be monotone).
  # From small noise, not the zero image: there every max-pool window is a tie, the first step's
  # gradient follows an arbitrary switch, and the objective may dip once (by ~1e-4 here).
  model = _with_biases(models.SmallConvNet(5, stages=((4,), (8,)), rngs=nnx.Rngs(1)), 0)
  result = class_models.visualise(model, jnp.arange(5), image_shape=(16, 16, 3), l2_weight=1e-2, steps=60,
                                  learning_rate=0.01, optimizer='sgd', momentum=0.0, init_scale=0.01,
                                  return_history=True)
  objective = np.asarray(result.objective)
  assert objective.shape == (5, 60)
  assert np.all(np.diff(objective, axis=1) >= -1e-5) and np.all(objective[:, -1] > objective[:, 0])
  scores = np.asarray(result.scores)
  assert np.all(scores[:, -1] > scores[:, 0])  # the class score itself rose
  final = np.asarray(model(result.images))[np.arange(5), np.arange(5)]
  np.testing.assert_allclose(final, scores[:, -1], atol=0.02)  # history tracks the real score


def test_all_classes_at_once_equal_one_at_a_time_and_extras_run():
  model = _with_biases(models.SmallConvNet(4, stages=((4,), (8,)), rngs=nnx.Rngs(2)), 1)
  kw = dict(image_shape=(12, 12, 3), steps=10, blur_every=3, tv_weight=0.01)
  together = class_models.visualise(model, [0, 3], **kw)
  assert float(jnp.abs(together).max()) > 0
  for i, c in enumerate([0, 3]):
    alone = class_models.visualise(model, [c], **kw)[0]
    np.testing.assert_allclose(together[i], alone, rtol=1e-4, atol=1e-6)
  jittered = class_models.visualise(model, [0, 3], jitter=2, init_scale=0.1, seed=3, **kw)
  assert jittered.shape == together.shape and not np.allclose(jittered, together)
  soft = class_models.visualise(model, [1], image_shape=(12, 12, 3), steps=5, objective='softmax',
                                optimizer='adam', return_history=True)
  assert np.all(np.asarray(soft.scores) <= 0)  # log-probabilities


def test_blur_and_display_known_answers():
  x = jnp.zeros((5, 5, 1)).at[2, 2, 0].set(1.0)
  blurred = class_models.gaussian_blur(x, 0.5)
  np.testing.assert_allclose(float(blurred.sum()), 1.0, rtol=1e-5)  # mass kept away from edges
  assert float(blurred[2, 2, 0]) < 1.0 and float(blurred[2, 3, 0]) > 0
  shown = class_models.for_display(np.stack([np.full((2, 2, 3), -1.0), np.eye(2)[..., None].repeat(3, -1)]),
                                   mean=(0.5, 0.5, 0.5))
  assert shown.dtype == np.uint8 and shown.shape == (2, 2, 2, 3)


def test_bad_settings_are_named():
  model = models.SmallConvNet(3, stages=((4,),), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='objective'):
    class_models.visualise(model, [0], image_shape=(8, 8, 3), objective='probability')
  with pytest.raises(ValueError, match=r'classes must be in \[0, 3\)'):
    class_models.visualise(model, [3], image_shape=(8, 8, 3))
