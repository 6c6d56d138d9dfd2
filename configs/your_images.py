"""Your own photos explained by a pretrained net: top-k classes, maps, overlays, boxes (no annotations).

  python experiments/explain_images.py --config configs/your_images.py --workdir runs/your_images

By default the real ImageNet MobileNet (../shared/data/imagenet-mobilenet) on the photos of
../shared/data/imagenet-val-sample/images (any folder of JPEG / PNG: --config.data.data_dir=...; labels
optional: --config.data.labels=subfolders, or a CSV of image,label rows); each photo squashed to 256 px,
its top-5 classes by 10-crop score, their gradient maps (Sect. 3.1) and Grad-CAM maps at conv_pw_12, and
the boxes of the paper's GraphCut, of GraphCut on the Grad-CAM maps and of a threshold box, in the photo's
own pixels. Another net: --config.checkpoint.kind=python --config.checkpoint.path=my_model.py:build (a
function returning any JAX callable, or (callable, {'mean', 'std'})), with --config.num_classes and
--config.data.mean / std; or kind cifar_resnet / torchvision_vgg16 with a PyTorch checkpoint. Cost on 2 CPU
cores, measured once with --config.num_images=24 --config.eval_chunk=8: 21 s for the 24 photos, compile
included (maps 12 s, boxes 7 s, files 3 s; summary.json 'seconds').
"""

import ml_collections

from saliency_jax import defaults


def get_config():
  config = defaults.images_job()
  config.name = 'your_images'
  config.num_classes = 1000
  config.class_names_file = '../shared/data/imagenet-val-sample/synset_words.txt'
  config.data = ml_collections.ConfigDict({
      'name': 'images', 'data_dir': '../shared/data/imagenet-val-sample/images', 'labels': '',
      'image_size': 256,  # each photo squashed to this side, then 10 crops of crop_size
      'mean': (0.5, 0.5, 0.5), 'std': (0.5, 0.5, 0.5),  # MobileNet's x / 127.5 - 1
  })
  config.checkpoint = ml_collections.ConfigDict({'kind': 'tfjs_layers',
                                                 'path': '../shared/data/imagenet-mobilenet'})
  config.top_k = 5
  config.crop_size = 224  # 10-crop scores and maps (0: the whole photo, one map)
  config.chunk_size = 8
  config.sequential_maps = True  # faster on CPU (saliency.each); False on accelerators
  config.eval_chunk = 64
  config.workers = 2
  config.maps = ml_collections.ConfigDict({'grad_cam': {'method': 'grad_cam', 'layer': 'conv_pw_12_relu'}})
  standard = defaults.localise_methods()
  config.localise = ml_collections.ConfigDict({
      'graphcut': standard['graphcut'],
      'grad_cam_graphcut': {'method': 'graphcut', 'fg_quantile': 0.9, 'map': 'grad_cam'},
      'grad_cam_threshold_25': {'method': 'threshold', 'threshold': 0.25, 'map': 'grad_cam'},
  })
  return config
