"""Your own photos and a pretrained net: top-k classes, maps, overlays and boxes; no training, no annotations.

`run(config, workdir)` is what `experiments/explain_images.py` calls (configs/your_images.py documents the
fields). For every JPEG / PNG under config.data.data_dir (`data.folder.ImageFolder`; labels from
subfolders or a CSV when given), squashed to data.image_size and preprocessed as the model expects:
  * its top-k classes by score (10-crop averaged with config.crop_size), with their scores;
  * the paper's gradient maps of those classes (Sect. 3.1) and those of every config.maps entry;
  * the box of every config.localise method (Sect. 3.2 GraphCut and the baselines; each on the map its
    'map' names), cut at localise_size (0: data.image_size) and given in the photo's own pixels;
and writes, <id> being the photo's path under the folder with '/' as '__':
  workdir/images/<id>.json        the photo's size and label, its top-k classes with names and scores, and
                                  per class each method's box and status ('ok', or why the box is the
                                  whole photo);
  workdir/images/<id>.npz         each map, float32 [k, S, S] at the net's input size S;
  workdir/images/<id>.<map>.png   one row: the photo under each class's map, with the boxes cut from that
                                  map (`report.overlay_strip`);
  workdir/predictions.csv         image, rank, class, name, score;
  workdir/boxes.csv               image, rank, class, method, x0, y0, x1, y1 (x1 / y1 exclusive), status;
  workdir/summary.json            the counts, the unreadable photos left out, top-1 / top-k accuracy where
                                  the photos have labels, the settings and the seconds.
Streamed and resumable as the main job: config.eval_chunk photos at a time, each chunk's results kept
in workdir/chunks/<digest of the settings, the weights and the code>/ (`protocol.chunks`), so memory does
not grow with the folder and a rerun starts at the first chunk not on disk.
"""

import csv
import dataclasses
import io
import pathlib
import time

import numpy as np
from tqdm import tqdm

from saliency_jax import report, store, xla
from saliency_jax.data import folder, records, transforms
from saliency_jax.jobs import config_checks, settings
from saliency_jax.protocol import cache, chunks, localisation, maps, setup

# Settings that change no chunk's results.
NOT_IN_CHUNKS = ('name', 'workers')


def safe_name(image_id: str) -> str:
  """An image id (its path under the folder) as one file name: '/' becomes '__'.

  Args:
    image_id: the id.

  Returns:
    The name.
  """
  return image_id.replace('/', '__')


def _scaled(boxes: np.ndarray, from_hw, to_hw) -> np.ndarray:
  """Boxes [..., 4] in pixels of an image of from_hw, in pixels of one of to_hw (int, clipped)."""
  sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
  out = np.rint(np.asarray(boxes, np.float64) * np.array([sx, sy, sx, sy])).astype(np.int64)
  return np.clip(out, 0, np.array([to_hw[1], to_hw[0], to_hw[1], to_hw[0]]))


@dataclasses.dataclass(frozen=True)
class Explain:
  """What each chunk of photos does (the config's keys of the same names).

  The data, the maps (the specs, top_k, crop_size, chunk_size, sequential_maps), the cuts and their
  workers, the class names, and whether the overlays are drawn.
  """
  data: setup.Data
  maps: maps.Request
  cuts: dict
  workers: int
  names: list
  overlays: bool


def explain_chunk(ex: Explain, model, source, span, total: int, mean, std, out: pathlib.Path) -> dict:
  """One chunk of photos [start, stop) of the `total` explained: maps, boxes, per-image files.

  The GraphCut's colour sampling is seeded by each photo's place among the `total`
  (`localisation.localise_images`), so the boxes do not depend on the chunks.

  Args:
    ex: the job's settings (`Explain`).
    model: the net.
    source: the photos' source.
    span: (start, stop).
    total: the photos explained in all.
    mean: the normalisation's mean.
    std: the normalisation's std.
    out: the folder of the per-image files.

  Returns:
    The rows `chunks.write` keeps.
  """
  start, stop = span
  seconds = {}
  t0 = time.perf_counter()
  photos, kept, bad = [], [], []
  for i in range(start, stop):
    try:
      photos.append(source[i])
      kept.append(i)
    except records.BadRecord as e:  # an unreadable photo is left out and listed, never the end of the run
      bad.append(e.as_dict())
  seconds['read'] = time.perf_counter() - t0
  if not photos:
    return {'rows': {'photos': {}}, 'totals': {'count': 0, 'seconds': seconds}, 'bad': bad}
  size = ex.data.image_size
  x = transforms.normalise(np.stack([transforms.resize(p, size)['image'] for p in photos]), mean, std)
  t0 = time.perf_counter()
  made = ex.maps.make(model, x)
  top_classes, top_scores = made.top_classes, made.top_scores
  seconds['maps'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  cut_on = np.stack([transforms.resize(p, ex.data.photo_size)['image'] for p in photos])
  n, k = top_classes.shape
  found, _ = localisation.localise_images(cut_on, maps.onto(made.maps, cut_on.shape[1:3]), ex.cuts,
                                          np.asarray(kept), total, workers=ex.workers)
  seconds['localisation'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  sizes = np.array([p['image'].shape[:2] for p in photos], np.int64)
  boxes = {m: np.stack([_scaled(f['top_boxes'][r], cut_on.shape[1:3], sizes[r]) for r in range(n)])
           for m, f in found.items()}
  status = {m: f['status'][:, 1:] for m, f in found.items()}
  for r, photo in enumerate(photos):
    write_image(ex, out, photo, top_classes[r], top_scores[r],
                {m: top[r] for m, (_, top) in made.maps.items()}, {m: b[r] for m, b in boxes.items()},
                {m: s[r] for m, s in status.items()})
  seconds['write'] = time.perf_counter() - t0
  rows = {'index': np.asarray(kept, np.int64), 'labels': np.array([p['label'] for p in photos], np.int64),
          'sizes': sizes, 'classes': top_classes, 'scores': top_scores.astype(np.float32),
          'boxes': boxes, 'status': status}
  return {'rows': {'photos': rows}, 'totals': {'count': n, 'seconds': seconds}, 'bad': bad}


def write_image(ex: Explain, out: pathlib.Path, photo: dict, classes, scores, class_maps: dict, boxes: dict,
                status: dict) -> None:
  """One photo's json, npz and png (module docstring).

  Args:
    ex: the job's settings (`Explain`).
    out: the folder.
    photo: the photo's record ('id', 'image', ...).
    classes: its top-k classes.
    scores: their scores.
    class_maps: {map name: [k, H, W]}.
    boxes: {cut: [k, 4]} in the photo's pixels.
    status: {cut: [k] statuses}.
  """
  names = ex.names
  stem = out / safe_name(photo['id'])
  h, w = photo['image'].shape[:2]
  described = {
      'image': photo['id'], 'width': int(w), 'height': int(h),
      'label': int(photo['label']) if photo['label'] >= 0 else None,
      'top_k': [{'rank': j + 1, 'class': int(c), 'name': names[c], 'score': float(s),
                 'boxes': {m: {'box': [int(v) for v in boxes[m][j]], 'status': str(status[m][j])}
                           for m in boxes}}
                for j, (c, s) in enumerate(zip(classes, scores))]}
  report.write_json(stem.with_name(f'{stem.name}.json'), described)
  buffer = io.BytesIO()
  np.savez(buffer, **{m: np.asarray(v, np.float32) for m, v in class_maps.items()})
  store.write_atomic(stem.with_name(f'{stem.name}.npz'), buffer.getvalue())
  if not ex.overlays:
    return
  titles = [f'{j + 1}. {names[c][:24]} ({s:.1f})' for j, (c, s) in enumerate(zip(classes, scores))]
  for m, v in class_maps.items():
    cut = {name: boxes[name] for name, c in ex.cuts.items() if c.map == m}
    report.overlay_strip(stem.with_name(f'{stem.name}.{m}.png'), photo['image'], v, titles, cut)


def table_rows(source, names, merged: dict) -> tuple[list, list]:
  """The rows of predictions.csv and boxes.csv of every photo, in folder order.

  Args:
    source: the photos' source.
    names: the class names.
    merged: the chunks' merged results.

  Returns:
    (predictions.csv rows, boxes.csv rows).
  """
  p = merged['rows']['photos']
  predictions, boxes = [], []
  for r, i in enumerate(p.get('index', [])):
    image = source.ids[int(i)]
    for j, (c, s) in enumerate(zip(p['classes'][r], p['scores'][r])):
      predictions.append([image, j + 1, int(c), names[int(c)], f'{float(s):.6g}'])
      for method in p['boxes']:
        boxes.append([image, j + 1, int(c), method, *map(int, p['boxes'][method][r, j]),
                      str(p['status'][method][r, j])])
  return predictions, boxes


def write_csv(path: pathlib.Path, header: list[str], rows: list) -> None:
  """A CSV file, written atomically.

  Args:
    path: the file.
    header: the column names.
    rows: the rows.
  """
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(header)
  writer.writerows(rows)
  store.write_atomic(path, buffer.getvalue())


def accuracy(merged: dict, k: int) -> dict | None:
  """Top-1 / top-k accuracy over the photos that have labels.

  Args:
    merged: the chunks' merged results.
    k: the top-k.

  Returns:
    {'num_labelled', 'top1', 'top<k>', ...}, or None when no photo has a label.
  """
  p = merged['rows']['photos']
  labels = np.asarray(p.get('labels', []))
  has = labels >= 0
  if not has.any():
    return None
  hit = np.asarray(p['classes'])[has] == labels[has, None]
  return {'num_labelled': int(has.sum()), 'top1': float(hit[:, 0].mean()),
          f'top{k}': float(hit.any(1).mean())}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The job (module docstring); returns summary.json's content.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  config_checks.check_images_job(config)
  data = settings.data(config)
  # the class names and the folder first: their errors come before the model loads
  request = maps.Request(settings.specs(config, list(config.maps)), config.top_k, config.crop_size,
                         config.chunk_size, config.sequential_maps)
  ex = Explain(data, request, settings.cuts(config), config.workers, settings.class_names(config),
               config.overlays)
  source = folder.ImageFolder(config.data.data_dir, labels=config.data.get('labels', ''), classes=ex.names)
  chunk_key = {k: v for k, v in config.to_dict().items() if k not in NOT_IN_CHUNKS}
  n = len(source) if not config.num_images else min(config.num_images, len(source))
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  model, preprocessing = setup.load_model(settings.checkpoint(config), input_size=settings.input_size(config),
                                          num_classes=config.num_classes)
  mean, std = setup.normalisation(data, None, preprocessing)
  seconds = {'setup': time.perf_counter() - t0}
  spans = chunks.plan(n, config.eval_chunk)
  where = chunks.folder(workdir / 'chunks', {**chunk_key, 'photos': source.ids[:n]},
                        cache.weights_digest(model), cache.source_digest())
  todo = [c for c in range(len(spans)) if not chunks.intact(where, c, spans[c], log)]
  if len(todo) < len(spans):
    log(f'resuming: {len(spans) - len(todo)} of {len(spans)} chunks already in {where}')
  t0 = time.perf_counter()
  with tqdm(total=sum(spans[c][1] - spans[c][0] for c in todo), desc='photos', unit='img',
            mininterval=2.0) as bar:
    for c in todo:
      result = explain_chunk(ex, model, source, spans[c], n, mean, std, workdir / 'images')
      chunks.write(where, c, spans[c], result)
      bar.update(spans[c][1] - spans[c][0])
  seconds['photos'] = time.perf_counter() - t0
  merged = chunks.wait(where, spans, timeout_s=60)
  predictions, boxes = table_rows(source, ex.names, merged)
  write_csv(workdir / 'predictions.csv', ['image', 'rank', 'class', 'name', 'score'], predictions)
  write_csv(workdir / 'boxes.csv', ['image', 'rank', 'class', 'method', 'x0', 'y0', 'x1', 'y1', 'status'],
            boxes)
  for key, value in merged['totals']['seconds'].items():
    seconds[key] = seconds.get(key, 0.0) + value
  summary = {'num_photos': n, 'num_explained': int(merged['totals']['count']), 'unreadable': merged['bad'],
             'accuracy': accuracy(merged, config.top_k), 'maps': list(ex.maps.specs),
             'localise': list(ex.cuts), 'seconds': seconds, 'config': config.to_dict()}
  report.write_json(workdir / 'summary.json', summary)
  log(f'{summary["num_explained"]} photos explained ({len(merged["bad"])} unreadable) in {workdir}')
  return summary


def summary(result: dict, workdir) -> str:
  """What the entry point prints: the accuracy over labelled photos, and where the files are.

  Args:
    result: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  lines = []
  if result['accuracy']:
    lines.append(', '.join(f'{key} {value:.3f}' if isinstance(value, float) else f'{key} {value}'
                           for key, value in result['accuracy'].items()))
  lines.append(f'predictions.csv, boxes.csv, summary.json and images/ (json, npz, png per photo) in '
               f'{workdir}')
  return '\n'.join(lines)
