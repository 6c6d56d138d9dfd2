"""Localisation speed per stage, against OpenCV's grabCut and scikit-learn's GaussianMixture.

`run(config, workdir)`, called by experiments/benchmark_localise.py.

Writes `benchmark_localise.json` to the workdir; the entry point prints a markdown table. What is measured and
the cost are in the config's docstring. The helpers here (surrogate maps from boxes, OpenCV's grabCut
from our seeds, the segmentation stage alone on VOC folders) serve this benchmark only.
"""

import dataclasses
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from saliency_jax import graphcut, localise, metrics, report, xla
from saliency_jax.data import imagenet, voc


def surrogate_saliency(shape, boxes, rng: np.random.Generator, *, noise: float) -> np.ndarray:
  """A stand-in saliency map from ground-truth boxes: a smooth bump over each box, plus noise.

  Each box contributes exp(-(dx^2 / (2 (w/3)^2) + dy^2 / (2 (h/3)^2))) around its centre; the noise
  makes the seeds imperfect, as a real map's would be.

  Args:
    shape: (H, W).
    boxes: [M, 4].
    rng: a NumPy generator.
    noise: the uniform noise's amplitude (the bump's peak is 1).

  Returns:
    float [H, W].
  """
  h, w = shape
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  bump = np.zeros((h, w))
  for x0, y0, x1, y1 in boxes:
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 3, 1), max((y1 - y0) / 3, 1)
    bump = np.maximum(bump, np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2))))
  return bump + noise * rng.uniform(0, 1, (h, w))


def opencv_grabcut(image, fg_seeds, bg_seeds, iterations: int, seed: int = 0) -> np.ndarray:
  """OpenCV's grabCut from the same seeds (hard), the rest 'probably background'.

  Args:
    image: uint8 [H, W, 3].
    fg_seeds: bool [H, W].
    bg_seeds: bool [H, W].
    iterations: grabCut's iterations.
    seed: OpenCV's random seed.

  Returns:
    bool [H, W], the foreground.
  """
  import cv2
  cv2.setRNGSeed(seed)
  mask = np.full(fg_seeds.shape, cv2.GC_PR_BGD, np.uint8)
  mask[fg_seeds], mask[bg_seeds] = cv2.GC_FGD, cv2.GC_BGD
  bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
  # OpenCV expects BGR; grabCut's models are colour-order agnostic, but keep the convention.
  cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
  return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def segmentation_vs_opencv(voc_sets, *, data_dir: str, num_images: int, cut: localise.Settings, noise: float,
                           workers: int, seed: int, log=print) -> dict:
  """The segmentation stage alone on the VOC sets: this GraphCut against cv2.grabCut, same seeds.

  Per image, a surrogate map from its boxes (`surrogate_saliency`), the paper's quantile seeds; then
  localise (GraphCut, largest component, box) and OpenCV grabCut (1 and 5 iterations, largest component,
  box). Box IoU with the ground truth (best over boxes), and the masks' agreement.

  Args:
    voc_sets: the VOC folders.
    data_dir: where they are.
    num_images: images per set.
    cut: the localisation settings.
    noise: the surrogate maps' noise.
    workers: the cuts' worker processes.
    seed: the noise's seed.
    log: where progress is said.

  Returns:
    Per VOC set: {'num_images', 'mean_box_iou' and 'box_accuracy' per method, 'mask_iou_ours_vs_opencv',
    'seconds_per_image'}.
  """
  out = {}
  rng = np.random.default_rng(seed)
  s = cut
  for name in voc_sets:
    source = voc.VOCSource(pathlib.Path(data_dir) / name)
    n = len(source) if not num_images else min(num_images, len(source))
    items = [source[i] for i in range(n)]
    maps = [surrogate_saliency(it['image'].shape[:2], it['boxes'], rng, noise=noise) for it in items]
    t = time.perf_counter()
    ours = localise.localise_batch([it['image'] for it in items], maps, s, workers=workers)
    seconds = {'ours': (time.perf_counter() - t) / n}
    def best_iou(box, it):
      return float(metrics.box_iou(np.asarray(box, np.float64)[None], it['boxes']).max())
    rows = {'ours': [best_iou(r.box, it) for r, it in zip(ours, items)]}
    agreement = {}
    for iterations in (1, 5):
      key = f'opencv_grabcut_{iterations}'
      t = time.perf_counter()
      boxes, ious = [], []
      for it, m, r in zip(items, maps, ours):
        fg, bg, _ = localise.seeds(m, s.fg_quantile, s.bg_quantile, s.fg_floor)
        mask = graphcut.largest_component(opencv_grabcut(it['image'], fg, bg, iterations, seed))
        box = metrics.boxes_from_mask(mask) or (0, 0, m.shape[1], m.shape[0])
        boxes.append(best_iou(box, it))
        ious.append(metrics.mask_iou(mask, r.mask))
      seconds[key] = (time.perf_counter() - t) / n
      rows[key] = boxes
      agreement[key] = float(np.mean(ious))
    out[name] = {'num_images': n,
                 'mean_box_iou': {k: float(np.mean(v)) for k, v in rows.items()},
                 'box_accuracy': {k: float(np.mean(np.asarray(v) >= 0.5)) for k, v in rows.items()},
                 'mask_iou_ours_vs_opencv': agreement, 'seconds_per_image': seconds}
    log(f'{name}: {out[name]}')
  return out


def images_and_maps(sample: pathlib.Path, *, num_images: int, size: int, noise: float, seed: int):
  """The sample's photos resized to size x size, their boxes, and surrogate maps from the boxes.

  Args:
    sample: the imagenet-val-sample folder.
    num_images: how many.
    size: the side.
    noise: the maps' noise.
    seed: the noise's seed.

  Returns:
    (photos uint8 [N, S, S, 3], maps [N, S, S], boxes per image [M_i, 4]).
  """
  rng = np.random.default_rng(seed)
  photos, maps, boxes = [], [], []
  for record in imagenet.sample_records(sample)[:num_images]:
    image = Image.fromarray(imagenet.load_image(record['image_path']))
    image = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    b = imagenet.read_annotation(record['annotation_path'], image_size=(size, size))['boxes']
    photos.append(image)
    boxes.append(b)
    maps.append(surrogate_saliency(image.shape[:2], b, rng, noise=noise))
  return photos, maps, boxes


def median_ms(fn, items, repeats: int) -> float:
  """Median over items (each timed `repeats` times, the fastest kept) of fn(item), in ms.

  Args:
    fn: a function of one item.
    items: the items.
    repeats: timings per item.

  Returns:
    Milliseconds.
  """
  per_item = []
  for item in items:
    best = float('inf')
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(item))
      best = min(best, time.perf_counter() - start)
    per_item.append(best)
  return 1e3 * statistics.median(per_item)


def stage_milliseconds(photos, maps, s: localise.Settings, *, repeats: int, workers: int) -> tuple:
  """Each stage's median ms per image, with the timed items and the batch's results.

  Seeds, colour models, pairwise terms, cut, component and box, the whole `localise`, with 3 GrabCut
  rounds, in a batch.

  Args:
    photos: uint8 [N, H, W, 3].
    maps: [N, H, W].
    s: the localisation settings.
    repeats: timings per item.
    workers: the batch's worker processes.

  Returns:
    (ms {stage: ms}, the timed items, the batch's results).
  """
  items = []
  for i, (image, m) in enumerate(zip(photos, maps)):
    fg, bg, _ = localise.seeds(m, s.fg_quantile, s.bg_quantile, s.fg_floor)
    items.append({'i': i, 'image': image, 'map': m, 'fg': fg, 'bg': bg})
  def key(it):
    return jax.random.fold_in(jax.random.key(s.seed), it['i'])[None]
  def colour(it):
    return localise.colour_costs(it['image'][None], it['fg'][None], it['bg'][None], key(it), s,
                                              chunk_size=1)[0]
  for it in items:  # compile, and the inputs of the later stages
    it['costs'] = colour(it)
    it['edges'] = graphcut.pairwise_weights(it['image'], pairwise_weight=s.pairwise_weight,
                                            connectivity=s.connectivity)
    hard = s.seeds == 'hard'
    it['cut'] = graphcut.segment(it['costs'][0], it['costs'][1], edges=it['edges'],
                                 fg_seeds=it['fg'] if hard else None, bg_seeds=it['bg'] if hard else None)
  localise.localise(photos[0], maps[0], s)
  r = repeats
  ms = {
      'seeds': median_ms(lambda it: localise.seeds(it['map'], s.fg_quantile, s.bg_quantile, s.fg_floor),
                         items, r),
      'colour_models_and_unaries': median_ms(colour, items, r),
      'pairwise': median_ms(lambda it: graphcut.pairwise_weights(
          it['image'], pairwise_weight=s.pairwise_weight, connectivity=s.connectivity), items, r),
      'cut': median_ms(lambda it: graphcut.segment(it['costs'][0], it['costs'][1], edges=it['edges'],
                                                   fg_seeds=it['fg'], bg_seeds=it['bg']), items, r),
      'component_and_box': median_ms(
          lambda it: metrics.boxes_from_mask(graphcut.largest_component(it['cut'])), items, r),
      'whole_localise': median_ms(lambda it: localise.localise(it['image'], it['map'], s), items, r),
  }
  rounds = dataclasses.replace(s, iterations=3)  # 3 GrabCut re-estimation rounds
  localise.localise(photos[0], maps[0], rounds)
  ms['whole_localise_grabcut_3'] = median_ms(lambda it: localise.localise(it['image'], it['map'], rounds),
                                             items, r)
  localise.localise_batch(photos[:9], maps[:9], s, workers=workers)  # compile, start the pool
  start = time.perf_counter()
  ours = localise.localise_batch(photos, maps, s, workers=workers)
  ms['whole_batch_per_image'] = 1e3 * (time.perf_counter() - start) / len(photos)
  return ms, items, ours


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark_localise.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  jnp.zeros(())  # initialise JAX before the timings
  s = localise.settings(config.localise)
  r = config.repeats
  photos, maps, boxes = images_and_maps(pathlib.Path(config.data_dir) / config.sample,
                                        num_images=config.num_images, size=config.size,
                                        noise=config.surrogate_noise, seed=config.seed)
  ms, items, ours = stage_milliseconds(photos, maps, s, repeats=r, workers=config.workers)
  rounds = dataclasses.replace(s, iterations=3)
  try:
    import cv2  # noqa: F401
    for n in (1, 5):
      ms[f'opencv_grabcut_{n}'] = median_ms(
          lambda it, n=n: opencv_grabcut(it['image'], it['fg'], it['bg'], n), items, r)
  except ImportError:
    pass
  try:
    from sklearn.mixture import GaussianMixture

    def sklearn_fits(it):
      x = it['image'].reshape(-1, 3).astype(np.float32) / 255
      for mask in (it['fg'], it['bg']):
        GaussianMixture(s.num_components, covariance_type='full', max_iter=s.gmm_iters,
                        reg_covar=s.covariance_floor, random_state=0).fit(x[mask.ravel()])

    ms['sklearn_gmm_fits'] = median_ms(sklearn_fits, items[:max(1, len(items) // 4)], 1)
  except ImportError:
    pass

  def iou(box, b):
    return float(metrics.box_iou(np.asarray(box, np.float64)[None], b).max())
  quality = {'ours_mean_box_iou': float(np.mean([iou(o.box, b) for o, b in zip(ours, boxes)]))}
  ours_rounds = localise.localise_batch(photos, maps, rounds, workers=config.workers)
  quality['ours_grabcut_3_mean_box_iou'] = float(np.mean([iou(o.box, b) for o, b in zip(ours_rounds, boxes)]))
  if 'opencv_grabcut_1' in ms:
    for n in (1, 5):
      got = []
      for it, b in zip(items, boxes):
        cut = opencv_grabcut(it['image'], it['fg'], it['bg'], n)
        mask = graphcut.largest_component(cut)
        got.append(iou(metrics.boxes_from_mask(mask) or (0, 0, config.size, config.size), b))
      quality[f'opencv_grabcut_{n}_mean_box_iou'] = float(np.mean(got))
  out = {'config': config.to_dict(), 'milliseconds_per_image': ms, 'quality': quality,
         'device': {'jax_backend': jax.default_backend(), 'cpu_count': os.cpu_count(),
                    'python': platform.python_version(), 'jax': jax.__version__},
         'load_average': os.getloadavg()[0]}
  if 'opencv_grabcut_1' in ms:
    out['whole_over_one_opencv_iteration'] = ms['whole_localise'] / ms['opencv_grabcut_1']
    out['grabcut_3_over_five_opencv_iterations'] = ms['whole_localise_grabcut_3'] / ms['opencv_grabcut_5']
  if config.voc_sets:
    try:
      import cv2  # noqa: F401
      out['segmentation_vs_opencv'] = segmentation_vs_opencv(
          config.voc_sets, data_dir=config.data_dir, num_images=config.num_voc_images, cut=s,
          noise=config.surrogate_noise, workers=config.workers, seed=config.seed, log=log)
    except ImportError:
      out['segmentation_vs_opencv'] = 'skipped: needs OpenCV (pip install opencv-python-headless)'
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  report.write_json(pathlib.Path(workdir) / 'benchmark_localise.json', out)
  return out


def summary(out: dict, workdir) -> str:
  """What the entry point prints: ms per image of each stage, and the boxes' quality.

  Args:
    out: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  lines = ['| stage | ms / image |', '|---|---|']
  lines += [f'| {k} | {v:.1f} |' for k, v in out['milliseconds_per_image'].items()]
  return '\n'.join(lines + [str(out['quality'])])
