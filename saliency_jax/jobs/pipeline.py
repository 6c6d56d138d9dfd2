"""The main job: data -> trained net -> saliency maps -> localisation -> metrics, figures, report.

`run(config, workdir)` is what `experiments/reproduce.py` calls; every number comes from the
config (configs/quickstart.py documents the fields). Each stage keeps what it made in the workdir
(the loaded training data, orbax checkpoints of the training, the evaluation's chunks), so an
interrupted run resumes.
  1. data: the config's source (`saliency_jax.data.make_source`): the training split, resized;
  2. training (or resuming) with `train.train_and_evaluate`, on one or several processes;
  3-4. the test split chunk by chunk (`evaluate_chunk`, config.eval_chunk records each, results on
     disk by `chunks`: memory bounded whatever the number of test images): test accuracy; 10-crop
     saliency maps (paper Sect. 3.1) of each test image's top-k classes, in one call per batch (one
     forward, k backward passes), and of its true class; localisation (Sect. 3.2) of every map by each
     method of `config.localise` (the GraphCut pipeline and the baselines); then from all chunks ILSVRC
     top-1 / top-k localisation error and GT-known box accuracy;
  5. the Sect. 4 summary on the trained net: DeconvNet reconstruction == VJP with the DeconvNet
     ReLU rule, and how far gradient, DeconvNet and guided maps agree;
  6. metrics.json, report.md, saliency.png (like the paper's Fig. 2) and localisation.png
     (Fig. 3: image, map, seeds, mask, box against the ground truth).
"""

import pathlib
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from saliency_jax import (
  class_models,
  deconvnet,
  defaults,
  host,
  localise,
  metrics,
  parallel,
  report,
  rules,
  saliency,
  train,
)
from saliency_jax.data import Subset, duplicates, make_source, records, transforms
from saliency_jax.errors import UserError
from saliency_jax.jobs import chunks, config_checks, stages


def default_config() -> ml_collections.ConfigDict:
  """The settings every main-job config shares (`defaults.main_job`)."""
  return defaults.main_job()


def deconvnet_summary(model, x, labels) -> dict:
  """Sect. 4 on the trained net: explicit DeconvNet vs VJP (for the model families `deconvnet.steps`
  knows), and the three rules' maps compared (any model with ReLUs; for one without, such as a GELU net,
  'skipped' says why)."""
  if isinstance(model, rules.Function):
    found = rules.count(model, x[:1])
    if not found['relu'] + found['relu6']:
      other = ', '.join(found['other']) or 'none recognised'
      return {'num_images': 0, 'spearman': {},
              'skipped': f'the model has no ReLU (its nonlinearities: {other}): the DeconvNet and guided '
                         'rules do not apply'}
  bar = tqdm(total=len(deconvnet.RULES) + 1, desc='Sect. 4 summary', unit='part', mininterval=2.0,
             disable=jax.process_index() != 0)
  with bar:
    maps = deconvnet.rule_maps(model, x, labels, progress=bar.update)
    rho = {f'gradient_vs_{m}': float(np.mean([metrics.spearman(a, b)
                                              for a, b in zip(maps['gradient'], maps[m])]))
           for m in maps if m != 'gradient'}
    out = {'num_images': int(len(x)), 'spearman': rho}
    try:
      deconvnet.steps(model)
    except TypeError:
      return out  # no explicit DeconvNet for this architecture: the maps only
    compared = deconvnet.compare(model, x, neurons=labels)
    bar.update()
  return {**out, 'deconvnet_explicit_vs_vjp_relative': compared['deconvnet_explicit_vs_vjp']['relative'],
          'gradient_explicit_vs_grad_relative': compared['gradient_explicit_vs_grad']['relative'],
          'gradient_vs_deconvnet_relative': compared['gradient_vs_deconvnet']['relative']}


def class_model_summary(config, model, tested: dict, image_shape, mean, std, workdir: pathlib.Path,
                        log=print) -> dict:
  """Sect. 2: class model images of `config.class_models.classes` (empty: the first 10 classes);
  writes class_models.png (the training mean added back) and class_models_objective.png; returns per
  class the final score and the best score of a real test image of that class (tested: every test
  image's 'labels', 'own_score' (the score of its class) and 'l2' (the norm of the normalised image))."""
  c = config.class_models
  classes = np.asarray(c.classes if c.classes else range(min(10, config.num_classes)), np.int32)
  settings = {k: v for k, v in c.to_dict().items() if k != 'classes'}
  with tqdm(total=c.steps, desc='class models', unit='step', mininterval=2.0) as bar:
    result = class_models.visualise(model, classes, image_shape=image_shape, return_history=True,
                                    progress=bar.update, **settings)
  final = np.asarray(saliency.scores(model, result.images))[np.arange(len(classes)), classes]
  labels, own = tested['labels'], tested['own_score']
  real_max = np.array([own[labels == k].max() if (labels == k).any() else np.nan for k in classes])
  every_name = stages.class_names(config)  # read once: for ILSVRC it comes from synset_words.txt
  names = [every_name[k] for k in classes]
  report.class_model_figure(workdir / 'class_models.png', class_models.for_display(result.images, mean, std),
                            [f'{name} ({s:.0f})' for name, s in zip(names, final)])
  report.objective_figure(workdir / 'class_models_objective.png', np.asarray(result.objective),
                          np.asarray(result.scores), names, real_max)
  has_real = np.isfinite(real_max)
  out = {'classes': classes.tolist(), 'names': names, 'score': final.tolist(),
         'best_real_score': real_max.tolist(),
         'above_every_real_image': bool((final[has_real] > real_max[has_real]).all()),
         'image_l2_norm': np.linalg.norm(np.asarray(result.images).reshape(len(classes), -1),
                                         axis=1).tolist(),
         'real_l2_norm_median': float(np.median(tested['l2'])),
         'settings': settings}
  log(f"class models: score above every real test image of the class for "
      f"{int((final[has_real] > real_max[has_real]).sum())} of {int(has_real.sum())} classes")
  return out


# Settings that change no chunk's results (figures, report, the process layout): a rerun that changes
# only these reuses the chunks on disk.
NOT_IN_CHUNKS = ('distributed', 'workers', 'num_figure', 'figure_method', 'selected_method',
                 'failure_analysis', 'num_deconvnet', 'name', 'class_names', 'class_models')


def chunk_settings(config) -> dict:
  """What the chunks' results depend on besides the weights: the config less `NOT_IN_CHUNKS`, and
  whether the class models need the test images' scores."""
  settings = {k: v for k, v in config.to_dict().items() if k not in NOT_IN_CHUNKS}
  return {**settings, 'class_scores': bool(config.class_models.steps)}


def maps_of(config, model, x, labels, names, images, seconds=None) -> tuple:
  """The maps the localisation methods cut: the gradient maps of each image's top-k classes and true class
  (Sect. 3.1, with config.share_true_maps the true class's top-k map where it is among them), and those
  of the other config.maps entries `names` for the same classes. With config.localise_size, resized onto
  the `images` localised on (the photos). Returns (top classes [n, k], {name: (true-class maps, top-k
  maps)}, shared [n] or None); adds each stage's seconds to `seconds`.

  The first 10-crop Grad-CAM entry at a layer of the net's graph comes out of the gradient maps' own
  passes (`stages.gradient_and_grad_cam_maps`); its seconds are then in 'saliency' (its 'maps_' entry
  is 0)."""
  seconds = {} if seconds is None else seconds
  specs = {name: stages.check_map(name, config.maps[name]) for name in names if name != 'gradient'}
  fused = next((name for name, spec in specs.items() if stages.shares_gradient_passes(model, spec)),
               None)
  t0 = time.perf_counter()
  shared = None
  maps = {}
  if fused is not None:
    top_classes, maps['gradient'], maps[fused], shared = stages.gradient_and_grad_cam_maps(
        config, model, x, labels, specs[fused]['settings'].get('layer'))
    seconds[f'maps_{fused}'] = seconds.get(f'maps_{fused}', 0.0)
  elif config.get('share_true_maps'):  # the true class's gradient map, when among the top-k, is that map
    top_classes, top_maps, true_maps, shared = stages.shared_class_maps(config, model, x, labels)
    maps['gradient'] = (true_maps, top_maps)
  else:
    top_classes, top_maps, true_maps = stages.class_maps(config, model, x, labels)
    maps['gradient'] = (true_maps, top_maps)
  seconds['saliency'] = seconds.get('saliency', 0.0) + time.perf_counter() - t0
  for name, spec in specs.items():
    if name != fused:
      t0 = time.perf_counter()
      top, true = stages.method_maps(config, model, x, labels, top_classes, spec)
      if shared is not None:
        true = np.where((shared >= 0)[:, None, None], top[np.arange(len(top)), np.maximum(shared, 0)], true)
      maps[name] = (true, top)
      seconds[f'maps_{name}'] = seconds.get(f'maps_{name}', 0.0) + time.perf_counter() - t0
  maps = {name: maps[name] for name in ['gradient', *specs]}
  if config.localise_size:  # localise on the larger images, maps resized onto them
    maps = {name: stages.on_photos(true, top, images.shape[1:3]) for name, (true, top) in maps.items()}
  return top_classes, maps, shared


def read_photos(config, source, index) -> tuple[np.ndarray, list]:
  """The good records `index` at config.localise_size: (images, boxes)."""
  photos = transforms.load(Subset(source, index), config.localise_size, skip_bad=True, allow_empty=True)
  if len(photos['indices']) != len(index):
    raise ValueError(f'the test split read at {config.localise_size} px left out other records than at '
                     f'{config.data.image_size} px: {photos["bad"][:3]}')
  return photos['images'], photos['boxes']


def read_records(config, source, index, mean, std, *, skip_bad: bool = False, photos: bool = True) -> dict:
  """Test records `index` as the job reads them: {'indices', 'labels', 'x' (normalised, at
  data.image_size), 'images' (the images localised on: the photos at config.localise_size, else the test
  images), 'masks' (or None), 'boxes', 'box_labels' (of the images localised on), 'bad' (records left out
  with skip_bad, by record index)}. Without `photos`, 'images' are the test images even with
  config.localise_size (`read_photos` reads the photos)."""
  index = np.asarray(index, np.int64)
  test = transforms.load(Subset(source, index), config.data.image_size, skip_bad=skip_bad, allow_empty=True)
  kept = index[test['indices']]
  bad = [{**b, 'index': int(index[b['index']])} for b in test['bad']]
  out = {'indices': kept, 'labels': test['labels'], 'x': transforms.normalise(test['images'], mean, std),
         'images': test['images'], 'masks': test.get('masks'), 'boxes': test['boxes'],
         'box_labels': test['box_labels'], 'bad': bad}
  if config.localise_size and len(kept) and photos:
    images, boxes = read_photos(config, source, kept)
    out.update(images=images, masks=None, boxes=boxes)
  return out


def evaluate_chunk(config, model, source, span: tuple[int, int], n: int, mean, std, progress=None) -> dict:
  """One chunk of test records [start, stop): read (bad records left out with data.skip_bad), test
  accuracy, and for the records among the first n (those evaluated) the maps, every localisation
  method's boxes and the pointing hits; with class models, each test image's score of its class.
  Returns the results `chunks.write` keeps: rows 'tested' (every test image) and 'evaluated'."""
  start, stop = span
  seconds = {}
  t0 = time.perf_counter()
  r = read_records(config, source, range(start, stop), mean, std, skip_bad=config.data.skip_bad, photos=False)
  keep = np.flatnonzero(r['indices'] < n)
  seconds['data_test'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  x, labels = r['x'], r['labels']
  correct = train.hits(model, x, labels, crop=stages.eval_crop(config)) if len(x) else 0
  seconds['test_accuracy'] = time.perf_counter() - t0
  tested = {'indices': r['indices'], 'labels': labels}
  if config.class_models.steps:  # the best real image of each class (`class_model_summary`)
    t0 = time.perf_counter()
    scores = (np.asarray(saliency.scores(model, x, chunk_size=config.chunk_size)) if len(x)
              else np.zeros((0, config.num_classes)))
    tested['own_score'] = scores[np.arange(len(x)), labels].astype(np.float32)
    tested['l2'] = np.linalg.norm(x.reshape(len(x), -1), axis=1)
    seconds['class_scores'] = time.perf_counter() - t0
  evaluated, localise_seconds, with_masks = {}, {}, 0
  if len(keep):
    x, labels = x[keep], labels[keep]
    images, masks, boxes = r['images'][keep], r['masks'], [r['boxes'][i] for i in keep]
    masks = None if masks is None else masks[keep]
    if config.localise_size:  # localise on the photos
      t0 = time.perf_counter()
      (images, boxes), masks = read_photos(config, source, r['indices'][keep]), None
      seconds['data_test'] += time.perf_counter() - t0
    top_classes, maps, shared = maps_of(config, model, x, labels, stages.used_maps(config), images, seconds)
    if progress is not None:
      progress('maps', len(keep))
    t0 = time.perf_counter()
    found, _ = stages.localise_images(config, images, maps, r['indices'][keep], n, shared, progress=progress)
    localise_seconds = {name: f.pop('seconds') for name, f in found.items()}
    hits = np.zeros((len(keep), 3))  # pointing hit, saliency mass on the object, object area fraction
    if masks is not None:
      true_maps = maps['gradient'][0]
      hits = np.stack([metrics.pointing_hits(true_maps, masks, tolerance=config.pointing_tolerance),
                       metrics.mass_inside(true_maps, masks), masks.mean(axis=(1, 2))], axis=1)
      with_masks = len(keep)
    seconds['localisation'] = time.perf_counter() - t0
    evaluated = {'indices': r['indices'][keep], 'labels': labels, 'top_classes': top_classes, 'hits': hits,
                 'found': found, 'gt_boxes': boxes, 'gt_labels': [r['box_labels'][i] for i in keep]}
  totals = {'test_correct': correct, 'test_count': len(r['labels']), 'with_masks': with_masks,
            'seconds': seconds, 'localise_seconds': localise_seconds}
  return {'rows': {'tested': tested, 'evaluated': evaluated}, 'totals': totals, 'bad': r['bad']}


def progress_bars(config, total: int, enabled: bool) -> dict:
  """tqdm bars (images/s) of the maps and of each localisation method, process 0 only."""
  names = ['maps'] + [f'localise {m}' for m in config.localise]
  return {name: tqdm(total=total, desc=name, unit='img', position=i, disable=not enabled, mininterval=2.0,
                     leave=True) for i, name in enumerate(names)}


def run(config, workdir: str, log=print) -> dict:
  """The main job; returns the metrics written to workdir/metrics.json (on several hosts: process 0;
  the others return {'process_index', 'num_chunks'} once their chunks are written).

  The test split is read, mapped and localised chunk by chunk (`evaluate_chunk`; config.eval_chunk
  records each), each chunk's results written to workdir/evaluation/<digest>/ (`chunks`; the digest of
  the settings, the weights and the code):
  memory does not grow with the number of test images, a rerun resumes at the first chunk not on disk,
  and with several processes each takes every P-th chunk."""
  config_checks.check_main_job(config)  # every setting, before any work
  d = config.distributed
  parallel.initialize(d.coordinator_address or None, d.num_processes, d.process_id, d.timeout_s)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepared = stages.prepare(config, workdir, log, test=False)
  data, model, trained = prepared['data'], prepared['model'], prepared['trained']
  mean, std, seconds = prepared['mean'], prepared['std'], prepared['seconds']

  source = make_source(config.data, 'test')
  num_records = len(source)
  if not num_records:
    raise UserError(f'the test split of config.data ({config.data.name}) has no records')
  leaked = train_test_duplicates(config, source)
  for a, b in leaked[:5]:
    log(f'warning: test image {b} is the training image {a} (the same file)')
  n = num_records if not config.num_eval else min(config.num_eval, num_records)
  spans = chunks.plan(num_records, config.eval_chunk)
  where = chunks.folder(workdir / 'evaluation', chunk_settings(config), stages.digest(model),
                        stages.source_digest())
  for other in chunks.made_by_other_code(where):
    log(f'not reusing the evaluation chunks in {other}: made by other code (same config and weights)')
  process, count = jax.process_index(), jax.process_count()
  mine = list(range(process, len(spans), count))
  todo = [c for c in mine if not chunks.intact(where, c, spans[c], log)]
  if len(todo) < len(mine):
    log(f'resuming the evaluation: {len(mine) - len(todo)} of {len(mine)} chunks already in {where}')
  t0 = time.perf_counter()
  bars = progress_bars(config, sum(max(0, min(spans[c][1], n) - spans[c][0]) for c in todo), process == 0)
  def progress(name, k):
    bars['maps' if name == 'maps' else f'localise {name}'].update(k)
  try:
    for c in todo:
      result = evaluate_chunk(config, model, source, spans[c], n, mean, std, progress)
      chunks.write(where, c, spans[c], result)
      del result
      host.release_memory()
  finally:
    for bar in bars.values():
      bar.close()
  seconds['evaluation'] = time.perf_counter() - t0
  if process != 0:
    log(f'process {process}: {len(mine)} chunks evaluated, in {where}')
    return {'process_index': process, 'num_chunks': len(mine)}
  merged = chunks.wait(where, spans, d.timeout_s)
  ev, tested, totals = merged['rows']['evaluated'], merged['rows']['tested'], merged['totals']
  for key, value in totals['seconds'].items():
    seconds[key] = seconds.get(key, 0.0) + value
  trained = {**trained, 'test_accuracy': totals['test_correct'] / totals['test_count']}
  log(f"test accuracy {trained['test_accuracy']:.3f} on {totals['test_count']} images")

  t0 = time.perf_counter()
  found = {name: {**f, 'seconds': totals['localise_seconds'][name]} for name, f in ev['found'].items()}
  all_labels, all_top = ev['labels'], ev['top_classes']
  loc = stages.localisation_metrics(config, found, all_labels, ev['gt_labels'], ev['gt_boxes'], all_top, log)
  failures = per_image = None
  if config.get('failure_analysis'):
    failures = stages.localisation_failures(found, ev['gt_labels'], ev['gt_boxes'], all_top)
    per_image = failures.pop('per_image')
  seconds['localisation'] = seconds.get('localisation', 0.0) + time.perf_counter() - t0

  # the first evaluated images, read again: the Sect. 4 summary and the figures
  first = read_records(config, source, ev['indices'][:max(config.num_figure, config.num_deconvnet)], mean,
                       std)
  t0 = time.perf_counter()
  m = min(config.num_deconvnet, len(first['x']))
  sect4 = deconvnet_summary(model, first['x'][:m], first['labels'][:m])
  seconds['deconvnet'] = time.perf_counter() - t0

  if config.class_models.steps:
    t0 = time.perf_counter()
    shape = (config.data.image_size, config.data.image_size, 3)
    class_model = class_model_summary(config, model, tested, shape, mean, std, workdir, log)
    seconds['class_models'] = time.perf_counter() - t0

  results = {
      'test_accuracy': trained['test_accuracy'],
      'top1_accuracy_eval': float(np.mean(all_top[:, 0] == all_labels)),
      f'top{config.top_k}_accuracy_eval': float(np.mean((all_top == all_labels[:, None]).any(1))),
      'num_train': int(len(data['train']['images'])) if 'train' in data else 0,
      'num_test': int(totals['test_count']), 'num_eval': len(all_labels),
      'num_processes': d.num_processes,
      # every record left out (data.skip_bad), with its reason
      'bad_records': records.unique(stages.skipped_records(data) + list(getattr(source, 'bad', []))
                                    + merged['bad']),
      # test images whose files are training images too: their numbers are not held out
      'train_test_duplicates': [list(pair) for pair in leaked],
      'localisation': loc,
      'selected_method': config.get('selected_method'),
      **({'failures': failures} if failures else {}),
      'deconvnet_vs_gradient': sect4,
      **({'class_models': class_model} if config.class_models.steps else {}),
      'training': trained,
      'seconds': seconds,
      'config': config.to_dict(),
  }
  if totals['with_masks'] and totals['with_masks'] == len(all_labels):
    pointing = metrics.pointing_accuracy(ev['hits'][:, 0] > 0, all_labels)
    results['pointing_game'] = pointing['per_image']
    results['pointing_game_class_mean'] = pointing['class_mean']  # TorchRay's summary: the mean over classes
    results['saliency_mass_on_object'] = float(ev['hits'][:, 1].mean())
    results['object_area_fraction'] = float(ev['hits'][:, 2].mean())
  report.write_json(workdir / 'metrics.json', results)
  figures(config, model, workdir, first, ev, n, per_image, source, mean, std)
  report.write_atomic(workdir / 'report.md', markdown(results))
  return results


def figure_method(config) -> str:
  """The method localisation.png shows: config.figure_method, or ('' ) the selected method, else 'graphcut',
  else the first of config.localise."""
  name = config.get('figure_method') or config.get('selected_method') or (
      'graphcut' if 'graphcut' in config.localise else next(iter(config.localise)))
  if name not in config.localise:
    raise ValueError(f'config.figure_method {name!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  return name


def figures(config, model, workdir: pathlib.Path, first: dict, ev: dict, n: int, per_image, source, mean,
            std) -> None:
  """saliency.png and localisation.png of the first evaluated images (`first`: `read_records`; their maps
  computed again; n: the number of evaluated records), and with failure analysis failures.png."""
  classes = stages.class_names(config)
  num = min(config.num_figure, len(first['x']))
  shown = figure_method(config)
  used = stages.map_of(shown, config.localise[shown])
  _, maps, shared = maps_of(config, model, first['x'][:num], first['labels'][:num], [used], first['images'])
  _, kept = stages.localise_images(config, first['images'][:num], maps, first['indices'][:num], n, shared,
                                   methods={shown: config.localise[shown]})
  titles = [f'{classes[t]} (top-1 {classes[p]})'
            for t, p in zip(first['labels'][:num], ev['top_classes'][:num, 0])]
  masks = None if first['masks'] is None else first['masks'][:num]
  report.saliency_figure(workdir / 'saliency.png', first['images'][:num], maps['gradient'][0], titles, masks)
  shown_maps = maps[used][0]
  s = localise.settings(stages.cut_settings(config.localise[shown]))
  seeds = [localise.seeds(mp, s.fg_quantile, s.bg_quantile, s.fg_floor)[:2] for mp in shown_maps]
  report.localisation_figure(workdir / 'localisation.png', first['images'][:num], shown_maps, seeds,
                             kept[shown], first['boxes'][:num], titles)
  if per_image:
    drawn = [name for name in ('graphcut', config.get('selected_method')) if name in per_image]
    rows = {name: failure_examples(config, model, ev, per_image[name], name, classes, source, mean, std)
            for name in dict.fromkeys(drawn)}
    if any(rows.values()):
      report.failure_figure(workdir / 'failures.png', {k: v for k, v in rows.items() if v})


FAILURE_KINDS = ('too_small', 'too_large', 'displaced', 'wrong_classes')


def failure_examples(config, model, ev: dict, categories, name: str, classes, source, mean, std,
                     per_kind: int = 2) -> list[tuple]:
  """`report.failure_figure`'s examples of one method: the first `per_kind` evaluated images of each
  failure kind (read again and mapped). For a box that missed, the guess of a right class with the best
  IoU and the map it was cut from; for no right class, the top-1 class's map and no box."""
  found = ev['found'][name]
  picked = [(kind, r) for kind in FAILURE_KINDS
            for r in [r for r, c in enumerate(categories) if c == kind][:per_kind]]
  if not picked:
    return []
  rows = [r for _, r in picked]
  sample = read_records(config, source, ev['indices'][rows], mean, std)
  used = stages.map_of(name, config.localise[name])
  _, maps, _ = maps_of(config, model, sample['x'], sample['labels'], [used], sample['images'])
  top_maps = maps[used][1]
  out = []
  for p, (kind, r) in enumerate(picked):
    gt_labels, gt = np.asarray(ev['gt_labels'][r]), np.asarray(ev['gt_boxes'][r])
    top = ev['top_classes'][r]
    right = [j for j in range(len(top)) if (gt_labels == top[j]).any()]
    j = max(right, key=lambda j: metrics.box_iou(found['top_boxes'][r, j], gt[gt_labels == top[j]]).max(),
            default=0)
    box = tuple(found['top_boxes'][r, j]) if right else None
    title = f"{kind.replace('_', ' ')}: {classes[int(top[j])]}"
    out.append((sample['images'][p], top_maps[p, j], box, gt, title))
  return out


def table(results: dict) -> str:
  """The localisation table (markdown), with each method's fallback boxes (true-class / top-k); the
  config's selected method in bold."""
  k = results['config']['top_k']
  top_k = f' top-{k} loc. error |' if k > 1 else ''
  lines = [f'| method | GT-known box accuracy | top-1 loc. error |{top_k} fallback boxes (true / top-{k}) |',
           '| --- | --- | --- |' + ' --- |' * (k > 1) + ' --- |']
  for name, r in results['localisation'].items():
    label = f'**{name}** (selected)' if name == results.get('selected_method') else name
    row = f"| {label} | {r['gt_known_box_accuracy']:.3f} | {r['top1_loc_error']:.3f} |"
    row += f" {r[f'top{k}_loc_error']:.3f} |" if k > 1 else ''
    fallbacks = r.get('fallbacks')  # results written before fallbacks were counted: '-'
    lines.append(row + (f" {fallbacks['true']} / {fallbacks['top']} |" if fallbacks else ' - |'))
  return '\n'.join(lines)


def train_test_duplicates(config, test_source) -> list[tuple[str, str]]:
  """(training file, test file) of the test records whose image files are training records too, for a
  net trained here on a source with files (VOC folders); [] otherwise."""
  if stages.checkpoint_kind(config) or config.data.name != 'voc':
    return []
  return duplicates(make_source(config.data, 'train'), test_source)


def duplicate_lines(pairs: list) -> list[str]:
  """The report's warning about test images that are training images too (none: no lines)."""
  if not pairs:
    return []
  lines = [f'Warning: {len(pairs)} test images are training images too (the same file under another name); '
           'the numbers below count them:', '']
  return lines + [f'- `{test}` = `{train}` (training)' for train, test in pairs] + ['']


def bad_record_lines(bad: list[dict]) -> list[str]:
  """The report's list of skipped records (markdown lines; none when nothing was skipped)."""
  if not bad:
    return []
  lines = [f'Skipped {len(bad)} bad records (config.data.skip_bad); no number in this report counts them:',
           '']
  lines += [f"- `{b['record']}`: {b['reason']}: {b['message']}" for b in bad]
  return lines + ['']


def failures_table(r: dict) -> str:
  """Why the top-k guesses fail, per method (`stages.localisation_failures`), and the oracle."""
  f = r['failures']
  k, n = f['top_k'], r['num_eval']
  lines = [f'| method | correct | no right class in the top-{k} | right class, box too small | too large | '
           'displaced |', '| --- | --- | --- | --- | --- | --- |']
  for name, c in sorted(f['per_method'].items()):
    lines.append(f'| {name} | ' + ' | '.join(f'{c[key] / n:.3f}' for key in metrics.FAILURES) + ' |')
  lines += ['', f"Oracle (each image localised right by any method): top-{k} localisation error "
            f"{f[f'oracle_top{k}_loc_error']:.3f}. Too small / too large: the best box of a right class "
            'under half / over twice the area of the object it overlaps most; displaced: otherwise.']
  return '\n'.join(lines)


def markdown(r: dict) -> str:
  k = r['config']['top_k']
  d = r['deconvnet_vs_gradient']
  lines = [
      f"# {r['config'].get('name', 'Experiment')}: saliency, localisation, DeconvNet vs gradient",
      '',
      f"Test accuracy {r['test_accuracy']:.3f} on {r['num_test']} images; top-{k} "
      f"{r[f'top{k}_accuracy_eval']:.3f} on the {r['num_eval']} evaluated.",
      '',
      *bad_record_lines(r.get('bad_records', [])),
      *duplicate_lines(r.get('train_test_duplicates', [])),
      '## Localisation (paper Sect. 3.2)',
      '',
      'GT-known: the box from the true class\'s map, IoU >= 0.5 with a ground-truth box of that class. '
      f'ILSVRC error: top-1 / top-{k} classes each with its map\'s box; an image counts as localised when '
      'one guess has a right class and IoU >= 0.5. Fallback boxes: the full image, given where a map was '
      'flat (constant) or invalid, or its cut came out empty; they count in the scores like any other box.',
      '',
      table(r),
      '',
  ]
  if 'failures' in r:
    lines += ['Why the guesses fail (shares of the evaluated images):', '', failures_table(r), '']
  if 'pointing_game' in r:
    class_mean = (f", mean over classes {r['pointing_game_class_mean']:.3f}"
                  if 'pointing_game_class_mean' in r else '')
    tolerance = r['config']['pointing_tolerance']
    lines += [f"Pointing game (true class; a hit: the map's maximum on the object or under {tolerance} "
              f"px from it): {r['pointing_game']:.3f} of the images"
              f"{class_mean}; map mass on the object {r['saliency_mass_on_object']:.3f} "
              f"(object area {r['object_area_fraction']:.3f}).", '']
  explicit = (f"explicit DeconvNet reconstruction vs the VJP with the DeconvNet ReLU rule, relative max "
              f"difference {d['deconvnet_explicit_vs_vjp_relative']:.1e}; explicit backprop vs jax.grad "
              f"{d['gradient_explicit_vs_grad_relative']:.1e}; gradient vs DeconvNet "
              f"{d['gradient_vs_deconvnet_relative']:.2f} (they differ at the ReLUs). "
              if 'deconvnet_explicit_vs_vjp_relative' in d else '')
  summary = (f"Not computed: {d['skipped']}." if 'skipped' in d else
             f"On {d['num_images']} test images: {explicit}Spearman of the maps: "
             + ', '.join(f'{k_} {v:.2f}' for k_, v in d['spearman'].items()) + '.')
  lines += [
      '## DeconvNet vs gradient (paper Sect. 4)',
      '',
      summary,
      '',
      '![saliency](saliency.png)',
      '',
      '![localisation](localisation.png)',
      '',
  ]
  if 'class_models' in r:
    c = r['class_models']
    lines += [
        '## Class models (paper Sect. 2)',
        '',
        f"Gradient ascent on S_c(I) - {c['settings']['l2_weight']} ||I||^2 from the zero image, "
        f"{c['settings']['steps']} steps ({c['settings']['optimizer']}, "
        f"learning rate {c['settings']['learning_rate']}); "
        'shown with the training mean added back. Score of each class model against the best real test image '
        'of its class:',
        '',
        '| class | ' + ' | '.join(c['names']) + ' |',
        '|---' * (len(c['names']) + 1) + '|',
        '| class model | ' + ' | '.join(f'{v:.1f}' for v in c['score']) + ' |',
        '| best real image | ' + ' | '.join(f'{v:.1f}' for v in c['best_real_score']) + ' |',
        '',
        '![class models](class_models.png)',
        '',
        '![objective](class_models_objective.png)',
        '',
    ]
  lines += [
      'Seconds: ' + ', '.join(f'{k_} {v:.0f}' for k_, v in r['seconds'].items()),
      '',
  ]
  return '\n'.join(lines)
