"""The Vision Transformer: every method that has a meaning for it runs on it, the layer methods read a
block's tokens as a map through the token grid (no reshape function), the ReLU-rule methods and CAM are
refused with errors that say why."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, graph, models, saliency


@pytest.fixture(scope='module')
def vit():
  return models.ViT(5, image_size=16, patch_size=4, dim=16, depth=3, heads=2, mlp_dim=32, rngs=nnx.Rngs(0))


@pytest.fixture(scope='module')
def batch():
  return jax.random.normal(jax.random.key(1), (3, 16, 16, 3)), np.array([0, 2, 4])


def test_token_grid_is_declared_or_inferred():
  assert attribution.token_grid(None, (2, 7, 7, 8)) is None  # a spatial layer
  assert attribution.token_grid(None, (2, 197, 8)) == (1, 14, 14)  # a class token and 14 x 14 patches
  assert attribution.token_grid(None, (2, 196, 8)) == (0, 14, 14)
  model = models.ViT(3, image_size=16, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=8, rngs=nnx.Rngs(0))
  assert model.token_grid == (1, 4, 4) and attribution.token_grid(model, (2, 17, 8)) == (1, 4, 4)
  with pytest.raises(ValueError, match='no square grid'):
    attribution.token_grid(None, (2, 30, 8))
  with pytest.raises(ValueError, match='spatial layer'):
    attribution.token_grid(None, (2, 8))


def test_grad_cam_and_layer_cam_read_the_tokens_on_their_grid(vit, batch):
  """The package's maps equal Grad-CAM / Layer-CAM computed by hand: the block's tokens and their gradient,
  the class token dropped, the patches laid on the 4 x 4 grid."""
  x, labels = batch
  assert attribution.default_layer(vit) == 'block2'  # the last block's input
  steps = vit.steps()
  stop = graph.index(steps, 'block2')
  tokens = graph.run(steps, x, stop=stop)
  scores, vjp = jax.vjp(lambda t: graph.run(steps, t, start=stop + 1), tokens)
  (g,) = vjp(jax.nn.one_hot(labels, 5))
  a, g = tokens[:, 1:].reshape(3, 4, 4, -1), g[:, 1:].reshape(3, 4, 4, -1)
  want = {'grad_cam': jax.nn.relu(jnp.einsum('bhwc,bc->bhw', a, g.mean(axis=(1, 2)))),
          'layer_cam': jax.nn.relu((jax.nn.relu(g) * a).sum(-1))}
  for method, expected in want.items():
    got = attribution.attribute(method, vit, x, labels, upsample=False)
    assert float(jnp.max(expected)) > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * float(jnp.max(expected)), err_msg=method)


def test_every_method_with_a_meaning_runs_on_the_vit(vit, batch):
  x, labels = batch
  settings = {'smoothgrad': {'samples': 4}, 'integrated_gradients': {'steps': 4}, 'occlusion': {'patch': 4},
              'rise': {'num_masks': 32}, 'blur_ig': {'steps': 4, 'max_sigma': 4.0}, 'guided_ig': {'steps': 4},
              'xrai': {'steps': 4}}
  refused = {'guided_backprop': 'never calls its relu argument', 'deconvnet': 'never calls its relu argument',
             'deeplift': 'never calls its relu argument',
             'cam': 'global average pooling followed by one linear layer'}
  for method in attribution.METHODS:
    if method in refused:
      with pytest.raises(ValueError, match=refused[method]):
        attribution.attribute(method, vit, x, labels)
      continue
    a = np.asarray(attribution.attribute(method, vit, x, labels, **settings.get(method, {})))
    assert a.shape[:3] == (3, 16, 16) and np.all(np.isfinite(a)), method
    assert np.abs(a).max() > 0, method
  np.testing.assert_allclose(attribution.gradient(vit, x, labels),
                             saliency.input_gradients(vit, x, labels), rtol=1e-6)
