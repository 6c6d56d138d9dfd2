"""Gaussian mixture models fitted by EM, in JAX (the colour models of the paper's Sect. 3.2).

`fit(key, x, num_components, ...)` fits a mixture with full covariances to points x [N, D]:
  - initialisation: k-means++ (first centre drawn with probability ~ w, each next one ~ w times the
    squared distance to the nearest chosen centre), `num_kmeans` weighted k-means (Lloyd) steps,
    then every point assigned to its nearest centre gives the first M-step;
  - EM for `num_iters` iterations (a fixed count: one compiled loop, vmappable), responsibilities
    computed in the log domain (logsumexp), Gaussian densities through Cholesky factors;
  - a covariance floor: `covariance_floor * I` is added to every covariance (units: the data's,
    squared; with colours scaled to [0, 1] the default 1e-4 is a standard deviation of 0.01, about
    2.5 grey levels), so that a component on one colour, or on fewer points than dimensions, stays
    a proper density.
Per-point `weights` (0/1 masks, typically) let the foreground and background models of one image
be fitted over the same pixel array, so that both (and many images) run in one vmapped program.

Degenerate input never gives NaN: a component that loses every point keeps its mean and gets
weight ~0 and the floor as covariance; identical points give a component of floor covariance at
that point; an all-zero weight vector (possible only inside a traced computation: `fit` refuses it)
gives components on k-means++ picks drawn uniformly, equal weights, and floor covariances.

Cost: O(N K D^2) per iteration.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular


class Params(NamedTuple):
  weights: jax.Array  # [K] mixture weights, summing to 1
  means: jax.Array  # [K, D]
  covs: jax.Array  # [K, D, D] full covariances, floor included


def component_log_densities(params: Params, x: jax.Array) -> jax.Array:
  """log N(x_n | mean_k, cov_k): [N, K]."""
  chol = jnp.linalg.cholesky(params.covs)  # [K, D, D]
  diff = x[None] - params.means[:, None]  # [K, N, D]
  solved = solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)  # [K, D, N]
  mahalanobis = jnp.sum(solved ** 2, axis=1)  # [K, N]
  log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)  # [K]
  d = x.shape[1]
  return (-0.5 * (mahalanobis + log_det[:, None] + d * jnp.log(2 * jnp.pi))).T


def log_prob(params: Params, x: jax.Array) -> jax.Array:
  """Log density of each point under the mixture: [N]."""
  log_weights = jnp.log(jnp.maximum(params.weights, jnp.finfo(params.weights.dtype).tiny))
  return jax.nn.logsumexp(component_log_densities(params, x) + log_weights, axis=1)


def _kmeans_plus_plus(key, x, w, k):
  """k-means++ centres [k, D] among the points of positive weight."""
  uniform = jnp.zeros(x.shape[0], x.dtype)
  base = jnp.where(jnp.sum(w) > 0, jnp.log(w), uniform)  # log 0 = -inf: never drawn
  keys = jax.random.split(key, k)
  first = x[jax.random.categorical(keys[0], base)]
  centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  d2 = jnp.sum((x - first) ** 2, axis=1)

  def pick(j, state):
    centres, d2 = state
    p = w * d2
    # All weighted points already at a centre (one distinct colour): draw by weight again.
    logits = jnp.where(jnp.sum(p) > 0, jnp.log(p), base)
    c = x[jax.random.categorical(keys[j], logits)]
    return centres.at[j].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, axis=1))

  centres, _ = jax.lax.fori_loop(1, k, pick, (centres, d2))
  return centres


def _m_step(x, w, resp, previous_means, covariance_floor):
  """Weighted maximum-likelihood parameters from responsibilities [N, K]."""
  r = resp * w[:, None]
  nk = jnp.sum(r, axis=0)  # [K]
  k, d = resp.shape[1], x.shape[1]
  tiny = 1e-6 * jnp.maximum(jnp.sum(w), 1.0) / k
  empty = nk <= tiny
  safe = jnp.where(empty, 1.0, nk)
  means = jnp.where(empty[:, None], previous_means, (r.T @ x) / safe[:, None])
  diff = x[None] - means[:, None]  # [K, N, D]
  covs = jnp.einsum('nk,knd,kne->kde', r, diff, diff) / safe[:, None, None]
  covs = jnp.where(empty[:, None, None], 0.0, covs) + covariance_floor * jnp.eye(d, dtype=x.dtype)
  weights = jnp.where(jnp.sum(nk) > 0, nk / jnp.maximum(jnp.sum(nk), tiny), 1.0 / k)
  return Params(weights, means, covs)


@functools.partial(jax.jit, static_argnames=('num_components', 'num_iters', 'num_kmeans'))
def fit_core(key, x, weights, *, num_components: int, num_iters: int = 10, num_kmeans: int = 20,
             covariance_floor=1e-4) -> Params:
  """The jittable, vmappable fit (no input checks): x [N, D], weights [N] >= 0."""
  x = jnp.asarray(x)
  w = jnp.asarray(weights, x.dtype)
  centres = _kmeans_plus_plus(key, x, w, num_components)
  assign = lambda c: jax.nn.one_hot(jnp.argmin(jnp.sum((x[:, None] - c[None]) ** 2, axis=-1), axis=1),
                                    num_components, dtype=x.dtype)

  def lloyd(_, c):  # k-means steps: weighted means of the assigned points (empty clusters stay)
    r = assign(c) * w[:, None]
    n = jnp.sum(r, axis=0)
    return jnp.where(n[:, None] > 0, (r.T @ x) / jnp.maximum(n, 1e-30)[:, None], c)

  centres = jax.lax.fori_loop(0, num_kmeans, lloyd, centres)
  params = _m_step(x, w, assign(centres), centres, covariance_floor)

  def em(_, params):
    log_resp = component_log_densities(params, x) + jnp.log(jnp.maximum(params.weights, 1e-30))
    resp = jnp.exp(log_resp - jax.nn.logsumexp(log_resp, axis=1, keepdims=True))
    return _m_step(x, w, resp, params.means, covariance_floor)

  return jax.lax.fori_loop(0, num_iters, em, params)


def fit(key, x, num_components: int, *, num_iters: int = 10, weights=None,
        covariance_floor: float = 1e-4) -> Params:
  """Fits a `num_components` Gaussian mixture to x [N, D] (optionally weighted per point)."""
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f'x must be a non-empty [N, D] array, got shape {x.shape}')
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f'x holds {int(np.sum(~np.isfinite(x)))} NaN or infinite values')
  if num_components < 1:
    raise ValueError(f'num_components must be >= 1, got {num_components}')
  if num_iters < 0:
    raise ValueError(f'num_iters must be >= 0, got {num_iters}')
  if covariance_floor <= 0:
    raise ValueError(f'covariance_floor must be positive, got {covariance_floor}')
  if weights is None:
    weights = np.ones(x.shape[0], x.dtype)
  weights = np.asarray(weights, x.dtype)
  if weights.shape != (x.shape[0],):
    raise ValueError(f'weights must have shape ({x.shape[0]},), got {weights.shape}')
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ValueError('weights must be finite and non-negative')
  if not np.any(weights > 0):
    raise ValueError('no points to fit: every weight is 0')
  return fit_core(key, jnp.asarray(x), jnp.asarray(weights), num_components=num_components,
                  num_iters=num_iters, covariance_floor=covariance_floor)
