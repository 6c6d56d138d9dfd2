"""Weakly supervised localisation (paper Sect. 3.2) with the pretrained CIFAR ResNet-20 on real photos.

  python experiments/localise_imagenet_sample.py --config configs/localise_cifar_resnet.py \
      --workdir runs/localise_cifar_resnet

Minutes on 2 CPU cores. The 150 images of `data_dir/imagenet-val-sample` whose class maps
onto CIFAR-10: the saliency map of the true class at 32 px, resized onto the 227 px photo, then
every method of `methods` (the GraphCut pipeline in several settings and the baselines); GT-known
box accuracy (IoU >= 0.5 with a ground-truth box of the true class) per method, in
localisation.json / .md, and localisation.png. Measured result: see the README.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.data_dir = '../shared/data'
  config.sample = 'imagenet-val-sample'
  config.checkpoint = 'cifar10-resnet/resnet20-12fca82f.th'
  config.net_size = 32
  config.crop_size = 0  # 0: the whole 32 px image; e.g. 28: the 10-crop average
  config.chunk_size = 50
  config.num_images = 0  # 0: all (also caps the VOC images per set)
  config.workers = 2  # processes for the graph cuts
  config.num_figure = 6
  config.seed = 0
  # The segmentation stage alone against OpenCV's grabCut (needs opencv-python-headless), on these
  # VOC folders of data_dir, from surrogate maps (a bump over each box, plus uniform noise).
  config.voc_sets = ('voc-raccoon', 'voc-kangaroo')
  config.surrogate_noise = 0.5

  graphcut = {'method': 'graphcut'}  # the localise.Settings defaults: the paper's pipeline
  config.methods = ml_collections.ConfigDict({
      'graphcut': graphcut,
      'graphcut_grabcut_3': {**graphcut, 'iterations': 3},  # 3 GrabCut re-estimation rounds
      'graphcut_soft_seeds': {**graphcut, 'seeds': 'soft'},
      'graphcut_soft_seeds_grabcut_3': {**graphcut, 'seeds': 'soft', 'iterations': 3},
      'graphcut_fg_floor_50': {**graphcut, 'fg_floor': 0.5},
      'graphcut_4_connected': {**graphcut, 'connectivity': 4},
      'graphcut_gamma_50': {**graphcut, 'pairwise_weight': 50.0},  # GrabCut's gamma
      'graphcut_fg_quantile_80': {**graphcut, 'fg_quantile': 0.8},  # not the paper's 95%
      'threshold_15': {'method': 'threshold', 'threshold': 0.15},
      'threshold_20': {'method': 'threshold', 'threshold': 0.2},
      'full_image': {'method': 'full'},
      'centre': {'method': 'centre', 'centre_fraction': 0.5},
  })
  return config
