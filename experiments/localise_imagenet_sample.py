"""Weakly supervised localisation (paper Sect. 3.2) on the real ImageNet val sample.

  python experiments/localise_imagenet_sample.py --config configs/localise_cifar_resnet.py \
      --workdir runs/localise_cifar_resnet
"""

from absl import app, flags
from ml_collections import config_flags

from saliency_jax import weak_localisation

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  out = weak_localisation.run(_CONFIG.value, _WORKDIR.value)
  print(weak_localisation.markdown(out))


if __name__ == '__main__':
  app.run(main)
