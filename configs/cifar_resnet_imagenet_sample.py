"""The main job with a real pretrained net: akamaster's CIFAR-10 ResNet on real ImageNet photos.

  python experiments/reproduce.py --config configs/cifar_resnet_imagenet_sample.py \
      --workdir runs/cifar_resnet_imagenet_sample

Minutes on 2 CPU cores. No training: the ResNet-20 of `data_dir/cifar10-resnet` (`:resnet32`
for ResNet-32) on the 150 images of `data_dir/imagenet-val-sample` whose class maps onto CIFAR-10
(through `saliency_jax/data/imagenet_cifar10.tsv`), shrunk to 32 px (domain shift: these are not
CIFAR-10 accuracies); 10-crop maps (28 px crops) of the top-5 and the true class, resized onto the
227 px photos and localised there; GT-known box accuracy and ILSVRC top-1 / top-5 localisation
error. Measured result: see the README. `:cpu` / `:gpu` / `:tpu` change nothing but workers here.
"""

import ml_collections

from saliency_jax import defaults

CHECKPOINTS = {'resnet20': ('resnet20-12fca82f.th', 20), 'resnet32': ('resnet32-d509ac18.th', 32)}


def get_config(arg: str = 'resnet20'):
  net, _, variant = arg.partition(':') if arg not in ('cpu', 'gpu', 'tpu') else ('resnet20', '', arg)
  variant = variant or 'cpu'
  if net not in CHECKPOINTS:
    raise ValueError(f'net must be one of {sorted(CHECKPOINTS)}, got {net!r}')
  if variant not in ('cpu', 'gpu', 'tpu'):
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {variant!r}")
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
  return config
