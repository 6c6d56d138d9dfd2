"""Attribution methods compared on the same images with the same metrics.

  python experiments/compare_attributions.py --config configs/compare_attributions.py \
      --workdir runs/quickstart
"""

from saliency_jax import host

if __name__ == '__main__':  # first, before JAX is imported: SALIENCY_JAX_KEEP_FREED_MEMORY=1 re-executes
  host.keep_freed_memory()  # this process under malloc settings that reuse XLA:CPU's buffers (host.py)

from absl import app, flags, logging
from ml_collections import config_flags

from saliency_jax.jobs import comparison

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  results = comparison.run(_CONFIG.value, _WORKDIR.value)
  print()
  print(comparison.table(results))
  print(f'\ncomparison.json, comparison.md and figures in {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
