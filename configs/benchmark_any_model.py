"""Saliency on a model called as a plain function (ReLU rules by program transformation) against the
same model taking the rules through `relu=`.

  python experiments/benchmark_any_model.py --config configs/benchmark_any_model.py --workdir runs/benchmark

The imported MobileNet v1 0.75 (`data_dir/imagenet-mobilenet`) at 224 px: the paper's protocol on
`num_images` random images (top-5 classes of 10 crops of 224 from 256 px, one forward and five
backward passes per image) with the gradient, guided backprop and DeconvNet rules, once with the
model itself and once with `lambda x: model(x)`, which hides its `relu` argument, so that the rules
are found in its traced program (`saliency_jax.rules`). Seconds per call (compiled once before
timing): the median of `repeats` alternating runs, and the ratio transformed / injected, to
benchmark_any_model.json. A few minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.data_dir = '../shared/data'
  config.num_images = 4
  config.image_size = 256
  config.crop_size = 224
  config.repeats = 5
  return config
