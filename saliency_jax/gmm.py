"""Gaussian mixture models fitted by EM, in JAX: the colour models of the paper's Sect. 3.2.

The GrabCut-style localisation fits one mixture to the foreground pixels and one to the background
pixels of an image (D = 3 colour channels, K = 5 components, up to ~50k pixels). `fit_core` is the
jittable, vmappable fit: per-point `weights` (0/1 masks, typically) select the points, so that both
models of an image, and many images, are fitted over the same pixel array in one program of fixed
shapes. `fit` checks its input and calls it; `log_prob` evaluates a fitted mixture.

Initialisation. Greedy k-means++ on the weighted points: the first centre is drawn with probability
proportional to w; for each next one, 2 + ln K candidates are drawn with probability proportional to
w times the squared distance to the nearest centre so far, and the one that leaves the smallest
weighted k-means cost is kept (scikit-learn's variant). Each draw is one uniform number through an
inverse CDF, so points of weight 0 take no part and a masked fit draws the same centres as a fit on
the masked points alone. `kmeans_iters` (20) weighted Lloyd steps follow; every point's nearest
centre then gives the first M-step.

EM. `num_iters` iterations (one compiled loop), each an E-step (responsibilities in the log domain,
normalised with logsumexp; Gaussian log densities through the Cholesky factor L of every covariance,
log N(x | m, C) = -(|L^-1 (x - m)|^2 + 2 sum log diag L + D log 2 pi) / 2) and an M-step (weighted
maximum likelihood: weights, means, full covariances). With `tol`, the loop stops early once the
mean log-likelihood of the weighted points changes by less than `tol` nats per point between two
iterations.

Covariance floor. `covariance_floor * I` is added to every covariance after each M-step. Its unit is
the data's unit squared: with colours scaled to [0, 1] (as the callers pass them) the default 1e-4
is a standard deviation of 0.01, about 2.5 of 255 grey levels. It keeps a component on a single
colour, or on fewer points than dimensions, a proper density, and bounds the condition number of
the covariances (~1e4 for data in [0, 1]: far from what breaks a float32 Cholesky factorisation;
data of a much larger scale need a proportionally larger floor).

Degenerate input never gives NaN:
  - a component that loses all its responsibility (below 1e-6 of the total weight) keeps its mean,
    gets weight 0 and the floor as covariance; it then stays empty (log weight -inf, a responsibility
    of exactly 0);
  - fewer distinct weighted points than components (one colour, fewer points than K): once every
    weighted point is a centre, k-means++ draws the remaining centres by weight alone, the duplicate
    centres get no points, and the mixture has fewer non-empty components of floor covariance;
  - all weights zero (an empty mask): `fit` refuses it ("no points to fit"); `fit_core`, which
    cannot raise, returns the standard normal as every component (weights 1 / K, means 0,
    covariances I), so that log-likelihoods stay finite (and carry no information).
Points of weight 0 have no influence, whatever their (finite) values.

Cost. One EM iteration over N points is O(N K D^2) time and O(N K D) memory; a Lloyd step is
O(N K D), a k-means++ centre O(N D ln K). Timings: `experiments/benchmark_localise.py` (docs/experiments.md).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular


class Params(NamedTuple):
  """A Gaussian mixture's parameters.

  Attributes:
    weights: [K] mixture weights, summing to 1.
    means: [K, D].
    covs: [K, D, D] full covariances (the floor already added).
  """
  weights: jax.Array  # [K] mixture weights, sum 1
  means: jax.Array  # [K, D]
  covs: jax.Array  # [K, D, D] full covariances (floor already added)


def component_log_prob(params: Params, x: jax.Array) -> jax.Array:
  """Log N(x_n | means_k, covs_k) of every point under every component.

  Args:
    params: the mixture.
    x: [N, D] points.

  Returns:
    [N, K].
  """
  d = x.shape[-1]
  chol = jnp.linalg.cholesky(params.covs)  # [K, D, D]
  # L^-1 once per component (cheaper than N triangular solves), then z = L^-1 (x - m) one coordinate
  # at a time over [K, N] arrays: with the points on the minor axis XLA:CPU vectorises it (faster colour
  # models than a batched matmul whose minor axes are D = 3 and K, measured by hand).
  chol_inv = solve_triangular(chol, jnp.broadcast_to(jnp.eye(d, dtype=chol.dtype), chol.shape), lower=True)
  diff = [x[None, :, e] - params.means[:, e, None] for e in range(d)]  # D x [K, N]
  squares = sum(sum(chol_inv[:, i, e, None] * diff[e] for e in range(d)) ** 2 for i in range(d))  # [K, N]
  log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # [K]
  return (-0.5 * (squares + log_det[:, None] + d * jnp.log(2 * jnp.pi))).T


@jax.jit
def log_prob(params: Params, x: jax.Array) -> jax.Array:
  """Log density of each point under the mixture.

  Args:
    params: the mixture.
    x: [N, D] points.

  Returns:
    [N].
  """
  return jax.nn.logsumexp(component_log_prob(params, x) + jnp.log(params.weights), axis=-1)


def _weighted_draw(key, p):
  """An index drawn with probability proportional to p >= 0 (sum p > 0); indices with p = 0 never.

  Inverse CDF with one uniform draw, so that entries of weight 0 do not change which point is drawn.
  """
  cdf = jnp.cumsum(p)
  u = jax.random.uniform(key, dtype=p.dtype) * cdf[-1]
  last_positive = p.shape[0] - 1 - jnp.argmax(p[::-1] > 0)  # rounding may put u at cdf[-1]
  return jnp.minimum(jnp.sum(cdf <= u), last_positive)


def _kmeans_plus_plus(key, x, w, k):
  """Greedy k-means++ centres [k, D] drawn among the points of positive weight (sum w > 0)."""
  num_trials = 2 + int(np.log(k))  # candidates per centre, as in scikit-learn's k-means++
  keys = jax.random.split(key, k)
  first = x[_weighted_draw(keys[0], w)]
  d2 = jnp.sum((x - first) ** 2, axis=-1)

  def pick(i, state):
    centres, d2 = state
    p = w * d2
    # Every weighted point is already a centre (fewer distinct points than k): duplicate one.
    p = jnp.where(jnp.sum(p) > 0, p, w)
    candidates = x[jax.vmap(_weighted_draw, in_axes=(0, None))(jax.random.split(keys[i], num_trials), p)]
    new_d2 = jnp.minimum(d2, jnp.sum((x - candidates[:, None]) ** 2, axis=-1))  # [trials, N]
    best = jnp.argmin(new_d2 @ w)  # the candidate that leaves the smallest k-means cost
    return centres.at[i].set(candidates[best]), new_d2[best]

  centres = jnp.zeros((k, x.shape[-1]), x.dtype).at[0].set(first)
  return lax.fori_loop(1, k, pick, (centres, d2))[0]


def _nearest(x, centres):
  """One-hot [N, K] of every point's nearest centre (ties: the first)."""
  d2 = jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1)
  return jax.nn.one_hot(jnp.argmin(d2, axis=-1), centres.shape[0], dtype=x.dtype)


def _m_step(x, w, resp, previous_means, covariance_floor):
  """Weighted maximum-likelihood parameters from responsibilities resp [N, K]."""
  r = resp * w[:, None]
  nk = jnp.sum(r, axis=0)  # [K]
  total = jnp.sum(nk)
  empty = nk <= 1e-6 * total  # a ratio of near-underflowing sums would not be a reliable mean
  safe_nk = jnp.where(empty, 1.0, nk)
  means = jnp.where(empty[:, None], previous_means, (r.T @ x) / safe_nk[:, None])
  diff = x[None] - means[:, None]  # [K, N, D]
  covs = jnp.einsum('knd,kne->kde', r.T[:, :, None] * diff, diff) / safe_nk[:, None, None]
  covs = jnp.where(empty[:, None, None], 0.0, covs) + covariance_floor * jnp.eye(x.shape[-1], dtype=x.dtype)
  weights = jnp.where(empty, 0.0, nk)
  return Params(weights / jnp.sum(weights), means, covs)


@functools.partial(jax.jit, static_argnames=('num_components', 'num_iters', 'kmeans_iters'))
def fit_core(key, x, weights, *, num_components: int, num_iters: int = 10, covariance_floor=1e-4,
             tol=None, kmeans_iters: int = 20) -> Params:
  """The jittable, vmappable fit, without input checks.

  All weights zero gives the standard normal (see the module docstring).

  Args:
    key: a JAX random key (k-means++ initialisation).
    x: [N, D] finite points.
    weights: [N] >= 0, the points' weights.
    num_components: K (static).
    num_iters: EM iterations (static); with `tol`, at most that many and at least 2 where it is >= 2.
    covariance_floor: added to every covariance's diagonal, in data units squared.
    tol: None runs exactly `num_iters` iterations; else EM stops once the mean log-likelihood changes by
      less than `tol` nats per point.
    kmeans_iters: Lloyd steps after k-means++ (static).

  Returns:
    The fitted `Params`.
  """
  x = jnp.asarray(x)
  w = jnp.asarray(weights, x.dtype)
  any_points = jnp.sum(w) > 0
  w = jnp.where(any_points, w, 1.0)  # no points: fit all of them (NaN-free), then discard the fit

  centres = _kmeans_plus_plus(key, x, w, num_components)

  def lloyd(_, centres):
    r = _nearest(x, centres) * w[:, None]
    n = jnp.sum(r, axis=0)[:, None]
    return jnp.where(n > 0, (r.T @ x) / jnp.where(n > 0, n, 1.0), centres)

  centres = lax.fori_loop(0, kmeans_iters, lloyd, centres)
  params = _m_step(x, w, _nearest(x, centres), centres, covariance_floor)

  def em_step(state):
    i, params, _, log_lik = state
    log_joint = component_log_prob(params, x) + jnp.log(params.weights)  # [N, K]
    log_norm = jax.nn.logsumexp(log_joint, axis=-1, keepdims=True)
    resp = jnp.exp(log_joint - log_norm)
    new_log_lik = jnp.sum(w * log_norm[:, 0]) / jnp.sum(w)  # of `params`, before this M-step
    return i + 1, _m_step(x, w, resp, params.means, covariance_floor), log_lik, new_log_lik

  def keep_going(state):
    i, _, previous, log_lik = state
    if tol is None:
      return i < num_iters
    # The change is known from the second iteration on (as in scikit-learn: at least 2 iterations).
    return (i < num_iters) & ((i < 2) | (jnp.abs(log_lik - previous) >= tol))

  zero = jnp.zeros((), x.dtype)
  _, params, _, _ = lax.while_loop(keep_going, em_step, (0, params, zero, zero))

  d = x.shape[-1]
  standard_normal = Params(jnp.full(num_components, 1.0 / num_components, x.dtype),
                           jnp.zeros((num_components, d), x.dtype),
                           jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), (num_components, d, d)))
  return jax.tree.map(lambda a, b: jnp.where(any_points, a, b), params, standard_normal)


def fit(key, x, num_components: int, *, num_iters: int = 10, weights=None, covariance_floor: float = 1e-4,
        tol: float | None = None) -> Params:
  """Fits a Gaussian mixture with full covariances to points, by EM in JAX.

  Args:
    key: a JAX random key (k-means++ initialisation).
    x: [N, D] points.
    num_components: K.
    num_iters: EM iterations (at most, with `tol`).
    weights: [N] >= 0 weights of the points (None: all 1).
    covariance_floor: added to every covariance's diagonal, in data units squared.
    tol: None runs all `num_iters` iterations; else EM stops once the mean log-likelihood changes by
      less than `tol` nats per point.

  Returns:
    The fitted `Params`.

  Raises:
    ValueError: x not [N, D], empty or not finite, bad weights, or settings out of range.
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'x must be a 2-D [N, D] array, got rank {x.ndim} (shape {x.shape})')
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f'x is empty: shape {x.shape}')
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f'x holds {int(np.sum(~np.isfinite(x)))} non-finite values (NaN or inf)')
  for name, value, least in (('num_components', num_components, 1), ('num_iters', num_iters, 0)):
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
      raise ValueError(f'{name} must be an integer >= {least}, got {value!r}')
  if not covariance_floor > 0:
    raise ValueError(f'covariance_floor must be positive, got {covariance_floor}')
  weights = np.ones(x.shape[0], x.dtype) if weights is None else np.asarray(weights, x.dtype)
  if weights.shape != (x.shape[0],):
    raise ValueError(f'weights must have shape ({x.shape[0]},) to match x {x.shape}, got {weights.shape}')
  if not np.all(np.isfinite(weights)):
    raise ValueError('weights hold non-finite values (NaN or inf)')
  if np.any(weights < 0):
    raise ValueError(f'weights must be non-negative, got minimum {weights.min()}')
  if not np.any(weights > 0):
    raise ValueError('no points to fit: every weight is 0')
  return fit_core(key, jnp.asarray(x), jnp.asarray(weights), num_components=num_components,
                  num_iters=num_iters, covariance_floor=covariance_floor, tol=tol)
