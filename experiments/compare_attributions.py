"""Attribution methods compared on the same images with the same metrics (saliency_jax/jobs/comparison.py).

  python experiments/compare_attributions.py --config configs/compare_attributions.py \
      --workdir runs/quickstart
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'comparison')
