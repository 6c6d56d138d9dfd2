"""Gradient vs DeconvNet (paper Sect. 4).

  python experiments/deconvnet_vs_gradient.py --config configs/deconvnet_vs_gradient.py \
      --workdir runs/deconvnet_vs_gradient
"""

from saliency_jax import host

if __name__ == '__main__':  # first, before JAX is imported: SALIENCY_JAX_KEEP_FREED_MEMORY=1 re-executes
  host.keep_freed_memory()  # this process under malloc settings that reuse XLA:CPU's buffers (host.py)

from absl import app, flags
from ml_collections import config_flags

from saliency_jax.jobs import equivalence

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  result = equivalence.run(_CONFIG.value, _WORKDIR.value)
  print(equivalence.markdown(result['rows']))
  print('all claims confirmed:', result['all_confirmed'])


if __name__ == '__main__':
  app.run(main)
