"""Rules by program transformation against rules through `relu=` (configs/benchmark_any_model.py;
saliency_jax/jobs/benchmark_any_model.py).

  python experiments/benchmark_any_model.py --config configs/benchmark_any_model.py --workdir runs/benchmark

Writes benchmark_any_model.json to the workdir.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_any_model')
