"""The main job with a real pretrained net: akamaster's CIFAR-10 ResNet on real ImageNet photos.

  python experiments/reproduce.py --config configs/cifar_resnet_imagenet_sample.py \
      --workdir runs/cifar_resnet_imagenet_sample

Minutes on 2 CPU cores. No training: the ResNet-20 of `data_dir/cifar10-resnet` (`:resnet32`
for ResNet-32) on the 150 images of `data_dir/imagenet-val-sample` whose class maps onto CIFAR-10
(through `saliency_jax/data/imagenet_cifar10.tsv`), shrunk to 32 px (domain shift: these are not
CIFAR-10 accuracies); 10-crop maps (28 px crops) of the top-5 and the true class, resized onto the
227 px photos and localised there; GT-known box accuracy and ILSVRC top-1 / top-5 localisation
error. Not kept in results/ yet. `:cpu` / `:gpu` / `:tpu` change nothing but workers here.

`:variants` (e.g. `resnet20:variants`) localises the maps of the whole 32 px image (no crops) with
every GraphCut variant the paper leaves open (GrabCut rounds, soft seeds, a seed floor,
4-connectivity, another pairwise weight, another foreground quantile) beside the baselines.
"""

import ml_collections

from saliency_jax import defaults

CHECKPOINTS = {'resnet20': ('resnet20-12fca82f.th', 20), 'resnet32': ('resnet32-d509ac18.th', 32)}


def get_config(arg: str = 'resnet20'):
  net, variant, variants = 'resnet20', 'cpu', False
  for token in arg.split(':'):
    if token in CHECKPOINTS:
      net = token
    elif token in ('cpu', 'gpu', 'tpu'):
      variant = token
    elif token == 'variants':
      variants = True
    else:
      raise ValueError(f"unknown option {token!r}: a net of {sorted(CHECKPOINTS)}, 'cpu', 'gpu', 'tpu' or "
                       "'variants'")
  file, depth = CHECKPOINTS[net]
  config = defaults.main_job()
  config.name = f'cifar_resnet_imagenet_sample ({net})'
  config.num_classes = 10
  config.class_names = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                        'truck')
  config.data = ml_collections.ConfigDict({
      'name': 'ilsvrc', 'data_dir': '../shared/data', 'folder': 'imagenet-val-sample', 'label_map': 'cifar10',
      'image_size': 32, 'skip_bad': False, 'part': 'all',
      'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),  # akamaster's normalisation
  })
  config.model = ml_collections.ConfigDict({'name': 'CifarResNet', 'depth': depth})
  config.checkpoint = ml_collections.ConfigDict({'kind': 'cifar_resnet',
                                                 'path': f'../shared/data/cifar10-resnet/{file}'})
  config.crop_size = 28
  config.localise_size = 227  # the sample's photos
  config.chunk_size = 50
  config.workers = 8 if variant != 'cpu' else 2
  if variants:
    config.crop_size = 0  # the whole 32 px image
    graphcut = {'method': 'graphcut'}  # the localise.Settings defaults: the paper's pipeline
    config.localise = ml_collections.ConfigDict({
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
