"""Real CIFAR-10 ResNets on real ImageNet photos: import check against PyTorch, and mapped top-1.

  PYTHONPATH=. python experiments/evaluate_cifar_resnets.py \
      --config configs/cifar_resnet_import_check.py --workdir runs/cifar_resnets

About 2 minutes on 2 CPU cores (mostly PyTorch's float64 convolutions); a rerun with the same
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

Measured (2 CPU cores, ResNet-20 / ResNet-32):
  - logits max |JAX - torch|: float32 1.1e-5 / 1.3e-5 (max |logit| 34.3 / 32.5), float64
    3.2e-14 / 2.8e-14; no argmax disagreement.
  - input gradients max |JAX - torch|: float64 8.4e-15 / 9.8e-15 (max |grad| 7.0 / 9.4);
    float32 3.6e-2 / 1.4e-2, from 2 / 4 of the 150 images only (the rest <= 4.3e-6 / 7.2e-6,
    median 1.9e-6): ReLU flips, each with a ReLU input within 1.4e-7 of 0 in float64 and one of
    the two float32 gradients equal to the float64 one to 1.4e-6 (listed in the JSON).
  - top-1 on the 150 mapped images: 68.0% (102) / 68.7% (103); majority class (dog) 44.7%.
    Per class (N): automobile 6/8, 6/8; bird 35/54, 38/54; cat 2/2, 2/2; dog 44/67, 45/67;
    horse 1/2, 1/2; ship 13/16, 10/16; truck 1/1, 1/1. Most common confusions: dog -> cat,
    bird -> airplane / frog, ship -> airplane.
These are NOT CIFAR-10 accuracies: ImageNet photos squashed to 227x227 then shrunk to 32x32,
classes mapped by WordNet, 7 of the 10 classes present (no airplane, deer or frog image), a
distribution dominated by dogs (67) and birds (54).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
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
