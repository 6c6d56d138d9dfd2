"""Peak resident memory of the main job at several numbers of test images (configs/benchmark_memory.py;
saliency_jax/jobs/benchmark_memory.py).

  python experiments/benchmark_memory.py --config configs/benchmark_memory.py --workdir runs/benchmark_memory

Writes benchmark_memory.json to the workdir.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'benchmark_memory')
