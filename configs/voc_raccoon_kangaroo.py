"""A small net trained on a real two-class set (raccoon vs kangaroo), localised against real boxes.

  python experiments/reproduce.py --config configs/voc_raccoon_kangaroo.py --workdir runs/voc_raccoon_kangaroo

Minutes on 2 CPU cores. The 150 + 123 photos of `data_dir/voc-raccoon` and
`data_dir/voc-kangaroo` (PASCAL VOC folders), squashed to 96 px, split 75 / 25 by a seeded
permutation; a SmallConvNet with BatchNorm trained with AdamW (flips, shifts, colour jitter); the
10-crop maps (84 px crops) of the true class, localised on the 224 px photos with the GraphCut
pipeline and the baselines; GT-known box accuracy (with two classes the top-1 localisation error
is also reported; top-k is the top 1). Not kept in results/ yet.
"""

import ml_collections
from ml_collections import config_dict

from saliency_jax import defaults


def get_config(arg: str = 'cpu'):
  if arg not in ('cpu', 'gpu', 'tpu'):
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {arg!r}")
  config = defaults.main_job()
  config.name = 'voc_raccoon_kangaroo'
  config.num_classes = 2
  config.class_names = ('kangaroo', 'raccoon')
  config.data = ml_collections.ConfigDict({
      'name': 'voc', 'data_dir': '../shared/data', 'folders': ('voc-raccoon', 'voc-kangaroo'),
      'classes': ('kangaroo', 'raccoon'), 'test_fraction': 0.25, 'seed': 0, 'image_size': 96,
      'skip_bad': False, 'part': 'all',
      'mean': config_dict.placeholder(tuple), 'std': config_dict.placeholder(tuple),  # None: from the data
  })
  config.model = ml_collections.ConfigDict({'name': 'SmallConvNet', 'stages': ((32,), (64,), (128,), (128,)),
                                            'hidden': (), 'batch_norm': True, 'dropout': 0.3})
  config.train = ml_collections.ConfigDict({
      'optimizer': 'adamw', 'learning_rate': 2e-3, 'momentum': 0.9, 'weight_decay': 5e-4,
      'schedule': 'cosine', 'warmup_steps': 50, 'steps': 1500, 'batch_size': 32, 'max_shift': 8,
      'checkpoint_every': 500, 'log_every': 50,
  })
  config.top_k = 1
  config.crop_size = 84
  config.localise_size = 224
  config.chunk_size = 50
  if arg != 'cpu':
    config.workers = 8
  return config
