"""Attribution methods compared on the same images with the same metrics.

`run(config, workdir)` (what `experiments/compare_attributions.py` calls) takes the config's data
and trained (or pretrained) net through `stages.prepare`, computes every method of
`config.compare.methods` (`attribution.METHODS` with their settings) for the true class of the
same test images, and measures each map by
  * localisation: GT-known box accuracy of the paper's GraphCut pipeline fed with the map, and of
    the threshold baseline (`config.compare.localise`, methods of `localise.standard_methods`);
  * the pointing game: the map's maximum on the object (the object mask where the data has one,
    or under `pointing_tolerance` px from it; else the class's boxes, TorchRay's 15 px at 224 px
    scaled to the image, images whose boxes of the class are all VOC 'difficult' left out), per
    image and TorchRay's mean over classes;
  * how many boxes of each localisation method were full-image fallbacks (`localise.fallbacks`);
  * deletion / insertion AUC (RISE protocol, softmax probability of the class);
  * the cascading model-randomisation sanity check (Spearman with and without absolute values)
    on the first `num_sanity` images: the rank correlation after the top layer and after all
    layers are randomised (lower = the map depends more on the weights, as it should);
  * seconds per image to compute the maps (after compilation, the median of `timing_repeats` runs).
All maps are computed on the whole image at the net's input size in one pass (no 10 crops) and,
where the localisation images are larger (`localise_size`), resized onto them bilinearly.
Writes comparison.json, comparison.md, comparison.png (methods x images), sanity.png and
deletion_insertion.png.
"""

import pathlib
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from saliency_jax import attribution, defaults, faithfulness, localise, metrics, report, saliency
from saliency_jax.jobs import stages


def default_settings() -> ml_collections.ConfigDict:
  """config.compare: which methods with which settings, and how many images for each metric
  (`defaults.comparison`)."""
  return defaults.comparison()


def _settings(method: str, settings: dict, seed: int) -> dict:
  settings = dict(settings)
  if method == 'smoothgrad':
    settings['key'] = jax.random.key(seed)
  return settings


def compute_maps(model, x, labels, methods: dict, *, chunk_size: int | None, seed: int = 0, repeats: int = 3,
                 log=print):
  """{method: (absolute maps [N, H, W], signed maps [N, H, W])} and {method: seconds per image}.

  Each method runs once on the first chunk to compile, then `repeats` times on all images; the
  time is the median of those runs."""
  maps, seconds = {}, {}
  warm = len(x) if not chunk_size else min(chunk_size, len(x))
  bar = tqdm(total=len(methods) * len(x), desc='comparison maps', unit='img', mininterval=2.0,
             disable=jax.process_index() != 0)
  for name, settings in methods.items():
    settings = _settings(name, settings, seed)
    jax.block_until_ready(attribution.attribute(name, model, x[:warm], labels[:warm], chunk_size=chunk_size,
                                                **settings))
    times = []
    for _ in range(max(1, repeats)):
      t = time.perf_counter()
      a = jax.block_until_ready(attribution.attribute(name, model, x, labels, chunk_size=chunk_size,
                                                      **settings))
      times.append(time.perf_counter() - t)
    seconds[name] = float(np.median(times)) / len(x)
    maps[name] = (attribution.to_map(a), attribution.to_map(a, signed=True))
    bar.update(len(x))
    log(f'{name}: {1e3 * seconds[name]:.2f} ms per image')
  bar.close()
  return maps, seconds


def class_boxes(gt_labels, gt_boxes, labels) -> list[np.ndarray]:
  """Each image's ground-truth boxes of its true class."""
  return [np.asarray(b)[np.asarray(bl) == y] for b, bl, y in zip(gt_boxes, gt_labels, labels)]


def sanity(model, x, labels, method: str, settings: dict, *, seed: int, chunk_size: int | None) -> dict:
  """The cascading randomisation check of one method on images x (`faithfulness.cascading_randomisation`)."""
  settings = _settings(method, settings, seed)

  def attribute(m):
    a = attribution.attribute(method, m, x, labels, chunk_size=chunk_size, **settings)
    return {'absolute': attribution.to_map(a), 'signed': attribution.to_map(a, signed=True)}

  return faithfulness.cascading_randomisation(model, faithfulness.fresh_like(model, seed + 1), attribute)


def pointing(maps, labels, *, masks=None, boxes=None, difficult=None, tolerance: float) -> dict:
  """The pointing game of maps [N, H, W] for their classes labels [N]: on the object masks [N, H, W]
  when given, else on each image's boxes of its class (boxes[i] [M_i, 4], difficult[i] bool [M_i] or
  None): `metrics.pointing_accuracy`, played on the images with a box of the class not all difficult."""
  if masks is not None:
    return metrics.pointing_accuracy(metrics.pointing_hits(maps, masks, tolerance=tolerance), labels)
  flags = difficult if difficult is not None else [np.zeros(len(b), bool) for b in boxes]
  played = metrics.pointing_played(flags)
  hits = np.zeros(len(maps), bool)
  idx = np.flatnonzero(played)
  hits[idx] = metrics.pointing_game([maps[i] for i in idx], [boxes[i] for i in idx], tolerance=tolerance)
  return metrics.pointing_accuracy(hits, labels, played=played)


def evaluate(config, model, x, labels, photos, gt_labels, gt_boxes, masks=None, log=print, *,
             difficult=None) -> tuple[dict, dict]:
  """Every metric of the module docstring for every method: ({method: metrics}, {method: absolute
  maps [N, H, W] at the size of `photos`}). difficult: per image the boxes' VOC flags (None: none)."""
  c = config.compare
  n = len(x)
  size = photos.shape[1:3]
  boxes = class_boxes(gt_labels, gt_boxes, labels)
  flags = None if difficult is None else class_boxes(gt_labels, difficult, labels)
  tolerance = config.pointing_tolerance if masks is not None else 15.0 * max(size) / 224
  maps, seconds = compute_maps(model, x, labels, c.methods.to_dict(), chunk_size=config.chunk_size,
                               seed=c.seed, repeats=c.timing_repeats, log=log)
  out = {}
  bar = tqdm(total=len(maps) * n, desc='comparison metrics', unit='img', mininterval=2.0,
             disable=jax.process_index() != 0)
  for name, (absolute, _) in maps.items():
    t = time.perf_counter()
    on_photos = (absolute if absolute.shape[1:] == size
                 else np.stack([localise.resize_map(m, size) for m in absolute]))
    r = {'ms_per_image': 1e3 * seconds[name]}
    for loc_name, loc in c.localise.items():
      results = localise.localise_batch(list(photos), list(on_photos), loc, workers=config.workers)
      r[f'gt_known_{loc_name}'] = metrics.gt_known_accuracy([res.box for res in results], gt_labels, gt_boxes,
                                                            labels)
      r[f'fallbacks_{loc_name}'] = localise.fallbacks(results)  # full-image boxes: flat / bad map, empty cut
    game = pointing(on_photos, labels, masks=masks, boxes=boxes, difficult=flags, tolerance=tolerance)
    r['pointing_game'], r['pointing_game_class_mean'] = game['per_image'], game['class_mean']
    r['pointing_played'] = game['played']
    curves = faithfulness.deletion_insertion(model, x, labels, absolute, steps=c.deletion_steps,
                                        insertion_blur=c.insertion_blur, chunk_size=config.chunk_size)
    r['deletion_auc'] = float(curves['deletion'].mean())
    r['insertion_auc'] = float(curves['insertion'].mean())
    r['deletion_curve'] = curves['deletion_curve'].mean(0).tolist()
    r['insertion_curve'] = curves['insertion_curve'].mean(0).tolist()
    k = min(c.num_sanity, n)
    check = sanity(model, x[:k], labels[:k], name, c.methods[name].to_dict(), seed=c.seed,
                   chunk_size=config.chunk_size)
    r['sanity'] = check
    for kind in ('absolute', 'signed'):
      r[f'sanity_top_layer_{kind}'] = check[kind][0]
      r[f'sanity_all_layers_{kind}'] = check[kind][-1]
    out[name] = r
    maps[name] = on_photos
    log(f"{name}: GT-known graphcut {r.get('gt_known_graphcut', float('nan')):.3f}, "
        f"pointing {r['pointing_game']:.3f}, "
        f"deletion {r['deletion_auc']:.3f}, insertion {r['insertion_auc']:.3f}, randomised top layer rho "
        f"{r['sanity_top_layer_absolute']:.2f} ({time.perf_counter() - t:.0f} s)")
    bar.update(n)
  bar.close()
  return out, maps


def run(config, workdir: str, log=print) -> dict:
  """The comparison experiment; returns what it writes to workdir/comparison.json."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepared = stages.prepare(config, workdir, log)
  data, model = prepared['data'], prepared['model']
  test = data['test']
  n = len(test['images'])
  n = min(config.compare.num_images, n) if config.compare.num_images else n
  x, labels = prepared['splits']['test']['images'][:n], test['labels'][:n]
  photos, gt_labels = test['images'][:n], test['box_labels'][:n]
  gt_boxes, masks = test['boxes'][:n], None if test['masks'] is None else test['masks'][:n]
  if 'photos' in data:  # localise on the larger images
    photos, gt_boxes, masks = data['photos']['images'][:n], data['photos']['boxes'][:n], None
  t0 = time.perf_counter()
  per_method, maps = evaluate(config, model, x, labels, photos, gt_labels, gt_boxes, masks, log,
                              difficult=test['difficult'][:n])
  results = {'name': config.name, 'num_images': n, 'num_sanity': min(config.compare.num_sanity, n),
             'test_accuracy': prepared['trained']['test_accuracy'],
             'accuracy_on_images': float(np.mean(np.argmax(np.asarray(
                 saliency.scores(model, x, chunk_size=config.chunk_size)), -1) == labels)),
             'methods': per_method, 'seconds': time.perf_counter() - t0, 'config': config.to_dict()}
  report.write_json(workdir / 'comparison.json', results)

  num = min(config.compare.num_figure, n)
  names = stages.class_names(config)
  report.methods_figure(workdir / 'comparison.png', photos[:num],
                        {name: m[:num] for name, m in maps.items()}, [names[y] for y in labels[:num]],
                        None if masks is None else masks[:num])
  first = next(iter(per_method.values()))
  report.curves_figure(workdir / 'sanity.png', {
      f'cascading randomisation, Spearman of |map| ({results["num_sanity"]} images)':
          ('layers randomised, top down', first['sanity']['layers'],
           {name: r['sanity']['absolute'] for name, r in per_method.items()}),
      'same, signed maps': ('layers randomised, top down', first['sanity']['layers'],
                            {name: r['sanity']['signed'] for name, r in per_method.items()})})
  fractions = np.linspace(0, 1, config.compare.deletion_steps + 1)
  report.curves_figure(workdir / 'deletion_insertion.png', {
      'deletion (lower AUC is better)': ('fraction of pixels deleted', fractions,
                                         {name: r['deletion_curve'] for name, r in per_method.items()}),
      'insertion (higher AUC is better)': ('fraction of pixels inserted', fractions,
                                           {name: r['insertion_curve'] for name, r in per_method.items()})})
  report.write_atomic(workdir / 'comparison.md', markdown(results))
  return results


COLUMNS = (('gt_known_graphcut', 'GT-known GraphCut'), ('fallbacks_graphcut', 'fallback boxes GraphCut'),
           ('gt_known_threshold_15', 'GT-known thr. 15%'),
           ('fallbacks_threshold_15', 'fallback boxes thr. 15%'),
           ('pointing_game', 'pointing'), ('pointing_game_class_mean', 'pointing, class mean'),
           ('deletion_auc', 'deletion AUC (lower)'), ('insertion_auc', 'insertion AUC (higher)'),
           ('sanity_top_layer_absolute', 'rho top layer random'),
           ('sanity_all_layers_absolute', 'rho all random'),
           ('sanity_all_layers_signed', 'rho all random, signed'), ('ms_per_image', 'ms / image'))


def table(results: dict) -> str:
  """The comparison as a markdown table, one row per method."""
  first = next(iter(results['methods'].values()))
  columns = [(key, title) for key, title in COLUMNS if key in first]
  lines = ['| method | ' + ' | '.join(t for _, t in columns) + ' |', '|---' * (len(columns) + 1) + '|']
  for name, r in results['methods'].items():
    cells = [f'{r[key]:.2f}' if key == 'ms_per_image' else str(r[key]) if isinstance(r[key], int)
             else f'{r[key]:.3f}' for key, _ in columns]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def markdown(results: dict) -> str:
  return '\n'.join([
      f"# {results['name']}: attribution methods compared",
      '',
      f"{results['num_images']} test images (net accuracy on them "
      f"{results['accuracy_on_images']:.3f}), the true class's map of each method; sanity check on the first "
      f"{results['num_sanity']}. GT-known: box "
      'from the map (GraphCut pipeline of Sect. 3.2, or the 15% threshold) with IoU >= 0.5; fallback boxes: '
      'full-image boxes given for a flat (constant) or invalid map or an empty cut, counted like any other '
      'box. Pointing: the fraction of images whose map peaks on the object (or within the tolerance), and '
      'TorchRay\'s mean over classes. Deletion / insertion: area '
      "under the class probability as pixels are removed / restored in the map's order. rho: Spearman "
      'correlation of the map after randomising the top layer / all layers with the original map (lower '
      'means the map depends on the weights).',
      '',
      table(results),
      '',
      '![methods x images](comparison.png)',
      '',
      '![sanity check](sanity.png)',
      '',
      '![deletion and insertion](deletion_insertion.png)',
      '',
  ])
