"""Gradient vs DeconvNet, paper Sect. 4 (saliency_jax/jobs/equivalence.py).

  python experiments/deconvnet_vs_gradient.py --config configs/deconvnet_vs_gradient.py \
      --workdir runs/deconvnet_vs_gradient
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'equivalence')
