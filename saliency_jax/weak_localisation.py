"""The paper's Sect. 3.2 on real images: saliency -> GraphCut -> box, against the baselines.

`run(config, workdir)` (experiments/localise_imagenet_sample.py, configs/localise_cifar_resnet.py):
  1. the pretrained CIFAR ResNet and the ImageNet val sample's images whose class maps onto
     CIFAR-10 (`imagenet.cifar10_mapped`), with every ground-truth box of that class;
  2. each image's saliency map for its TRUE class at the net's 32 px (optionally 10-crop), resized
     bilinearly onto the 227 px photo;
  3. localisation by every method of `config.methods` (the GraphCut pipeline in several settings,
     thresholding at 15% / 20%, full image, centre box), in a process pool;
  4. GT-known box accuracy (IoU >= 0.5 with a ground-truth box of the true class), mean IoU, and
     how many boxes were full-image fallbacks (flat or invalid map, empty cut), per method; a figure
     of example boxes.
It writes localisation.json, localisation.md and localisation.png to the workdir.
"""

import pathlib
import time

import jax.numpy as jnp
import numpy as np

from saliency_jax import localise, metrics, report, saliency, weights
from saliency_jax.data import imagenet


def sample_data(config) -> dict:
  """Images at the photo's size and at 32 px, labels, and per image the boxes of its class."""
  sample = pathlib.Path(config.data_dir) / config.sample
  mapped = imagenet.cifar10_mapped(sample, image_size=config.net_size)
  mapping = imagenet.imagenet_to_cifar10()
  records = {r['id']: r for r in imagenet.sample_records(sample)}
  photos, boxes = [], []
  for image_id, label in zip(mapped['ids'], mapped['labels']):
    record = records[image_id]
    photo = imagenet.load_image(record['image_path'])
    h, w = photo.shape[:2]
    annotation = imagenet.read_annotation(record['annotation_path'], image_size=(w, h))
    keep = [mapping.get(name) == label for name in annotation['names']]
    boxes.append(annotation['boxes'][np.asarray(keep, bool)])
    photos.append(photo)
  return {'ids': mapped['ids'], 'photos': photos, 'small': mapped['images'], 'labels': mapped['labels'],
          'boxes': boxes}


def true_class_maps(model, data, config) -> list[np.ndarray]:
  """Each image's saliency map for its true class, resized onto its photo."""
  x = weights.normalise(data['small'], weights.CIFAR10_MEAN, weights.CIFAR10_STD)
  if config.crop_size:
    maps = saliency.ten_crop_saliency_batch(model, x, data['labels'], crop_size=config.crop_size,
                                            chunk_size=config.chunk_size)
  else:
    maps = saliency.saliency_maps(model, x, data['labels'], chunk_size=config.chunk_size)
  maps = np.asarray(maps)
  return [localise.resize_map(m, photo.shape[:2]) for m, photo in zip(maps, data['photos'])]


def evaluate(results: list, data) -> dict:
  """GT-known box accuracy, mean best IoU, status counts and fallback boxes of one method's results."""
  ious = np.array([metrics.box_iou(np.asarray(r.box, np.float64)[None], gt).max() if len(gt) else 0.0
                   for r, gt in zip(results, data['boxes'])])
  statuses = {}
  for r in results:
    statuses[r.status] = statuses.get(r.status, 0) + 1
  return {'gt_known_accuracy': float(np.mean(ious >= 0.5)), 'mean_iou': float(ious.mean()),
          'num_images': len(results), 'status': statuses, 'fallbacks': localise.fallbacks(results),
          'iou': ious.tolist()}


def run(config, workdir: str, log=print) -> dict:
  workdir = pathlib.Path(workdir)
  start = time.perf_counter()
  model = weights.load_cifar_resnet(pathlib.Path(config.data_dir) / config.checkpoint)
  data = sample_data(config)
  if config.num_images:
    data = {k: v[:config.num_images] for k, v in data.items()}
  log(f'{len(data["labels"])} images whose class maps onto CIFAR-10')
  maps = true_class_maps(model, data, config)
  x = weights.normalise(data['small'], weights.CIFAR10_MEAN, weights.CIFAR10_STD)
  accuracy = float(np.mean(np.asarray(jnp.argmax(saliency.scores(model, x), -1)) == data['labels']))

  out = {'methods': {}, 'classification_top1': accuracy, 'num_images': len(maps), 'config': config.to_dict()}
  all_results = {}
  for name, method in config.methods.items():
    t = time.perf_counter()
    results = localise.localise_batch(data['photos'], maps, method, workers=config.workers)
    all_results[name] = results
    out['methods'][name] = {'settings': method.to_dict(), **evaluate(results, data),
                            'seconds': time.perf_counter() - t}
    r = out['methods'][name]
    log(f"{name}: GT-known {r['gt_known_accuracy']:.3f}, mean IoU {r['mean_iou']:.3f} "
        f"({r['seconds']:.1f} s) {r['status']}")
  if config.voc_sets:
    out['segmentation_vs_opencv'] = segmentation_vs_opencv(config, log)
  out['seconds'] = time.perf_counter() - start
  report.write_json(workdir / 'localisation.json', out)
  report.write_atomic(workdir / 'localisation.md', markdown(out))
  figure(workdir / 'localisation.png', data, maps, all_results, config.num_figure)
  return out


def markdown(out: dict) -> str:
  lines = [f"GT-known box accuracy on {out['num_images']} images (IoU >= 0.5 with a box of the true class; "
           f"classification top-1 {out['classification_top1']:.3f}). Fallback boxes: the full image, given "
           'where a map was flat (constant) or invalid or its cut came out empty; they count like any other '
           'box.',
           '',
           '| method | GT-known box accuracy | mean IoU | fallback boxes |', '|---|---|---|---|']
  for name, r in out['methods'].items():
    fallbacks = r.get('fallbacks', sum(v for k, v in r['status'].items() if k != 'ok'))
    lines.append(f"| {name} | {r['gt_known_accuracy']:.3f} | {r['mean_iou']:.3f} | {fallbacks} |")
  for name, r in out.get('segmentation_vs_opencv', {}).items():
    lines += ['', f"Segmentation stage alone, {name} ({r['num_images']} images, surrogate maps from the "
              'boxes plus noise, the same seeds):', '',
              '| method | box accuracy (IoU >= 0.5) | mean box IoU | s / image | mask IoU with ours |',
              '|---|---|---|---|---|']
    for k in r['mean_box_iou']:
      lines.append(f"| {k} | {r['box_accuracy'][k]:.3f} | {r['mean_box_iou'][k]:.3f} | "
                   f"{r['seconds_per_image'][k]:.3f} | {r['mask_iou_ours_vs_opencv'].get(k, 1.0):.3f} |")
  return '\n'.join(lines) + '\n'


def figure(path, data, maps, all_results: dict, num: int) -> None:
  import matplotlib.pyplot as plt
  from matplotlib import patches
  names = list(all_results)
  colours = plt.cm.tab10(np.linspace(0, 1, 10))
  fig, axes = plt.subplots(num, 2, figsize=(7, 3.3 * num), squeeze=False)
  for i in range(num):
    axes[i, 0].imshow(data['photos'][i])
    for box in data['boxes'][i]:
      x0, y0, x1, y1 = box
      axes[i, 0].add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec='w', lw=2, ls='--'))
    for j, name in enumerate(names):
      x0, y0, x1, y1 = all_results[name][i].box
      axes[i, 0].add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colours[j % 10],
                                             lw=1.2, label=name if i == 0 else None))
    axes[i, 1].imshow(maps[i], cmap='gray')
    mask = all_results[names[0]][i].mask
    axes[i, 1].contour(mask, levels=[0.5], colors='r', linewidths=0.8)
    axes[i, 0].set_title(data['ids'][i], fontsize=7)
    axes[i, 1].set_title(f'saliency; {names[0]} mask', fontsize=7)
    for ax in axes[i]:
      ax.axis('off')
  fig.legend(loc='lower center', ncol=3, fontsize=7)
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  fig.savefig(path, dpi=90)
  plt.close(fig)


# ----------------------------------------------------------------------------- the segmentation stage alone


def surrogate_saliency(shape, boxes, rng: np.random.Generator, *, noise: float) -> np.ndarray:
  """A stand-in saliency map from ground-truth boxes: a smooth bump over each box, plus noise.

  Each box contributes exp(-(dx^2 / (2 (w/3)^2) + dy^2 / (2 (h/3)^2))) around its centre; then
  uniform noise of amplitude `noise` (the bump's peak is 1) is added, so that the seeds are
  imperfect as a real map's would be.
  """
  h, w = shape
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  bump = np.zeros((h, w))
  for x0, y0, x1, y1 in boxes:
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 3, 1), max((y1 - y0) / 3, 1)
    bump = np.maximum(bump, np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2))))
  return bump + noise * rng.uniform(0, 1, (h, w))


def opencv_grabcut(image, fg_seeds, bg_seeds, iterations: int, seed: int = 0) -> np.ndarray:
  """OpenCV's grabCut from the same seeds (hard), the rest 'probably background'; bool mask."""
  import cv2
  cv2.setRNGSeed(seed)
  mask = np.full(fg_seeds.shape, cv2.GC_PR_BGD, np.uint8)
  mask[fg_seeds], mask[bg_seeds] = cv2.GC_FGD, cv2.GC_BGD
  bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
  # OpenCV expects BGR; grabCut's models are colour-order agnostic, but keep the convention.
  cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
  return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def segmentation_vs_opencv(config, log=print) -> dict:
  """The segmentation stage alone on the VOC sets: our GraphCut vs cv2.grabCut from the same seeds.

  Per image, a surrogate map from its boxes (`surrogate_saliency`), the paper's quantile seeds; then
  localise (GraphCut, largest component, box) and OpenCV grabCut (1 and 5 iterations, largest
  component, box). Box IoU with the ground truth (best over boxes), and the masks' agreement.
  """
  from saliency_jax import graphcut
  from saliency_jax.data import voc
  out = {}
  rng = np.random.default_rng(config.seed)
  s = localise.settings(config.methods.graphcut)
  for name in config.voc_sets:
    source = voc.VOCSource(pathlib.Path(config.data_dir) / name)
    n = len(source) if not config.num_images else min(config.num_images, len(source))
    items = [source[i] for i in range(n)]
    maps = [surrogate_saliency(it['image'].shape[:2], it['boxes'], rng, noise=config.surrogate_noise)
            for it in items]
    t = time.perf_counter()
    ours = localise.localise_batch([it['image'] for it in items], maps, s, workers=config.workers)
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
        mask = graphcut.largest_component(opencv_grabcut(it['image'], fg, bg, iterations, config.seed))
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
