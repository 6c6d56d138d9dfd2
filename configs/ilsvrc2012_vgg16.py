"""The paper's ILSVRC protocol with VGG16: top-5 classes, 10-crop saliency, GraphCut boxes, ILSVRC error.

  python experiments/reproduce.py --config configs/ilsvrc2012_vgg16.py --workdir runs/ilsvrc2012_vgg16 \
      --config.checkpoint.path=/path/to/vgg16-397923af.pth --config.data.data_dir=/path/to/imagenet

Needs what this repository cannot ship: torchvision's VGG16 ImageNet weights (a `state_dict` file;
the `torch` extra reads it) and the ILSVRC-2012 validation set with its boxes, either as a folder
`data_dir/folder` with images/, annotations/ (ILSVRC XML) and synset_words.txt (the layout of
../shared/data/imagenet-val-sample, which works as a 650-image smoke test), or through tfds
(`--config.data.name=tfds`, prepared `imagenet2012` plus `boxes_dir` of the val XMLs). Images are
resized to 256 px, maps are the 10-crop average of 224 px crops (the paper's Sect. 3.1), each of
the top-5 classes is localised with the GraphCut pipeline (Sect. 3.2) and the baselines, and the
ILSVRC top-5 localisation error is reported (the paper: 46.4% with its own net). Expected cost
on one GPU: about an hour for the 50,000 images; on 2 CPU cores several seconds an image.
Not run here (no VGG16 weights in ../shared/data).
"""

import ml_collections

from saliency_jax import defaults


def get_config(arg: str = 'gpu'):
  if arg not in ('cpu', 'gpu', 'tpu'):
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {arg!r}")
  config = defaults.main_job()
  config.name = 'ilsvrc2012_vgg16'
  config.num_classes = 1000
  config.data = ml_collections.ConfigDict({
      'name': 'ilsvrc', 'data_dir': '../shared/data', 'folder': 'imagenet-val-sample', 'label_map': '',
      'image_size': 256, 'skip_bad': True, 'part': 'all',
      'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),  # torchvision's normalisation
      # tfds alternative: name 'tfds', dataset 'imagenet2012', test_split 'validation', boxes_dir
  })
  config.model = ml_collections.ConfigDict({'name': 'VGG16'})
  config.checkpoint = ml_collections.ConfigDict({'kind': 'torchvision_vgg16', 'path': '~/vgg16-397923af.pth'})
  config.crop_size = 224
  config.eval_crop = 224  # accuracy on the centred 224 px crop
  config.top_k = 5
  config.chunk_size = 32 if arg != 'cpu' else 4
  config.eval_chunk = 640  # a multiple of chunk_size
  config.workers = 16 if arg != 'cpu' else 2
  config.num_deconvnet = 4
  return config
