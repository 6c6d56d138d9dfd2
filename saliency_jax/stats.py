"""Uncertainty of per-image results: intervals, paired comparisons, how stable a pick is.

Every result here is a mean over images of a per-image value (a bool "right", an IoU, a hit). Intervals
are percentile bootstrap intervals over images (Efron & Tibshirani 1993): seeded, `RESAMPLES` resamples
by default, the same resampled images for both sides of a paired comparison. McNemar's exact test
(McNemar 1947; the exact binomial form) compares two methods' bools on the same images.
"""

from collections.abc import Callable

import numpy as np
from scipy import stats as scipy_stats

RESAMPLES = 2000
LEVEL = 0.95


def _values(values, name: str) -> np.ndarray:
  v = np.asarray(values, np.float64).reshape(-1)
  if not len(v):
    raise ValueError(f'{name}: no images')
  if not np.all(np.isfinite(v)):
    raise ValueError(f'{name}: NaN or infinite per-image values')
  return v


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
  if resamples < 1:
    raise ValueError(f'resamples must be >= 1, got {resamples}')
  return np.random.default_rng(seed).integers(0, n, (resamples, n))


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  if not 0 < level < 1:
    raise ValueError(f'level must be in (0, 1), got {level}')
  lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
  return float(lo), float(hi)


def interval(values, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
  """The mean of per-image values and its percentile bootstrap interval over images.

  Args:
    values: [N] per-image values (bools or numbers).
    resamples: bootstrap resamples.
    level: the interval's level.
    seed: the resampling's seed.

  Returns:
    {'mean', 'low', 'high', 'n', 'level', 'resamples', 'seed', 'method'}.
  """
  v = _values(values, 'interval')
  draws = v[_resample_indices(len(v), resamples, seed)].mean(axis=1)
  lo, hi = _percentiles(draws, level)
  return {'mean': float(v.mean()), 'low': lo, 'high': hi, 'n': len(v), 'level': level,
          'resamples': resamples, 'seed': seed, 'method': 'percentile bootstrap over images'}


def binomial_interval(correct: int, n: int, *, level: float = LEVEL) -> dict:
  """An accuracy with its exact (Clopper-Pearson) binomial interval.

  For counts without per-image results (the main job's test accuracy is summed chunk by chunk).

  Args:
    correct: the images right.
    n: the images.
    level: the interval's level.

  Returns:
    {'mean', 'low', 'high', 'n', 'level', 'method'}.

  Raises:
    ValueError: unless 0 <= correct <= n and n >= 1.
  """
  if not (isinstance(n, (int, np.integer)) and n > 0 and 0 <= correct <= n):
    raise ValueError(f'binomial_interval needs 0 <= correct <= n and n >= 1, got {correct} of {n}')
  ci = scipy_stats.binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method='exact')
  return {'mean': correct / n, 'low': float(ci.low), 'high': float(ci.high), 'n': int(n), 'level': level,
          'method': 'exact binomial (Clopper-Pearson)'}


def mcnemar_exact(a, b) -> dict:
  """McNemar's exact test of two methods' hits on the same images.

  The images only `a` gets right (n10) and only `b` gets right (n01), and the two-sided p-value of the
  binomial test of n10 against n10 + n01 trials at 1/2 (1 when no image differs).

  Args:
    a: bool [N].
    b: bool [N].

  Returns:
    {'only_a': n10, 'only_b': n01, 'p_value': p}.

  Raises:
    ValueError: a and b of different lengths.
  """
  a, b = np.asarray(a, bool).reshape(-1), np.asarray(b, bool).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f'mcnemar_exact: {len(a)} and {len(b)} images')
  n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
  p = 1.0 if n10 + n01 == 0 else float(scipy_stats.binomtest(n10, n10 + n01, 0.5).pvalue)
  return {'only_a': n10, 'only_b': n01, 'p_value': p}


def paired(a, b, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
  """A - b on the same images: the difference of the means, its paired bootstrap interval, and McNemar's p.

  The same resampled images on both sides; 'distinguishable' is False when the interval holds 0; the
  p-value of `mcnemar_exact` for bools.

  Args:
    a: [N] per-image values.
    b: [N] per-image values on the same images.
    resamples: bootstrap resamples.
    level: the interval's level.
    seed: the resampling's seed.

  Returns:
    {'difference', 'low', 'high', 'distinguishable', 'n', 'level', 'resamples', 'seed'}, and for bools
    'mcnemar' (`mcnemar_exact`).

  Raises:
    ValueError: a and b of different lengths.
  """
  va, vb = _values(a, 'paired a'), _values(b, 'paired b')
  if va.shape != vb.shape:
    raise ValueError(f'paired: {len(va)} and {len(vb)} images')
  d = va - vb
  draws = d[_resample_indices(len(d), resamples, seed)].mean(axis=1)
  lo, hi = _percentiles(draws, level)
  out = {'difference': float(d.mean()), 'low': lo, 'high': hi, 'distinguishable': not lo <= 0 <= hi,
         'n': len(d), 'level': level, 'resamples': resamples, 'seed': seed}
  if np.isin(va, (0, 1)).all() and np.isin(vb, (0, 1)).all():
    out['mcnemar'] = mcnemar_exact(va.astype(bool), vb.astype(bool))
  return out


def pick_stability(per_image: dict, choose: Callable[[dict], str], *, resamples: int = RESAMPLES,
                   seed: int = 0) -> dict:
  """How often the same setting is picked on bootstrap resamples of the images.

  Args:
    per_image: {setting: {metric: per-image values [N]}}, every array over the same N images.
    choose: {setting: {metric: mean}} -> the picked setting (e.g. `jobs.sweep.choose`).
    resamples: bootstrap resamples.
    seed: the resampling's seed.

  Returns:
    {'picked': the pick on all images, 'stability': the fraction of resamples picking it, 'picks':
    {setting: count}, ...}.

  Raises:
    ValueError: per-image arrays over different numbers of images.
  """
  names = list(per_image)
  arrays = {s: {m: _values(v, f'{s}.{m}') for m, v in per_image[s].items()} for s in names}
  n = len(next(iter(next(iter(arrays.values())).values())))
  if any(len(v) != n for s in arrays.values() for v in s.values()):
    raise ValueError('pick_stability: every per-image array must cover the same images')
  picked = choose({s: {m: float(v.mean()) for m, v in arrays[s].items()} for s in names})
  counts = dict.fromkeys(names, 0)
  for idx in _resample_indices(n, resamples, seed):
    counts[choose({s: {m: float(v[idx].mean()) for m, v in arrays[s].items()} for s in names})] += 1
  return {'picked': picked, 'stability': counts[picked] / resamples, 'picks': counts,
          'resamples': resamples, 'seed': seed}
