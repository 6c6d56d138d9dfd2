"""Saliency speed benchmark: JAX (this library) against PyTorch autograd and Captum, same weights.

  PYTHONPATH=. python experiments/benchmark_saliency.py --config configs/benchmark_saliency.py \
      --workdir runs/benchmark

Minutes on 2 CPU cores (VGG16 takes most of it; `--config.models="('small_convnet',)"` is
quick). For each model, on one batch of 10 images (one image's 10 crops):
  - JAX: forward (`saliency.scores`), saliency (`saliency.saliency_maps`: one forward + one
    backward) and the paper's top-5 protocol (`saliency.top_k_saliency`, k=5: one forward + five
    backward passes); compile time (first call) reported separately;
  - PyTorch (the `torch_reference` twin holding the same weights, eval mode): forward under
    no_grad, autograd saliency (one backward of the selected scores' sum, max over channels of
    |grad|), Captum `Saliency.attribute(abs=True)`, and Captum's top-5 as a Captum user runs it
    (one ranking forward, then one `attribute` call per class rank, each repeating the forward);
  - the agreement of the JAX and PyTorch maps (max abs difference / max abs map).
Medians over `repeats` interleaved runs after `warmup` runs. Writes benchmark_saliency.json to the
workdir and prints a markdown table. Goals: JAX saliency / forward <= 2.5, JAX saliency images/s
>= 1.3 x Captum's. Not kept in results/ yet (docs/results/checkpoints.md).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 10  # one image's 10 crops (paper Sect. 3.1 protocol)
  config.top_k = 5  # the paper's top-5 protocol
  config.float64_check_images = 2  # JAX vs PyTorch maps also compared in float64 on this many images
  config.torch_threads = 2  # torch.set_num_threads; the machine's cores (XLA:CPU uses all of them)
  # > 1: split the CPU into this many XLA devices and shard the batch over them ('data' axis);
  # 0 or 1: JAX's default single CPU device.
  config.host_devices = 0
  # Which models to run; `--config.models="('vgg16',)"` or `--config.models=vgg16,small_convnet`.
  config.models = ('small_convnet', 'vgg16', 'cifar_resnet20')

  config.small_convnet = ml_collections.ConfigDict()
  config.small_convnet.image_size = 64
  config.small_convnet.num_classes = 10
  config.small_convnet.stages = ((16,), (32,), (64,), (128,))
  config.small_convnet.warmup = 3  # untimed calls of every measurement before the timed ones
  config.small_convnet.repeats = 30
  config.small_convnet.settle = 1  # untimed calls right before each timed one (`timing.interleaved`)

  config.vgg16 = ml_collections.ConfigDict()
  config.vgg16.image_size = 224
  config.vgg16.num_classes = 1000
  config.vgg16.warmup = 1
  config.vgg16.repeats = 5
  config.vgg16.settle = 0  # calls of seconds: thread wake-up effects (milliseconds) do not matter

  config.cifar_resnet20 = ml_collections.ConfigDict()
  config.cifar_resnet20.image_size = 32
  config.cifar_resnet20.depth = 20
  config.cifar_resnet20.num_classes = 10
  # Real weights when the file exists (else the twin's random init); relative to the repo root.
  config.cifar_resnet20.checkpoint = '../shared/data/cifar10-resnet/resnet20-12fca82f.th'
  config.cifar_resnet20.warmup = 3
  config.cifar_resnet20.repeats = 30
  config.cifar_resnet20.settle = 1

  # MobileNet v1 0.75 for ImageNet (TF.js layers model, configs/ilsvrc_mobilenet_sample.py); run with
  # `--config.models=mobilenet` (docs/results/checkpoints.md, when kept); relative to the repo root.
  config.mobilenet = ml_collections.ConfigDict()
  config.mobilenet.image_size = 224
  config.mobilenet.num_classes = 1000
  config.mobilenet.path = '../shared/data/imagenet-mobilenet'
  config.mobilenet.warmup = 1
  config.mobilenet.repeats = 5
  config.mobilenet.settle = 0
  return config
