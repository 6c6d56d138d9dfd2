"""The ILSVRC protocol's images/s before and after, in one run (configs/benchmark_protocol.py;
saliency_jax/jobs/benchmark_protocol.py).

  python experiments/benchmark_protocol.py --config configs/benchmark_protocol.py --workdir runs/benchmark

Writes benchmark_protocol.json to the workdir.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_protocol')
