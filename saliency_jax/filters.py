"""Image filters shared by the class models and the faithfulness metrics.

The class models' blur regularisation and insertion's blurred canvas.
"""

import jax
import jax.numpy as jnp


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of one image (kernel radius 2 sigma, edge padding).

  Args:
    x: [H, W, C].
    sigma: the std in pixels.

  Returns:
    [H, W, C].
  """
  radius = max(1, int(round(2 * sigma)))
  t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / k.sum()
  pad = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode='edge')
  rows = sum(k[i] * pad[i:i + x.shape[0]] for i in range(2 * radius + 1))
  return sum(k[i] * rows[:, i:i + x.shape[1]] for i in range(2 * radius + 1))
