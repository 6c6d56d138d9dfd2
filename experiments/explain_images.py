"""Your own photos: top-k classes, maps, overlays and boxes from a pretrained net (no training, no
annotations).

  python experiments/explain_images.py --config configs/your_images.py --workdir runs/your_images
  python experiments/explain_images.py --config configs/your_images.py --workdir runs/mine \
      --config.data.data_dir=/path/to/photos
  python experiments/explain_images.py --help --config configs/your_images.py    # the config's fields
"""

from saliency_jax import host

if __name__ == '__main__':  # first, before JAX is imported (host.py)
  host.keep_freed_memory()

from saliency_jax import cli


def main(config, workdir):
  # Imported here: the graph cuts' worker processes import this script and start faster without JAX.
  from saliency_jax.jobs import images
  summary = images.run(config, workdir)
  if summary['accuracy']:
    a = summary['accuracy']
    print(', '.join(f'{key} {value:.3f}' if isinstance(value, float) else f'{key} {value}'
                    for key, value in a.items()))
  print(f'predictions.csv, boxes.csv, summary.json and images/ (json, npz, png per photo) in {workdir}')


if __name__ == '__main__':
  cli.run(__doc__, main)
