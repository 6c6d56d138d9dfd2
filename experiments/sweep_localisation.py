"""The localisation sweep: settings chosen on the selection part, reported on the report part
(saliency_jax/jobs/sweep.py).

  python experiments/sweep_localisation.py --config configs/localisation_sweep.py --workdir runs/quickstart
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'sweep')
