"""The main job.

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart
"""

from absl import app, flags, logging
from ml_collections import config_flags

from saliency_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  results = pipeline.run(_CONFIG.value, _WORKDIR.value)
  if 'process_index' in results:  # one of several hosts: process 0 writes the metrics
    return
  print(f"\ntest accuracy {results['test_accuracy']:.3f}\n")
  print(pipeline.table(results))
  print(f'\nmetrics.json, report.md and figures in {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
