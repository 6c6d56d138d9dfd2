"""Run outputs: figures and atomically written JSON / text."""

import json
import os
import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from saliency_jax import store  # noqa: E402


def with_interval(value: float, interval=None, spec: str = '.3f') -> str:
  """A number and its [low, high] interval in format `spec`: '0.344 [0.293, 0.396]'.

  Args:
    value: the number.
    interval: (low, high), or None for the number alone (results kept without one).
    spec: the format of each number.

  Returns:
    The text.
  """
  text = format(value, spec)
  return f'{text} [{format(interval[0], spec)}, {format(interval[1], spec)}]' if interval else text


def cell(m: dict, key: str) -> str:
  """A metric of a result with its interval, where it has one (`with_interval`).

  Args:
    m: a result, {key: value, 'intervals': {key: [low, high]}}.
    key: the metric.

  Returns:
    The text.
  """
  return with_interval(m[key], m.get('intervals', {}).get(key))


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes text durably through a temporary file and a rename (`store.write_atomic`).

  Readers never see half a file.

  Args:
    path: the file to write.
    text: its content.
  """
  store.write_atomic(path, text)


def write_json(path: str | os.PathLike, data) -> None:
  """Writes data as indented JSON, atomically (`write_atomic`).

  Args:
    path: the file to write.
    data: JSON-serialisable data (NumPy scalars and arrays are converted).
  """
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

  Args:
    path: the file to write.
    images: uint8 [N, H, W, 3].
    maps: [N, H, W], each shown scaled to its own maximum.
    titles: one per image, or None.
    masks: bool [N, H, W] drawn as a contour on the overlay, or None.
    dpi: the figure's resolution.
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
  _save(fig, path, dpi)


def localisation_figure(path: str | os.PathLike, images, maps, seeds, results, gt_boxes, titles=None, *,
                        dpi: int = 100) -> None:
  """The paper's Fig. 3, one row per image: image | saliency | seeds | mask | box vs ground truth.

  Seeds: foreground red, background blue; boxes: ours yellow, truth green.

  Args:
    path: the file to write.
    images: uint8 [N, H, W, 3].
    maps: [N, H, W].
    seeds: per image (foreground bool [H, W], background bool [H, W]).
    results: `localise.Result`s.
    gt_boxes: per image [M, 4].
    titles: one per image, or None.
    dpi: the figure's resolution.
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
  _save(fig, path, dpi)


def failure_figure(path: str | os.PathLike, rows: dict, *, dpi: int = 100) -> None:
  """Typical localisation failures, one row per method.

  Each example: the photo with the guessed box of a right class (yellow; none when no guess had a right
  class) and the truth (green), and the map that box was cut from.

  Args:
    path: the file to write.
    rows: {method: [(image uint8 [H, W, 3], map [H, W], guessed box or None, ground-truth boxes [M, 4],
      title)]}.
    dpi: the figure's resolution.
  """
  names = list(rows)
  cols = max(len(v) for v in rows.values())
  fig, axes = plt.subplots(len(names), 2 * cols, figsize=(2.2 * cols * 2, 2.4 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    for c in range(cols):
      photo_ax, map_ax = axes[r, 2 * c], axes[r, 2 * c + 1]
      photo_ax.axis('off')
      map_ax.axis('off')
      if c >= len(rows[name]):
        continue
      image, m, box, gt, title = rows[name][c]
      m = np.asarray(m, np.float32)
      photo_ax.imshow(image)
      map_ax.imshow(m / m.max() if m.max() > 0 else m, cmap='jet')
      boxes = [(b, 'lime') for b in np.asarray(gt)] + ([(box, 'yellow')] if box is not None else [])
      for (x0, y0, x1, y1), colour in boxes:
        photo_ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                         edgecolor=colour, linewidth=1.2))
      photo_ax.set_title(f'{name}: {title}' if c == 0 else title, fontsize=7)
  _save(fig, path, dpi)


BOX_COLOURS = ((255, 235, 0), (0, 255, 120), (255, 60, 200), (0, 200, 255), (255, 140, 0), (255, 255, 255))


def overlay_strip(path: str | os.PathLike, photo, maps, titles, boxes: dict, *, height: int = 224) -> None:
  """One PNG: the photo under each of its maps, titled, with each method's boxes; drawn with PIL.

  Each map is scaled to its own maximum, in jet colours at half opacity; each method's boxes in a colour
  of its own (`BOX_COLOURS`, in the order given) and a legend under the row. Milliseconds per image.

  Args:
    path: the file to write.
    photo: uint8 [H, W, 3].
    maps: [k, h, w], any size.
    titles: one per map.
    boxes: {name: [k, 4] (x0, y0, x1, y1) in the photo's pixels}.
    height: each panel's height in pixels.
  """
  from PIL import Image, ImageDraw
  photo = np.asarray(photo, np.uint8)
  scale = height / photo.shape[0]
  width = max(1, round(photo.shape[1] * scale))
  base = np.asarray(Image.fromarray(photo).resize((width, height), Image.Resampling.BILINEAR), np.float32)
  jet = plt.get_cmap('jet')
  legend = 14 * len(boxes)
  strip = Image.new('RGB', (width * len(maps), height + 16 + legend), (0, 0, 0))
  draw = ImageDraw.Draw(strip)
  for j, m in enumerate(maps):
    m = Image.fromarray(np.asarray(m, np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    m = np.asarray(m)
    m = m / m.max() if m.max() > 0 else m
    panel = 0.5 * base + 0.5 * 255 * jet(m)[..., :3]
    strip.paste(Image.fromarray(np.clip(panel, 0, 255).astype(np.uint8)), (j * width, 16))
    draw.text((j * width + 2, 2), titles[j], fill=(255, 255, 255))
    for b, colour in zip(boxes.values(), BOX_COLOURS):
      x0, y0, x1, y1 = (float(v) * scale for v in b[j])
      draw.rectangle((j * width + x0, 16 + y0, j * width + x1 - 1, 16 + y1 - 1), outline=colour, width=2)
  for r, (name, colour) in enumerate(zip(boxes, BOX_COLOURS)):
    draw.text((2, height + 18 + 14 * r), f'box: {name}', fill=colour)
  path = pathlib.Path(path)
  store.write_atomic(path, writer=lambda f: strip.save(f, format='PNG'))


def _save(fig, path, dpi: int) -> None:
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def class_model_figure(path: str | os.PathLike, images, titles, *, columns: int = 5, dpi: int = 100) -> None:
  """A grid like the paper's Fig. 1: one class model image per class.

  Args:
    path: the file to write.
    images: uint8 [K, H, W, 3].
    titles: one per class.
    columns: images per row.
    dpi: the figure's resolution.
  """
  k = len(images)
  rows = -(-k // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.1 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, image, title in zip(axes.ravel(), images, titles):
    ax.imshow(image)
    ax.set_title(title, fontsize=8)
  _save(fig, path, dpi)


def objective_figure(path: str | os.PathLike, objective, scores, names, real_max=None, *,
                     dpi: int = 100) -> None:
  """Class model ascent: the objective S_c - lambda ||I||^2 and the score S_c per step and class.

  Args:
    path: the file to write.
    objective: [K, steps].
    scores: [K, steps].
    names: the K classes' names.
    real_max: [K], the best score of a real test image of each class (dashed), or None.
    dpi: the figure's resolution.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
  colours = plt.cm.tab10(np.arange(len(names)) % 10)
  for i, name in enumerate(names):
    axes[0, 0].plot(objective[i], color=colours[i], label=name)
    axes[0, 1].plot(scores[i], color=colours[i], label=name)
    if real_max is not None and np.isfinite(real_max[i]):
      axes[0, 1].axhline(real_max[i], color=colours[i], linestyle='--', linewidth=0.8)
  axes[0, 0].set_title('objective S_c(I) - lambda ||I||^2', fontsize=9)
  axes[0, 1].set_title('class score S_c(I) (dashed: best real test image of the class)', fontsize=9)
  for ax in axes[0]:
    ax.set_xlabel('step')
  axes[0, 1].legend(fontsize=7, ncol=2)
  _save(fig, path, dpi)


def methods_figure(path: str | os.PathLike, images, maps: dict, titles=None, masks=None, *,
                   dpi: int = 100) -> None:
  """Methods x images: one row per image, the image then each method's map scaled to its own maximum.

  Args:
    path: the file to write.
    images: uint8 [N, H, W, 3].
    maps: {method: [N, H, W]}.
    titles: one per image, or None.
    masks: bool [N, H, W] drawn as a contour on the image, or None.
    dpi: the figure's resolution.
  """
  n, names = len(images), list(maps)
  fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.6 * (len(names) + 1), 1.7 * n), squeeze=False)
  for i in range(n):
    axes[i, 0].imshow(images[i])
    if masks is not None:
      axes[i, 0].contour(masks[i], levels=[0.5], colors='w', linewidths=0.8)
    if titles is not None:
      axes[i, 0].set_ylabel(titles[i], fontsize=7)
    for j, name in enumerate(names):
      m = np.nan_to_num(np.asarray(maps[name][i], np.float32))
      axes[i, j + 1].imshow(m / m.max() if m.max() > 0 else m, cmap='gray')
    for ax in axes[i]:
      ax.set_xticks([])
      ax.set_yticks([])
  for j, name in enumerate(['image'] + names):
    axes[0, j].set_title(name.replace('_', ' '), fontsize=7)
  _save(fig, path, dpi)


def curves_figure(path: str | os.PathLike, panels: dict, *, dpi: int = 100) -> None:
  """Line plots side by side.

  Args:
    path: the file to write.
    panels: {title: (x_label, x [T] or labels, {name: y [T]})}.
    dpi: the figure's resolution.
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
  for ax, (title, (x_label, x, lines)) in zip(axes[0], panels.items()):
    ticks = np.arange(len(x)) if isinstance(x[0], str) else np.asarray(x)
    for name, y in lines.items():
      ax.plot(ticks, y, marker='.' if isinstance(x[0], str) else None, label=name.replace('_', ' '))
    if isinstance(x[0], str):
      ax.set_xticks(ticks, x, rotation=60, fontsize=6)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x_label)
  axes[0, -1].legend(fontsize=7)
  _save(fig, path, dpi)
