"""Localisation speed per stage, against OpenCV's grabCut and scikit-learn's GaussianMixture
(configs/benchmark_localise.py; saliency_jax/jobs/benchmark_localise.py).

  python experiments/benchmark_localise.py --config configs/benchmark_localise.py --workdir runs/benchmark

Writes benchmark_localise.json to the workdir and prints a markdown table.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_localise')
