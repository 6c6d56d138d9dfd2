"""Real CIFAR-10 ResNets: JAX import vs PyTorch, and top-1 on ImageNet photos mapped to CIFAR-10
(configs/cifar_resnet_import_check.py; saliency_jax/jobs/cifar_resnets.py).

  python experiments/evaluate_cifar_resnets.py --config configs/cifar_resnet_import_check.py \
      --workdir runs/cifar_resnets

Writes cifar_resnets.json to the workdir (atomically, after every checkpoint) and prints a markdown table.
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'cifar_resnets')
