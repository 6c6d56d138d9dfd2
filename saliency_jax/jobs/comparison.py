"""Attribution methods compared on the same images with the same metrics.

`run(config, workdir)` (what `experiments/compare_attributions.py` calls) takes the config's data
and trained (or pretrained) net through `settings.prepare`, computes every method of
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

import dataclasses
import pathlib
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from saliency_jax import defaults, faithfulness, localise, metrics, report, saliency, xla
from saliency_jax.jobs import settings
from saliency_jax.protocol import maps, scores


def default_settings() -> ml_collections.ConfigDict:
  """config.compare: which methods with which settings, and images per metric (`defaults.comparison`).

  Returns:
    An `ml_collections.ConfigDict`.
  """
  return defaults.comparison()


@dataclasses.dataclass(frozen=True)
class Compare:
  """The comparison's settings: maps, cuts, the metrics' images and steps, timing, seed.

  config.compare's keys and config.chunk_size, workers, pointing_tolerance: the maps ({name:
  `maps.MapSpec`}, whole image), the cuts ({name: `localisation.Cut`}), the metrics' images and steps,
  the timing repeats and the seed.
  """
  specs: dict
  cuts: dict
  num_sanity: int
  deletion_steps: int
  insertion_blur: float
  timing_repeats: int
  seed: int
  chunk_size: int | None
  workers: int
  pointing_tolerance: float


def compute_maps(model, x, labels, specs: dict, *, chunk_size: int | None, seed: int = 0, repeats: int = 3,
                 log=print):
  """Every method's maps of the true classes, and its seconds per image.

  Each by `maps.make_maps` (crops 'image': the method's own function on the whole image). Each method runs
  once on the first chunk to compile, then `repeats` times on all images; the time is the median of those
  runs.

  Args:
    model: the net.
    x: normalised images [N, H, W, C].
    labels: int [N].
    specs: {method: `maps.MapSpec`}.
    chunk_size: images per call.
    seed: the key of methods that draw noise.
    repeats: timed runs on all images.
    log: where progress is said.

  Returns:
    ({method: (absolute maps [N, H, W], signed maps [N, H, W])}, {method: seconds per image}).
  """
  out, seconds = {}, {}
  warm = len(x) if not chunk_size else min(chunk_size, len(x))
  bar = tqdm(total=len(specs) * len(x), desc='comparison maps', unit='img', mininterval=2.0,
             disable=jax.process_index() != 0)
  for name, spec in specs.items():
    wanted = {name: spec}
    maps.make_maps(model, x[:warm], specs=wanted, labels=labels[:warm], chunk_size=chunk_size, seed=seed,
                   signed=True)
    times = []
    for _ in range(max(1, repeats)):
      t = time.perf_counter()
      made = maps.make_maps(model, x, specs=wanted, labels=labels, chunk_size=chunk_size, seed=seed,
                            signed=True)
      times.append(time.perf_counter() - t)
    seconds[name] = float(np.median(times)) / len(x)
    out[name] = (made.maps[name][0], made.signed[name])
    bar.update(len(x))
    log(f'{name}: {1e3 * seconds[name]:.2f} ms per image')
  bar.close()
  return out, seconds


def sanity(model, x, labels, spec: maps.MapSpec, *, seed: int, chunk_size: int | None) -> dict:
  """The cascading randomisation check of one method (`faithfulness.cascading_randomisation`).

  Args:
    model: the net.
    x: normalised images [n, H, W, C].
    labels: int [n].
    spec: the method's `maps.MapSpec`.
    seed: the fresh weights' seed (seed + 1) and the noise's.
    chunk_size: images per call.

  Returns:
    The check's dict, with 'absolute' and 'signed' maps.
  """
  def attribute(m):
    made = maps.make_maps(m, x, specs={'map': spec}, labels=labels, chunk_size=chunk_size, seed=seed,
                          signed=True)
    return {'absolute': made.maps['map'][0], 'signed': made.signed['map']}

  return faithfulness.cascading_randomisation(model, faithfulness.fresh_like(model, seed + 1), attribute)


def evaluate(c: Compare, model, x, labels, photos, gt_labels, gt_boxes, masks=None, log=print, *,
             difficult=None) -> tuple[dict, dict]:
  """Every metric of the module docstring for every method.

  Args:
    c: the comparison's settings (`Compare`).
    model: the net.
    x: normalised images [N, H, W, C].
    labels: int [N].
    photos: uint8 images the boxes are cut on.
    gt_labels: per image, labels [M_i].
    gt_boxes: per image, boxes [M_i, 4].
    masks: bool [N, H, W] object masks, or None.
    log: where progress is said.
    difficult: per image the boxes' VOC flags (None: none).

  Returns:
    ({method: metrics}, {method: absolute maps [N, H, W] at the size of `photos`}).
  """
  n = len(x)
  size = photos.shape[1:3]
  boxes = scores.class_boxes(gt_labels, gt_boxes, labels)
  flags = None if difficult is None else scores.class_boxes(gt_labels, difficult, labels)
  tolerance = c.pointing_tolerance if masks is not None else 15.0 * max(size) / 224
  made, seconds = compute_maps(model, x, labels, c.specs, chunk_size=c.chunk_size, seed=c.seed,
                               repeats=c.timing_repeats, log=log)
  out, shown = {}, {}
  bar = tqdm(total=len(made) * n, desc='comparison metrics', unit='img', mininterval=2.0,
             disable=jax.process_index() != 0)
  for name, (absolute, _) in made.items():
    t = time.perf_counter()
    on_photos = maps.onto({name: (absolute, absolute[:, None][:, :0])}, size)[name][0]
    r = {'ms_per_image': 1e3 * seconds[name]}
    for loc_name, cut in c.cuts.items():
      results = localise.localise_batch(list(photos), list(on_photos), cut.settings, workers=c.workers)
      r[f'gt_known_{loc_name}'] = metrics.gt_known_accuracy([res.box for res in results], gt_labels, gt_boxes,
                                                            labels)
      r[f'fallbacks_{loc_name}'] = localise.fallbacks(results)  # full-image boxes: flat / bad map, empty cut
    game = scores.pointing(on_photos, labels, masks=masks, boxes=boxes, difficult=flags, tolerance=tolerance)
    r['pointing_game'], r['pointing_game_class_mean'] = game['per_image'], game['class_mean']
    r['pointing_played'] = game['played']
    curves = faithfulness.deletion_insertion(model, x, labels, absolute, steps=c.deletion_steps,
                                             insertion_blur=c.insertion_blur, chunk_size=c.chunk_size)
    r['deletion_auc'] = float(curves['deletion'].mean())
    r['insertion_auc'] = float(curves['insertion'].mean())
    r['deletion_curve'] = curves['deletion_curve'].mean(0).tolist()
    r['insertion_curve'] = curves['insertion_curve'].mean(0).tolist()
    k = min(c.num_sanity, n)
    check = sanity(model, x[:k], labels[:k], c.specs[name], seed=c.seed, chunk_size=c.chunk_size)
    r['sanity'] = check
    for kind in ('absolute', 'signed'):
      r[f'sanity_top_layer_{kind}'] = check[kind][0]
      r[f'sanity_all_layers_{kind}'] = check[kind][-1]
    out[name] = r
    shown[name] = on_photos
    log(f"{name}: GT-known graphcut {r.get('gt_known_graphcut', float('nan')):.3f}, "
        f"pointing {r['pointing_game']:.3f}, "
        f"deletion {r['deletion_auc']:.3f}, insertion {r['insertion_auc']:.3f}, randomised top layer rho "
        f"{r['sanity_top_layer_absolute']:.2f} ({time.perf_counter() - t:.0f} s)")
    bar.update(n)
  bar.close()
  return out, shown


@xla.under_config
def run(config, workdir: str, log=print) -> dict:
  """The comparison experiment; returns what it writes to workdir/comparison.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  cc = config.compare
  specs = {name: maps.MapSpec(name, 'image', dict(s)) for name, s in cc.methods.to_dict().items()}
  c = Compare(specs, settings.cuts(config, cc.localise), cc.num_sanity, cc.deletion_steps, cc.insertion_blur,
              cc.timing_repeats, cc.seed, config.chunk_size, config.workers, config.pointing_tolerance)
  names = settings.class_names(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepared = settings.prepare(config, workdir, log=log)
  data, model = prepared.data, prepared.model
  test = data['test']
  n = min(cc.num_images, len(test['images'])) if cc.num_images else len(test['images'])
  x, labels = prepared.splits['test']['images'][:n], test['labels'][:n]
  photos, gt_labels = test['images'][:n], test['box_labels'][:n]
  gt_boxes, masks = test['boxes'][:n], None if test['masks'] is None else test['masks'][:n]
  if 'photos' in data:  # localise on the larger images
    photos, gt_boxes, masks = data['photos']['images'][:n], data['photos']['boxes'][:n], None
  t0 = time.perf_counter()
  per_method, shown = evaluate(c, model, x, labels, photos, gt_labels, gt_boxes, masks, log,
                               difficult=test['difficult'][:n])
  results = {'name': config.name, 'num_images': n, 'num_sanity': min(cc.num_sanity, n),
             'test_accuracy': prepared.trained['test_accuracy'],
             'accuracy_on_images': float(np.mean(np.argmax(np.asarray(
                 saliency.scores(model, x, chunk_size=config.chunk_size)), -1) == labels)),
             'methods': per_method, 'seconds': time.perf_counter() - t0, 'config': config.to_dict()}
  report.write_json(workdir / 'comparison.json', results)
  figures(results, workdir, photos, shown, [names[y] for y in labels], masks, cc.num_figure,
          cc.deletion_steps)
  report.write_atomic(workdir / 'comparison.md', markdown(results))
  return results


def figures(results: dict, workdir: pathlib.Path, photos, shown: dict, titles, masks, num_figure: int,
            deletion_steps: int) -> None:
  """comparison.png (methods x the first images), sanity.png and deletion_insertion.png.

  Args:
    results: what `run` writes.
    workdir: where the figures go.
    photos: uint8 [N, H, W, 3].
    shown: {method: maps [N, H, W]}.
    titles: one per image.
    masks: bool [N, H, W], or None.
    num_figure: images in comparison.png.
    deletion_steps: the curves' steps.
  """
  per_method = results['methods']
  num = min(num_figure, len(photos))
  report.methods_figure(workdir / 'comparison.png', photos[:num],
                        {name: m[:num] for name, m in shown.items()}, titles[:num],
                        None if masks is None else masks[:num])
  first = next(iter(per_method.values()))
  report.curves_figure(workdir / 'sanity.png', {
      f'cascading randomisation, Spearman of |map| ({results["num_sanity"]} images)':
          ('layers randomised, top down', first['sanity']['layers'],
           {name: r['sanity']['absolute'] for name, r in per_method.items()}),
      'same, signed maps': ('layers randomised, top down', first['sanity']['layers'],
                            {name: r['sanity']['signed'] for name, r in per_method.items()})})
  fractions = np.linspace(0, 1, deletion_steps + 1)
  report.curves_figure(workdir / 'deletion_insertion.png', {
      'deletion (lower AUC is better)': ('fraction of pixels deleted', fractions,
                                         {name: r['deletion_curve'] for name, r in per_method.items()}),
      'insertion (higher AUC is better)': ('fraction of pixels inserted', fractions,
                                           {name: r['insertion_curve'] for name, r in per_method.items()})})


COLUMNS = (('gt_known_graphcut', 'GT-known GraphCut'), ('fallbacks_graphcut', 'fallback boxes GraphCut'),
           ('gt_known_threshold_15', 'GT-known thr. 15%'),
           ('fallbacks_threshold_15', 'fallback boxes thr. 15%'),
           ('pointing_game', 'pointing'), ('pointing_game_class_mean', 'pointing, class mean'),
           ('deletion_auc', 'deletion AUC (lower)'), ('insertion_auc', 'insertion AUC (higher)'),
           ('sanity_top_layer_absolute', 'rho top layer random'),
           ('sanity_all_layers_absolute', 'rho all random'),
           ('sanity_all_layers_signed', 'rho all random, signed'), ('ms_per_image', 'ms / image'))


def summary(results: dict, workdir) -> str:
  """What the entry point prints: the table.

  Args:
    results: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return f'\n{table(results)}\n\ncomparison.json, comparison.md and figures in {workdir}'


def table(results: dict) -> str:
  """The comparison as a markdown table, one row per method.

  Args:
    results: what `run` returns.

  Returns:
    The table.
  """
  first = next(iter(results['methods'].values()))
  columns = [(key, title) for key, title in COLUMNS if key in first]
  lines = ['| method | ' + ' | '.join(t for _, t in columns) + ' |', '|---' * (len(columns) + 1) + '|']
  for name, r in results['methods'].items():
    cells = [f'{r[key]:.2f}' if key == 'ms_per_image' else str(r[key]) if isinstance(r[key], int)
             else f'{r[key]:.3f}' for key, _ in columns]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def markdown(results: dict) -> str:
  """comparison.md: every method through every metric, and the figures.

  Args:
    results: the results the job writes as JSON.

  Returns:
    The markdown text.
  """
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
