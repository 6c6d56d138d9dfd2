"""A model from outside the package, for the main job's config.checkpoint kind 'python'."""

import flax.linen as nn
import jax


class Net(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def build():
  """A linen net as a plain function (random weights) and its preprocessing."""
  net = Net()
  params = net.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
  return (lambda x: net.apply(params, x)), {'mean': (0.5, 0.5, 0.5), 'std': (0.25, 0.25, 0.25)}


class GeluNet(nn.Module):
  """A ViT-style block on a patch grid: LayerNorm and GELU, no ReLU."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.gelu(nn.LayerNorm()(nn.Conv(8, (4, 4), strides=(4, 4))(x)))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def bare():
  """A GELU + LayerNorm net as a bare callable: no preprocessing of its own."""
  net = GeluNet()
  params = net.init(jax.random.key(1), jax.numpy.zeros((1, 32, 32, 3)))
  return lambda x: net.apply(params, x)


def one_score_per_image():
  """A model whose output is not [B, K]: one score per image."""
  return lambda x: x.mean(axis=(1, 2, 3))
