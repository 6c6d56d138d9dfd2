"""Attribution methods compared: the paper's gradient and every baseline, with every metric.

  python experiments/compare_attributions.py --config configs/compare_attributions.py \
      --workdir runs/quickstart
  python experiments/compare_attributions.py --config configs/compare_attributions.py:cifar_resnet \
      --workdir runs/compare_cifar_resnet

`synthetic` (the default) is the quickstart's set and net: with the quickstart's workdir it resumes
from the trained net (otherwise it trains it first); 200 test images at 64 px. `cifar_resnet`: the
pretrained ResNet-20 of ../shared/data on the 150 CIFAR-mapped images of the ImageNet val sample, maps
of the 32 px input resized onto the 227 px photos for localisation and pointing. Writes
comparison.json / .md, comparison.png (methods x images), sanity.png and deletion_insertion.png.
Its methods' cost and figure: docs/guide/attribution.md.
"""

import importlib.util
import pathlib

from saliency_jax import defaults


def _sibling(name: str):
  """Another config file of this folder, as a module (config files are loaded by path, not imported)."""
  spec = importlib.util.spec_from_file_location(f'_config_{name}',
                                                pathlib.Path(__file__).with_name(f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = 'synthetic'):
  """arg: 'synthetic' or 'cifar_resnet', optionally ':cpu' / ':gpu' / ':tpu' (the base config's
  variant); a variant alone means the synthetic set."""
  data, _, variant = arg.partition(':') if arg not in ('cpu', 'gpu', 'tpu') else ('synthetic', '', arg)
  variant = variant or 'cpu'
  if data == 'synthetic':
    config = _sibling('quickstart').get_config(variant)
    config.compare = defaults.comparison()
  elif data == 'cifar_resnet':
    config = _sibling('cifar_resnet_imagenet_sample').get_config(f'resnet20:{variant}')
    config.compare = defaults.comparison()
    config.compare.num_images = 0  # all 150
    config.compare.methods.occlusion = {'patch': 6, 'stride': 2}  # 14 x 14 patch positions on 32 px
    config.compare.insertion_blur = 2.5
  else:
    raise ValueError(f"variant must be 'synthetic' or 'cifar_resnet' (optionally :cpu, :gpu, :tpu), "
                     f"got {arg!r}")
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.name = f'compare_attributions ({data})'
  return config
