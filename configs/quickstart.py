"""Quickstart, the main job on the embedded synthetic set.

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart

Minutes on 2 CPU cores (the timing of the kept run: docs/results/quickstart.md). Generates the synthetic
localisation set (10 classes of textured shapes on scikit-image photos; train and test on disjoint
photos), trains a SmallConvNet with AdamW, computes the 10-crop saliency maps of the test images' top-5
classes and true class, localises them with the GraphCut pipeline and the baselines, computes the class
model images, and writes metrics.json, report.md, saliency.png, localisation.png and class_models.png.
Measured result: docs/results/quickstart.md (generated from results/quickstart.json). Variants: `:cpu`
(this, the default), `:gpu` / `:tpu` (96 px, 10x the data, 5x the steps, bigger batches; same model).
"""

import ml_collections
from ml_collections import config_dict

from saliency_jax import defaults


def get_config(arg: str = 'cpu'):
  config = defaults.main_job()
  config.name = 'quickstart'
  config.num_classes = 10
  config.class_names = ('disc', 'square', 'triangle', 'ring', 'cross', 'star', 'crescent', 'hexagon', 'arrow',
                        'diamond')
  config.data = ml_collections.ConfigDict({
      'name': 'synthetic', 'seed': 0, 'image_size': 64, 'num_train': 5000, 'num_test': 500,
      'num_classes': 10, 'scale': (0.2, 0.6), 'occlusion': 0.3, 'skip_bad': False, 'part': 'all',
      # None: the training set's mean colour, std 1; a placeholder, so that --config.data.mean='(r, g, b)'
      'mean': config_dict.placeholder(tuple), 'std': config_dict.placeholder(tuple),
  })
  config.model = ml_collections.ConfigDict({'name': 'SmallConvNet', 'stages': ((16,), (32,), (64,), (128,)),
                                            'hidden': ()})
  config.train = ml_collections.ConfigDict({
      'optimizer': 'adamw', 'learning_rate': 3e-3, 'momentum': 0.9, 'weight_decay': 1e-4,
      'schedule': 'cosine', 'warmup_steps': 100, 'steps': 1500, 'batch_size': 64, 'max_shift': 4,
      'checkpoint_every': 500, 'log_every': 50,
  })
  config.crop_size = 56  # 10 crops of 56 px from the 64 px image (the paper's 224 of 256)
  config.pointing_tolerance = 2.0  # pixels at 64 px (TorchRay's 15 px at 224)

  if arg in ('gpu', 'tpu'):
    config.data.image_size = 96
    config.data.num_train = 50_000
    config.data.num_test = 2000
    config.crop_size = 84
    config.train.steps = 10_000
    config.train.batch_size = 256
    config.chunk_size = 500
    config.eval_chunk = 2000
    config.workers = 8
  elif arg != 'cpu':
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {arg!r}")
  return config
