"""The main job.

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart
"""

from absl import app, flags
from ml_collections import config_flags

from saliency_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  results = pipeline.run(_CONFIG.value, _WORKDIR.value)
  print({k: v for k, v in results.items() if k != 'config'})


if __name__ == '__main__':
  app.run(main)
