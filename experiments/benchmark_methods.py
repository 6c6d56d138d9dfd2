"""Every attribution method against its anchor on the same weights and images (configs/benchmark_methods.py;
saliency_jax/jobs/benchmark_methods.py).

  python experiments/benchmark_methods.py --config configs/benchmark_methods.py --workdir runs/benchmark

Writes benchmark_methods.json to the workdir.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_methods')
