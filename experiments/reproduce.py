"""The main job: data, the trained (or imported) net, 10-crop saliency maps, localisation, Sect. 4, class
models, report (saliency_jax/jobs/pipeline.py).

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart
  python experiments/reproduce.py --help                                   # the configs
  python experiments/reproduce.py --help --config configs/quickstart.py    # a config's fields
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'pipeline')
