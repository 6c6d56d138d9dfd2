"""Your own photos: top-k classes, maps, overlays and boxes from a pretrained net (no training, no
annotations; saliency_jax/jobs/images.py).

  python experiments/explain_images.py --config configs/your_images.py --workdir runs/your_images
  python experiments/explain_images.py --config configs/your_images.py --workdir runs/mine \
      --config.data.data_dir=/path/to/photos
  python experiments/explain_images.py --help --config configs/your_images.py    # the config's fields
"""

from saliency_jax import cli

if __name__ == '__main__':
  cli.main(__doc__, 'images')
