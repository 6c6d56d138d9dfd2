"""Real CIFAR-10 ResNets on real ImageNet photos: import check against PyTorch, and mapped top-1.

  PYTHONPATH=. python experiments/evaluate_cifar_resnets.py \
      --config configs/cifar_resnet_import_check.py --workdir runs/cifar_resnets

Minutes on 2 CPU cores (mostly PyTorch's float64 convolutions); a rerun with the same
config resumes from the JSON (delete it to recompute). For each checkpoint in
`data_dir/cifar10-resnet` (akamaster's ResNet-20 / ResNet-32, published CIFAR-10 test error
8.27% / 7.37%): load it with `weights.load_cifar_resnet`, and its PyTorch twin
(`torch_reference.TorchCifarResNet`, the same file read by `torch.load`, strict, eval mode); on
the 150 images of `data_dir/imagenet-val-sample` whose class maps onto CIFAR-10 (label = the first object's
WordNet id through `saliency_jax/data/imagenet_cifar10.tsv`), resized from the 227x227 squashed
images to 32x32 with PIL bilinear (antialiased when shrinking), /255, normalised with
`weights.CIFAR10_MEAN / STD`:
  - logits, and input gradients of the mapped class's score, of JAX vs PyTorch autograd, in
    float32 and in float64 (jax x64 + `models.cast`, torch `.double()`, same input values);
  - 10-way top-1 accuracy against the mapped class, per class, with the confusion matrix.
Writes `cifar_resnets.json` to the workdir and prints a markdown table.

Measured result: docs/results/checkpoints.md (generated from results/cifar_resnets.json).
These are NOT CIFAR-10 accuracies: ImageNet photos squashed to 227x227 then shrunk to 32x32,
classes mapped by WordNet, 7 of the 10 classes present (no airplane, deer or frog image), a
distribution dominated by dogs and birds.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  # Relative to the working directory (the repository root); `--config.data_dir=/path/to/data`.
  config.data_dir = '../shared/data'
  config.checkpoints = ('resnet20-12fca82f.th', 'resnet32-d509ac18.th')  # in data_dir/cifar10-resnet
  config.sample = 'imagenet-val-sample'  # in data_dir
  config.image_size = 32  # CIFAR-10's
  config.resample = 'bilinear'  # PIL filter for 227 -> 32 (PIL filters are antialiased when shrinking)
  # Float32 gradient differences (JAX vs torch) above this are listed per image, with the float64
  # reference; typical round-off is ~2e-6 for gradients up to ~10.
  config.grad_outlier_atol = 1e-4
  config.chunk_size = 50  # images per JAX call
  config.torch_threads = 2  # torch.set_num_threads: the machine's cores
  return config
