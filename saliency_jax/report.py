"""Run outputs: figures and atomically written JSON / text."""

import json
import os
import pathlib
import tempfile

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: readers never see half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str | os.PathLike, data) -> None:
  write_atomic(path, json.dumps(data, indent=2, default=_to_builtin) + '\n')


def _to_builtin(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'not JSON serialisable: {type(x).__name__}')


def saliency_figure(path: str | os.PathLike, images, maps, titles=None, masks=None, *,
                    dpi: int = 100) -> None:
  """A grid like the paper's Fig. 2: one row per image (image | saliency map | overlay).

  images uint8 [N, H, W, 3]; maps [N, H, W] (each shown scaled to its own maximum);
  masks optional bool [N, H, W], drawn as a contour on the overlay.
  """
  n = len(images)
  fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
  for i in range(n):
    m = np.asarray(maps[i], np.float32)
    m = m / m.max() if m.max() > 0 else m
    axes[i, 0].imshow(images[i])
    axes[i, 1].imshow(m, cmap='gray')
    axes[i, 2].imshow(images[i])
    axes[i, 2].imshow(m, cmap='jet', alpha=0.5)
    if masks is not None:
      axes[i, 2].contour(masks[i], levels=[0.5], colors='w', linewidths=0.8)
    if titles is not None:
      axes[i, 0].set_title(titles[i], fontsize=8)
    for ax in axes[i]:
      ax.axis('off')
  axes[0, 1].set_title('saliency max_c |dS/dI|', fontsize=8)
  axes[0, 2].set_title('overlay', fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def localisation_figure(path: str | os.PathLike, images, maps, seeds, results, gt_boxes, titles=None, *,
                        dpi: int = 100) -> None:
  """The paper's Fig. 3, one row per image: image | saliency | seeds | mask | box vs ground truth.

  seeds: per image (foreground bool [H, W], background bool [H, W]); results: `localise.Result`s;
  gt_boxes: per image [M, 4]. Seeds: foreground red, background blue; boxes: ours yellow, truth green.
  """
  n = len(images)
  fig, axes = plt.subplots(n, 5, figsize=(10, 2 * n), squeeze=False)
  for i in range(n):
    m = np.asarray(maps[i], np.float32)
    fg, bg = seeds[i]
    overlay = np.full(m.shape + (3,), 0.5, np.float32)
    overlay[fg], overlay[bg] = (1.0, 0.1, 0.1), (0.1, 0.3, 1.0)
    panels = [images[i], m / m.max() if m.max() > 0 else m, overlay, results[i].mask, images[i]]
    for ax, panel in zip(axes[i], panels):
      ax.imshow(panel, cmap='gray' if np.ndim(panel) == 2 else None)
      ax.axis('off')
    for box, colour in [(results[i].box, 'yellow')] + [(b, 'lime') for b in np.asarray(gt_boxes[i])]:
      x0, y0, x1, y1 = box
      axes[i, 4].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                         edgecolor=colour, linewidth=1.2))
    if titles is not None:
      axes[i, 0].set_title(titles[i], fontsize=8)
  for ax, name in zip(axes[0, 1:], ('saliency', 'seeds (fg red, bg blue)', 'GraphCut mask', 'box / truth')):
    ax.set_title(name, fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
