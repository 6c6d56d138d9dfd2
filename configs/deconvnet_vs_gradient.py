"""Gradient vs DeconvNet (paper Sect. 4): the numerical proof, reconstructions, the sanity check.

  python experiments/deconvnet_vs_gradient.py --config configs/deconvnet_vs_gradient.py \
      --workdir runs/deconvnet_vs_gradient

Several minutes on CPU (run time: docs/experiments.md; training the SmallConvNet and the float64 VGG16
take most of it; `--config.proof.networks=small_random,paper` runs two of the six networks). Trains
a SmallConvNet on the synthetic set, loads the pretrained CIFAR ResNet-20 and the ImageNet MobileNet
v1 0.75 of `data_dir` (each skipped, and said so, when absent), then writes to the workdir:
  - equivalence.md / .json: per layer type (convolution, max-pooling, ReLU, dense) and per network
    (SmallConvNet random and trained, PaperConvNet, VGG16, CifarResNet-20 random and pretrained,
    MobileNet pretrained from the class score;
    several start layers, the strongest neuron of each image, and the top class), in float64 and
    float32: max |explicit DeconvNet - VJP with deconvnet_relu|, max |jax.grad - VJP with
    gradient_relu|, and at every ReLU the units where the two rules' VJPs differ on the same signal
    against the units where the forward and backward gates disagree; each row says whether it
    confirms the paper's claim;
  - relu_gates.md: those counts per ReLU layer;
  - reconstructions.png and the mean Spearman correlation of the three methods' maps;
  - sanity.png: cascading randomisation of the trained nets' weights, top-down;
  - relu6_clips in equivalence.json: per MobileNet clip, the units whose input reaches 6, where every
    rule (the DeconvNet's too) passes no signal back: the image then reaches the DeconvNet through
    the clips, as it does through max-pool switches (MobileNet has no max-pooling).
Measured result: docs/results/deconvnet.md.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.seed = 0
  config.data_dir = '../shared/data'
  # Tolerances on relative differences (max |a - b| / max |b|): summation order only.
  config.tolerance_float64 = 1e-10
  config.tolerance_float32 = 1e-4

  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.image_size = 64
  config.synthetic.num_train = 2000
  config.synthetic.num_test = 200
  config.synthetic.stages = ((16,), (32,), (64,), (128,))
  config.synthetic.steps = 1000
  config.synthetic.batch_size = 64
  config.synthetic.learning_rate = 3e-3
  config.synthetic.weight_decay = 1e-4

  config.resnet = ml_collections.ConfigDict()
  config.resnet.checkpoint = 'cifar10-resnet/resnet20-12fca82f.th'  # relative to data_dir
  config.resnet.sample = 'imagenet-val-sample'

  config.proof = ml_collections.ConfigDict()
  config.proof.num_images = 4  # per network
  config.proof.paper_size = 112  # PaperConvNet input side (224 in the paper; smaller on CPU)
  config.proof.paper_classes = 1000
  config.proof.vgg16_size = 224
  config.proof.vgg16_images = 1
  # The networks of the proof (the pretrained ResNet only when data_dir holds it).
  config.proof.networks = ('small_random', 'small_trained', 'paper', 'vgg16', 'resnet_pretrained',
                           'resnet_random', 'mobilenet')
  config.proof.mobilenet_images = 2  # MobileNet at 224 px in float64, from the class score only
  # True: reconstruct from the class scores only; else also from a middle ReLU, the last max-pool
  # and the last ReLU (`equivalence.start_layers`).
  config.proof.scores_only = False

  # The imported ImageNet MobileNet v1 0.75 (skipped, and said so, when absent): in the proof, the
  # map similarity, the sanity check and the relu6 clip counts, on the ImageNet val sample.
  config.mobilenet = ml_collections.ConfigDict()
  config.mobilenet.checkpoint = 'imagenet-mobilenet'  # relative to data_dir
  config.mobilenet.sample = 'imagenet-val-sample'
  config.mobilenet.num_images = 64

  config.num_maps = 64  # images whose three maps are compared (Spearman)
  config.num_sanity = 16  # images of the sanity check
  config.num_figure = 4  # images per trained network in reconstructions.png
  return config
