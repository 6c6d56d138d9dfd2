"""The localisation sweep: settings chosen on the selection part, reported on the report part.

  python experiments/sweep_localisation.py --config configs/localisation_sweep.py --workdir runs/quickstart
"""

from saliency_jax import host

if __name__ == '__main__':  # first, before JAX is imported: SALIENCY_JAX_KEEP_FREED_MEMORY=1 re-executes
  host.keep_freed_memory()  # this process under malloc settings that reuse XLA:CPU's buffers (host.py)

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  # Imported here: the worker processes that run the graph cuts import this script (Python's 'spawn'),
  # and start in a fraction of the time without JAX and the job's modules.
  from saliency_jax.jobs import sweep
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  results = sweep.run(_CONFIG.value, _WORKDIR.value)
  print(f"\npicked on the selection part: {results['selected']}\n")
  print(sweep.table(results))
  print(f'\nsweep.json and sweep.md in {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
