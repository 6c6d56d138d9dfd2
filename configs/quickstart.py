"""Quickstart: train a SmallConvNet on the embedded synthetic set and map its saliency.

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart

About 2-3 minutes on 2 CPU cores. Generates shapes (5 classes) pasted on scikit-image photos
(train and test on disjoint photos), trains the net with AdamW, computes the 10-crop top-1
saliency maps of the test images (paper Sect. 3.1) and writes metrics.json, report.md and
saliency.png to the workdir. Measured result: see the README's results table.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 64
  config.object_scale = (0.3, 0.6)  # object diameter as a fraction of the image side
  config.num_train = 4000
  config.num_test = 500
  config.model = ml_collections.ConfigDict({'stages': ((16,), (32,), (64,), (128,)), 'hidden': ()})
  config.steps = 1500
  config.batch_size = 64
  config.learning_rate = 3e-3
  config.weight_decay = 1e-4
  config.crop_size = 56  # 10 crops of 56 px from the 64 px image (the paper's 224 of 256)
  config.chunk_size = 100  # images per saliency call
  config.pointing_tolerance = 2.0  # pixels, at 64 px (TorchRay's 15 px at 224)
  config.num_figure = 8
  return config
