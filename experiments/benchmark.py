"""The scale-out benchmark (what it measures: configs/benchmark.py; saliency_jax/jobs/benchmark.py).

  python experiments/benchmark.py --config configs/benchmark.py --workdir runs/benchmark

Writes benchmark.json (after every part, atomically) and benchmark.md to the workdir.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark')
