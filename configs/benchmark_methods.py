"""Every attribution method against its anchor (Captum, pytorch-grad-cam's formulas, TorchRay, PAIR
saliency) on the same weights and images.

  python experiments/benchmark_methods.py --config configs/benchmark_methods.py --workdir runs/benchmark

A SmallConvNet (4 stages, random weights: the cost does not depend on them) and its PyTorch twin with the
same weights, `num_images` random images at `image_size` px; each method with the settings below on
both sides; two untimed calls each, then `repeats` rounds alternating the package and the anchor
(`fast_repeats`, each timed call after `settle` untimed ones, for the methods that take milliseconds;
`medium_repeats` for those under `medium_below` s);
medians and the speed-up (anchor / package) to benchmark_methods.json. The package's programs run under
`backward_options` (`xla.BACKWARD_OPTIONS`); each method's call is also timed, in the same rounds, under
the package's other set (`jax_ynn_convolutions`: the options before its default). The gradient's row also
times the same VJP jitted bare (no checks) under XLA's default options (`bare_default`) and the package's
two sets for its backward passes (`bare_no_ynn_convolutions`, `bare_ynn_convolutions`), to tell the
package's per-call checks and its compiler options from the program's time; `forward_options` times a
forward pass of `forward_batch` images under the same three sets, alternating.
Needs the torch and test extras (Captum, PAIR's saliency). Minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  # the backward passes' compiler options (`xla.BACKWARD_OPTIONS`): the package's default
  config.backward_options = 'no_ynn_convolutions'
  config.num_classes = 10
  config.stages = ((16,), (32,), (64,), (128,))
  config.num_images = 8
  config.image_size = 64
  config.repeats = 3
  # the methods that take milliseconds (both sides' timed look under fast_below s): more rounds, and
  # `settle` untimed calls before each timed one (PyTorch's idle threads spin for a while after its call)
  config.fast_below = 0.1
  config.fast_repeats = 31
  # the methods of a fraction of a second (both sides under medium_below s): more rounds than the slow ones;
  # their medians over 3 rounds moved by a third between runs
  config.medium_below = 1.0
  config.medium_repeats = 11
  config.settle = 2
  config.threads = 2  # PyTorch's intra-op threads (the machine's cores)
  config.forward_batch = 200  # the forward pass timed under each set of compiler options
  config.methods = {
      'gradient': {}, 'gradient_x_input': {}, 'smoothgrad': {'samples': 25},
      'integrated_gradients': {'steps': 32}, 'gradient_shap': {'samples': 25},
      'guided_backprop': {}, 'deconvnet': {}, 'grad_cam': {}, 'cam': {},
      'occlusion': {'patch': 8, 'stride': 4},
      'grad_cam_plus_plus': {}, 'xgrad_cam': {}, 'layer_cam': {}, 'hires_cam': {}, 'eigen_cam': {},
      'score_cam': {}, 'ablation_cam': {},
      'rise': {'num_masks': 1000},
      'blur_ig': {'steps': 100, 'max_sigma': 50.0}, 'guided_ig': {'steps': 200}, 'xrai': {'steps': 100},
      'deeplift': {}, 'lrp': {},
  }
  return config
