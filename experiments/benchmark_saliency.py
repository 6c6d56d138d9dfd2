"""Saliency speed: JAX against PyTorch autograd and Captum on the same weights
(configs/benchmark_saliency.py; saliency_jax/jobs/benchmark_saliency.py).

  python experiments/benchmark_saliency.py --config configs/benchmark_saliency.py --workdir runs/benchmark

Writes benchmark_saliency.json to the workdir (after every model, atomically) and prints a markdown table.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_saliency')
