"""The main job: data -> trained net -> saliency maps -> localisation -> metrics, figures, report.

`run(config, workdir)` is what `experiments/reproduce.py` calls; every number comes from the config
(configs/quickstart.py documents the fields), read once at the top into the protocol's settings
(`jobs.settings`, `Evaluation`, `Report`). Each stage keeps what it made in the workdir (the loaded
training data, orbax checkpoints of the training, the evaluation's chunks), so an interrupted run resumes.
  1. data: the config's source: the training split, resized (`protocol.setup`);
  2. training (or resuming) with `train.train_and_evaluate`, on one or several processes;
  3-4. the test split chunk by chunk (`evaluate_chunk`, config.eval_chunk records each, results on
     disk by `protocol.chunks`: memory bounded whatever the number of test images): test accuracy;
     10-crop saliency maps (paper Sect. 3.1) of each test image's top-k classes and of its true class
     (`protocol.maps.make_maps`); localisation (Sect. 3.2) of every map by each cut of
     `config.localise` (`protocol.localisation`); then from all chunks ILSVRC top-1 / top-k
     localisation error and GT-known box accuracy (`protocol.scores`);
  5. the Sect. 4 summary on the trained net: DeconvNet reconstruction == VJP with the DeconvNet
     ReLU rule, and how far gradient, DeconvNet and guided maps agree;
  6. metrics.json, report.md, saliency.png (like the paper's Fig. 2) and localisation.png
     (Fig. 3: image, map, seeds, mask, box against the ground truth).
"""

import dataclasses
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
  stats,
  train,
  xla,
)
from saliency_jax.data import duplicates, records
from saliency_jax.errors import UserError
from saliency_jax.jobs import config_checks, settings
from saliency_jax.protocol import cache, chunks, localisation, maps, scores, setup


def default_config() -> ml_collections.ConfigDict:
  """The settings every main-job config shares (`defaults.main_job`).

  Returns:
    An `ml_collections.ConfigDict`.
  """
  return defaults.main_job()


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What each evaluation chunk does (the config's keys of the same names).

  The data, the maps (the specs, top_k, crop_size, chunk_size, sequential_maps, share_true_maps), the
  cuts (config.localise) and their workers, the records per chunk, the crop test accuracy is measured on,
  whether the class models need the test scores, and the pointing game's tolerance.
  """
  data: setup.Data
  maps: maps.Request
  cuts: dict
  eval_chunk: int
  workers: int
  eval_crop: int
  num_classes: int
  class_scores: bool
  pointing_tolerance: float


@dataclasses.dataclass(frozen=True)
class Report:
  """What the report shows.

  Class names, figures (num_figure images, the cut `figure_method` drawn, the failures with
  failure_analysis), the Sect. 4 summary on num_deconvnet images, the class models.
  """
  name: str
  class_names: list
  num_figure: int
  num_deconvnet: int
  figure_method: str
  selected_method: str
  failure_analysis: bool
  class_models: dict


def evaluation(config) -> Evaluation:
  """The config read into `Evaluation`.

  Args:
    config: the job's config.

  Returns:
    The `Evaluation`.
  """
  request = maps.Request(settings.specs(config), config.top_k, config.crop_size, config.chunk_size,
                         config.sequential_maps, config.share_true_maps)
  return Evaluation(settings.data(config), request, settings.cuts(config), config.eval_chunk, config.workers,
                    settings.eval_crop(config), config.num_classes, bool(config.class_models.steps),
                    config.pointing_tolerance)


def report_settings(config) -> Report:
  """The config read into `Report`.

  Args:
    config: the job's config.

  Returns:
    The `Report`.
  """
  return Report(config.name, settings.class_names(config), config.num_figure, config.num_deconvnet,
                figure_method(config), config.selected_method, config.failure_analysis,
                config.class_models.to_dict())


# Settings that change no chunk's results (figures, report, the process layout): a rerun that changes
# only these reuses the chunks on disk.
NOT_IN_CHUNKS = ('distributed', 'workers', 'num_figure', 'figure_method', 'selected_method',
                 'failure_analysis', 'num_deconvnet', 'name', 'class_names', 'class_models')


def deconvnet_summary(model, x, labels) -> dict:
  """Sect. 4 on the trained net: explicit DeconvNet vs VJP, and the three rules' maps compared.

  The explicit DeconvNet for the model families `deconvnet.steps` knows; the rules' maps on any model
  with ReLUs (for one without, such as a GELU net, 'skipped' says why).

  Args:
    model: the net.
    x: normalised images [n, H, W, C].
    labels: int [n].

  Returns:
    {'num_images', 'spearman', ...}: the rules' maps' rank correlations and, where it applies, the explicit
    DeconvNet's difference to the VJP ('skipped' says why a part did not run).
  """
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
    rule_maps = deconvnet.rule_maps(model, x, labels, progress=bar.update)
    rho = {f'gradient_vs_{m}': float(np.mean([metrics.spearman(a, b)
                                              for a, b in zip(rule_maps['gradient'], rule_maps[m])]))
           for m in rule_maps if m != 'gradient'}
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


def class_model_summary(rep: Report, model, tested: dict, image_shape, mean, std, workdir: pathlib.Path,
                        log=print) -> dict:
  """Sect. 2: class model images, their figures, and their scores against the best real images.

  The classes: the report's class_models['classes'] (empty: the first 10). Writes class_models.png (the
  training mean added back) and class_models_objective.png.

  Args:
    rep: the report's settings (`Report`).
    model: the net.
    tested: every test image's 'labels', 'own_score' (the score of its class) and 'l2' (the norm of the
      normalised image).
    image_shape: (H, W, C).
    mean: the normalisation's mean.
    std: the normalisation's std.
    workdir: where the figures go.
    log: where progress is said.

  Returns:
    Per class the final score and the best score of a real test image of that class.
  """
  c = rep.class_models
  classes = np.asarray(c['classes'] if c['classes'] else range(min(10, len(rep.class_names))), np.int32)
  visualise = {k: v for k, v in c.items() if k != 'classes'}
  with tqdm(total=c['steps'], desc='class models', unit='step', mininterval=2.0) as bar:
    result = class_models.visualise(model, classes, image_shape=image_shape, return_history=True,
                                    progress=bar.update, **visualise)
  final = np.asarray(saliency.scores(model, result.images))[np.arange(len(classes)), classes]
  labels, own = tested['labels'], tested['own_score']
  real_max = np.array([own[labels == k].max() if (labels == k).any() else np.nan for k in classes])
  names = [rep.class_names[k] for k in classes]
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
         'settings': visualise}
  log(f"class models: score above every real test image of the class for "
      f"{int((final[has_real] > real_max[has_real]).sum())} of {int(has_real.sum())} classes")
  return out


def maps_of(ev: Evaluation, model, x, labels, names, images, seconds=None) -> maps.Maps:
  """The maps the cuts cut (`maps.make_maps`), resized onto the images localised on.

  The gradient maps of each image's top-k classes and true class (Sect. 3.1) and those of the other map
  specs `names` for the same classes; the gradient maps' seconds go to seconds['saliency'] and each other
  map's to seconds['maps_<name>'] (0: out of the gradient passes).

  Args:
    ev: the evaluation's settings (`Evaluation`).
    model: the net.
    x: normalised images [n, H, W, C].
    labels: int [n].
    names: the other map specs to make.
    images: the images localised on.
    seconds: a dict the maps' seconds are added to, or None.

  Returns:
    The `maps.Maps`, at the size of `images`.
  """
  seconds = {} if seconds is None else seconds
  made = ev.maps.make(model, x, labels=labels, names={'gradient', *names})
  for name, s in made.seconds.items():
    key = 'saliency' if name == 'gradient' else f'maps_{name}'
    seconds[key] = seconds.get(key, 0.0) + s
  made.maps = maps.onto(made.maps, images.shape[1:3])
  return made


def evaluate_chunk(ev: Evaluation, model, source, span: tuple[int, int], n: int, mean, std,
                   progress=None) -> dict:
  """One chunk of test records [start, stop): accuracy, maps, boxes, pointing hits.

  Read (bad records left out with data.skip_bad), test accuracy, and for the records among the first n the
  maps, every cut's boxes and the pointing hits; with class models, each test image's score of its class.

  Args:
    ev: the evaluation's settings (`Evaluation`).
    model: the net.
    source: the test source.
    span: (start, stop).
    n: the records evaluated (the first n).
    mean: the normalisation's mean.
    std: the normalisation's std.
    progress: the progress bars (`progress_bars`), or None.

  Returns:
    The results `chunks.write` keeps: rows 'tested' (every test image) and 'evaluated', totals and bad
    records.
  """
  start, stop = span
  seconds = {}
  t0 = time.perf_counter()
  r = setup.read_records(ev.data, source, range(start, stop), mean, std, photos=False)
  keep = np.flatnonzero(r['indices'] < n)
  seconds['data_test'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  x, labels = r['x'], r['labels']
  correct = train.hits(model, x, labels, crop=ev.eval_crop) if len(x) else 0
  seconds['test_accuracy'] = time.perf_counter() - t0
  tested = {'indices': r['indices'], 'labels': labels}
  if ev.class_scores:  # the best real image of each class (`class_model_summary`)
    t0 = time.perf_counter()
    s = (np.asarray(saliency.scores(model, x, chunk_size=ev.maps.chunk_size)) if len(x)
         else np.zeros((0, ev.num_classes)))
    tested['own_score'] = s[np.arange(len(x)), labels].astype(np.float32)
    tested['l2'] = np.linalg.norm(x.reshape(len(x), -1), axis=1)
    seconds['class_scores'] = time.perf_counter() - t0
  evaluated, localise_seconds, with_masks = {}, {}, 0
  if len(keep):
    x, labels = x[keep], labels[keep]
    images, masks, boxes = r['images'][keep], r['masks'], [r['boxes'][i] for i in keep]
    masks = None if masks is None else masks[keep]
    if ev.data.localise_size:  # localise on the photos
      t0 = time.perf_counter()
      (images, boxes), masks = setup.read_photos(ev.data, source, r['indices'][keep]), None
      seconds['data_test'] += time.perf_counter() - t0
    made = maps_of(ev, model, x, labels, list(ev.maps.specs), images, seconds)
    if progress is not None:
      progress('maps', len(keep))
    t0 = time.perf_counter()
    found, _ = localisation.localise_images(images, made.maps, ev.cuts, r['indices'][keep], n, made.shared,
                                            workers=ev.workers, progress=progress)
    localise_seconds = {name: f.pop('seconds') for name, f in found.items()}
    hits = np.zeros((len(keep), 3))  # pointing hit, saliency mass on the object, object area fraction
    if masks is not None:
      true_maps = made.maps['gradient'][0]
      hits = np.stack([scores.pointing_hits(true_maps, masks=masks, tolerance=ev.pointing_tolerance)[0],
                       metrics.mass_inside(true_maps, masks), masks.mean(axis=(1, 2))], axis=1)
      with_masks = len(keep)
    seconds['localisation'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gt_labels = [r['box_labels'][i] for i in keep]
    wsol = scores.wsol_rows(made.maps, scores.class_boxes(gt_labels, boxes, labels), masks)
    seconds['wsol_metrics'] = time.perf_counter() - t0
    evaluated = {'indices': r['indices'][keep], 'labels': labels, 'top_classes': made.top_classes,
                 'hits': hits, 'found': found, 'gt_boxes': boxes, 'gt_labels': gt_labels, 'wsol': wsol}
  totals = {'test_correct': correct, 'test_count': len(r['labels']), 'with_masks': with_masks,
            'seconds': seconds, 'localise_seconds': localise_seconds}
  return {'rows': {'tested': tested, 'evaluated': evaluated}, 'totals': totals, 'bad': r['bad']}


def progress_bars(cuts, total: int, enabled: bool) -> dict:
  """Tqdm bars (images/s) of the maps and of each cut, process 0 only.

  Args:
    cuts: the cuts.
    total: the images.
    enabled: draw them.

  Returns:
    {name: tqdm bar}.
  """
  names = ['maps'] + [f'localise {m}' for m in cuts]
  return {name: tqdm(total=total, desc=name, unit='img', position=i, disable=not enabled, mininterval=2.0,
                     leave=True) for i, name in enumerate(names)}


def evaluate(ev: Evaluation, model, source, n: int, mean, std, where: pathlib.Path, timeout_s: float,
             log=print) -> dict:
  """Stages 3-4 on every chunk of the test split this process takes (p, p + P, ...).

  Skips the chunks intact on disk in `where`.

  Args:
    ev: the evaluation's settings (`Evaluation`).
    model: the net.
    source: the test source.
    n: the records evaluated.
    mean: the normalisation's mean.
    std: the normalisation's std.
    where: the chunks' folder.
    timeout_s: how long process 0 waits for the others.
    log: where progress is said.

  Returns:
    Process 0: every chunk merged (`chunks.wait`); the others: {'process_index', 'num_chunks'}.
  """
  spans = chunks.plan(len(source), ev.eval_chunk)
  for other in chunks.made_by_other_code(where):
    log(f'not reusing the evaluation chunks in {other}: made by other code (same config and weights)')
  process, count = jax.process_index(), jax.process_count()
  mine = list(range(process, len(spans), count))
  todo = [c for c in mine if not chunks.intact(where, c, spans[c], log)]
  if len(todo) < len(mine):
    log(f'resuming the evaluation: {len(mine) - len(todo)} of {len(mine)} chunks already in {where}')
  bars = progress_bars(ev.cuts, sum(max(0, min(spans[c][1], n) - spans[c][0]) for c in todo), process == 0)
  def progress(name, k):
    bars['maps' if name == 'maps' else f'localise {name}'].update(k)
  try:
    for c in todo:
      result = evaluate_chunk(ev, model, source, spans[c], n, mean, std, progress)
      chunks.write(where, c, spans[c], result)
      del result
      host.release_memory()
  finally:
    for bar in bars.values():
      bar.close()
  if process != 0:
    log(f'process {process}: {len(mine)} chunks evaluated, in {where}')
    return {'process_index': process, 'num_chunks': len(mine)}
  return chunks.wait(where, spans, timeout_s)


# metrics.json's keys, in order
ORDER = ('test_accuracy', 'top1_accuracy_eval', 'top{k}_accuracy_eval', 'accuracy_intervals', 'num_train',
         'num_test', 'num_eval', 'num_processes', 'bad_records', 'train_test_duplicates', 'localisation',
         'selected_method', 'compared', 'comparisons', 'wsol', 'failures', 'deconvnet_vs_gradient',
         'class_models', 'training', 'seconds', 'config', 'pointing_game', 'pointing_game_class_mean',
         'saliency_mass_on_object', 'object_area_fraction')


@xla.under_config
def run(config, workdir: str, log=print) -> dict:
  """The main job; returns the metrics written to workdir/metrics.json.

  The test split is read, mapped and localised chunk by chunk (`evaluate_chunk`; config.eval_chunk records
  each), each chunk's results written to workdir/evaluation/<digest>/ (`protocol.chunks`; the digest of the
  settings, the weights and the code): memory does not grow with the number of test images, a rerun
  resumes at the first chunk not on disk, and with several processes each takes every P-th chunk.

  Args:
    config: the job's config.
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    The metrics (on several hosts: process 0; the others return {'process_index', 'num_chunks'} once their
    chunks are written).

  Raises:
    UserError: a config that cannot run, or a test split without records.
  """
  config_checks.check_main_job(config)  # every setting, before any work
  d = config.distributed
  ev, rep = evaluation(config), report_settings(config)
  data = ev.data
  chunk_key = {**{k: v for k, v in config.to_dict().items() if k not in NOT_IN_CHUNKS},
               'class_scores': ev.class_scores, 'backward_options': xla.backward_options()}
  trains_here = not settings.checkpoint(config).kind
  parallel.initialize(d.coordinator_address or None, d.num_processes, d.process_id, d.timeout_s)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  prepared = settings.prepare(config, workdir, test=False, log=log)  # 1-2: data, the trained net
  model, mean, std, seconds = prepared.model, prepared.mean, prepared.std, prepared.seconds
  source = data.sources('test')
  if not len(source):
    raise UserError(f'the test split of config.data ({config.data.name}) has no records')
  leaked = duplicates(data.sources('train'), source) if trains_here and config.data.name == 'voc' else []
  for a, b in leaked[:5]:
    log(f'warning: test image {b} is the training image {a} (the same file)')
  n = len(source) if not config.num_eval else min(config.num_eval, len(source))

  t0 = time.perf_counter()  # 3-4: maps and boxes, chunk by chunk
  where = chunks.folder(workdir / 'evaluation', chunk_key, cache.weights_digest(model), cache.source_digest())
  merged = evaluate(ev, model, source, n, mean, std, where, d.timeout_s, log)
  seconds['evaluation'] = time.perf_counter() - t0
  if 'process_index' in merged:
    return merged
  results, per_image = summarise(ev, rep, merged, prepared, log)
  results.update(num_processes=d.num_processes, train_test_duplicates=[list(pair) for pair in leaked],
                 bad_records=records.unique(results['bad_records'] + list(getattr(source, 'bad', []))
                                            + merged['bad']))

  ev_rows = merged['rows']['evaluated']
  first = setup.read_records(data, source, ev_rows['indices'][:max(rep.num_figure, rep.num_deconvnet)],
                             mean, std)
  t0 = time.perf_counter()  # 5: Sect. 4 on the first evaluated images
  m = min(rep.num_deconvnet, len(first['x']))
  results['deconvnet_vs_gradient'] = deconvnet_summary(model, first['x'][:m], first['labels'][:m])
  seconds['deconvnet'] = time.perf_counter() - t0
  if config.class_models.steps:  # Sect. 2
    t0 = time.perf_counter()
    shape = (data.image_size, data.image_size, 3)
    results['class_models'] = class_model_summary(rep, model, merged['rows']['tested'], shape, mean, std,
                                                  workdir, log)
    seconds['class_models'] = time.perf_counter() - t0
  results.update(seconds=seconds, config=config.to_dict())
  k = config.top_k
  results = {key.format(k=k): results[key.format(k=k)] for key in ORDER if key.format(k=k) in results}
  report.write_json(workdir / 'metrics.json', results)  # 6: metrics, figures, report
  figures(ev, rep, model, workdir, first, ev_rows, n, per_image, source, mean, std)
  report.write_atomic(workdir / 'report.md', markdown(results))
  return results


def summarise(ev: Evaluation, rep: Report, merged: dict, prepared: setup.Setup, log=print) -> tuple:
  """The metrics of every chunk merged.

  Test accuracy, top-k accuracy, the cuts' localisation metrics (`scores.localisation_metrics`), why their
  guesses fail (with failure_analysis), the pointing game (masks only).

  Args:
    ev: the evaluation's settings (`Evaluation`).
    rep: the report's settings (`Report`).
    merged: the chunks' merged results.
    prepared: the `setup.Setup` (its seconds get the chunks').
    log: where the numbers are said.

  Returns:
    (results, each image's failure kind per cut or None).
  """
  ev_rows, totals, seconds = merged['rows']['evaluated'], merged['totals'], prepared.seconds
  for key, value in totals['seconds'].items():
    seconds[key] = seconds.get(key, 0.0) + value
  trained = {**prepared.trained, 'test_accuracy': totals['test_correct'] / totals['test_count']}
  log(f"test accuracy {trained['test_accuracy']:.3f} on {totals['test_count']} images")
  t0 = time.perf_counter()
  found = {name: {**f, 'seconds': totals['localise_seconds'][name]} for name, f in ev_rows['found'].items()}
  labels, top = ev_rows['labels'], ev_rows['top_classes']
  right = {name: scores.right_per_image(f, labels, ev_rows['gt_labels'], ev_rows['gt_boxes'], top)
           for name, f in found.items()}
  loc = scores.localisation_metrics(found, labels, ev_rows['gt_labels'], ev_rows['gt_boxes'], top, log,
                                    right=right)
  # on the same images, paired: the selected cut against the paper's cut, the best other and the best
  # baseline; without one, the paper's cut against every other
  def error(name):
    return loc[name][f'top{top.shape[1]}_loc_error']
  if rep.selected_method:
    compared = rep.selected_method
    rest = [name for name in loc if name not in (compared, 'graphcut')]
    baselines = [name for name in rest if ev.cuts[name].settings.method in ('full', 'centre')]
    others = ['graphcut', min(rest, key=error, default=None), min(baselines, key=error, default=None)]
  else:
    compared = 'graphcut' if 'graphcut' in loc else min(loc, key=error)
    others = [name for name in loc if name != compared]
  comparisons = scores.paired_comparisons(right, compared, others)
  failures = per_image = None
  if rep.failure_analysis:
    failures = scores.localisation_failures(found, ev_rows['gt_labels'], ev_rows['gt_boxes'], top)
    per_image = failures.pop('per_image')
  seconds['localisation'] = seconds.get('localisation', 0.0) + time.perf_counter() - t0
  counts = {'test_accuracy': (totals['test_correct'], totals['test_count']),
            'top1_accuracy_eval': (int(np.sum(top[:, 0] == labels)), len(labels)),
            f'top{ev.maps.top_k}_accuracy_eval': (int(np.sum((top == labels[:, None]).any(1))), len(labels))}
  results = {
      'test_accuracy': trained['test_accuracy'],
      'top1_accuracy_eval': float(np.mean(top[:, 0] == labels)),
      f'top{ev.maps.top_k}_accuracy_eval': float(np.mean((top == labels[:, None]).any(1))),
      'accuracy_intervals': {name: [stats.binomial_interval(*h)[e] for e in ('low', 'high')]
                             for name, h in counts.items()},  # exact binomial (Clopper-Pearson), 95%
      'num_train': int(len(prepared.data['train']['images'])) if 'train' in prepared.data else 0,
      'num_test': int(totals['test_count']), 'num_eval': len(labels),
      'bad_records': setup.skipped_records(prepared.data),  # every record left out (data.skip_bad)
      'localisation': loc, 'selected_method': rep.selected_method,
      **({'compared': compared, 'comparisons': comparisons} if comparisons else {}),
      'wsol': scores.wsol_summary(ev_rows['wsol']),
      **({'failures': failures} if failures else {}), 'training': trained,
  }
  if totals['with_masks'] and totals['with_masks'] == len(labels):
    game = metrics.pointing_accuracy(ev_rows['hits'][:, 0] > 0, labels)
    results['pointing_game'] = game['per_image']
    results['pointing_game_class_mean'] = game['class_mean']  # TorchRay's summary: the mean over classes
    results['saliency_mass_on_object'] = float(ev_rows['hits'][:, 1].mean())
    results['object_area_fraction'] = float(ev_rows['hits'][:, 2].mean())
  return results, per_image


def figure_method(config) -> str:
  """The cut localisation.png shows.

  Args:
    config: the job's config.

  Returns:
    config.figure_method, or ('') the selected method, else 'graphcut', else the first of
    config.localise.

  Raises:
    ValueError: a figure_method that is not one of config.localise.
  """
  name = config.get('figure_method') or config.get('selected_method') or (
      'graphcut' if 'graphcut' in config.localise else next(iter(config.localise)))
  if name not in config.localise:
    raise ValueError(f'config.figure_method {name!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  return name


def figures(ev: Evaluation, rep: Report, model, workdir: pathlib.Path, first: dict, ev_rows: dict, n: int,
            per_image, source, mean, std) -> None:
  """saliency.png and localisation.png of the first evaluated images, and failures.png.

  Their maps are computed again.

  Args:
    ev: the evaluation's settings (`Evaluation`).
    rep: the report's settings (`Report`).
    model: the net.
    workdir: where the figures go.
    first: the first evaluated records (`setup.read_records`).
    ev_rows: the merged 'evaluated' rows.
    n: the number of evaluated records.
    per_image: each image's failure kind per cut, or None (no failures.png).
    source: the test source.
    mean: the normalisation's mean.
    std: the normalisation's std.
  """
  classes = rep.class_names
  num = min(rep.num_figure, len(first['x']))
  shown = rep.figure_method
  cut = ev.cuts[shown]
  made = maps_of(ev, model, first['x'][:num], first['labels'][:num], [cut.map], first['images'])
  _, kept = localisation.localise_images(first['images'][:num], made.maps, {shown: cut},
                                         first['indices'][:num], n, made.shared, workers=ev.workers)
  titles = [f'{classes[t]} (top-1 {classes[p]})'
            for t, p in zip(first['labels'][:num], ev_rows['top_classes'][:num, 0])]
  masks = None if first['masks'] is None else first['masks'][:num]
  report.saliency_figure(workdir / 'saliency.png', first['images'][:num], made.maps['gradient'][0], titles,
                         masks)
  shown_maps = made.maps[cut.map][0]
  s = cut.settings
  seeds = [localise.seeds(mp, s.fg_quantile, s.bg_quantile, s.fg_floor)[:2] for mp in shown_maps]
  report.localisation_figure(workdir / 'localisation.png', first['images'][:num], shown_maps, seeds,
                             kept[shown], first['boxes'][:num], titles)
  if per_image:
    drawn = [name for name in ('graphcut', rep.selected_method) if name in per_image]
    rows = {name: failure_examples(ev, model, ev_rows, per_image[name], name, classes, source, mean, std)
            for name in dict.fromkeys(drawn)}
    if any(rows.values()):
      report.failure_figure(workdir / 'failures.png', {k: v for k, v in rows.items() if v})


FAILURE_KINDS = ('too_small', 'too_large', 'displaced', 'wrong_classes')


def failure_examples(ev: Evaluation, model, ev_rows: dict, categories, name: str, classes, source, mean, std,
                     per_kind: int = 2) -> list[tuple]:
  """`report.failure_figure`'s examples of one cut: the first evaluated images of each failure kind.

  For a box that missed, the guess of a right class with the best IoU and the map it was cut from; for no
  right class, the top-1 class's map and no box.

  Args:
    ev: the evaluation's settings (`Evaluation`).
    model: the net.
    ev_rows: the merged 'evaluated' rows.
    categories: each image's failure kind for the cut.
    name: the cut.
    classes: the class names.
    source: the test source.
    mean: the normalisation's mean.
    std: the normalisation's std.
    per_kind: examples per kind.

  Returns:
    [(image, map, guessed box or None, ground-truth boxes, title)].
  """
  found = ev_rows['found'][name]
  picked = [(kind, r) for kind in FAILURE_KINDS
            for r in [r for r, c in enumerate(categories) if c == kind][:per_kind]]
  if not picked:
    return []
  rows = [r for _, r in picked]
  sample = setup.read_records(ev.data, source, ev_rows['indices'][rows], mean, std)
  used = ev.cuts[name].map
  made = maps_of(ev, model, sample['x'], sample['labels'], [used], sample['images'])
  top_maps = made.maps[used][1]
  out = []
  for p, (kind, r) in enumerate(picked):
    gt_labels, gt = np.asarray(ev_rows['gt_labels'][r]), np.asarray(ev_rows['gt_boxes'][r])
    top = ev_rows['top_classes'][r]
    right = [j for j in range(len(top)) if (gt_labels == top[j]).any()]
    j = max(right, key=lambda j: metrics.box_iou(found['top_boxes'][r, j], gt[gt_labels == top[j]]).max(),
            default=0)
    box = tuple(found['top_boxes'][r, j]) if right else None
    title = f"{kind.replace('_', ' ')}: {classes[int(top[j])]}"
    out.append((sample['images'][p], top_maps[p, j], box, gt, title))
  return out


def summary(results: dict, workdir) -> str:
  """What the entry point prints: the records skipped, the test accuracy and the localisation table.

  Args:
    results: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  if 'process_index' in results:
    return ''
  bad = results.get('bad_records', [])
  lines = []
  if bad:
    lines += ['', f'skipped {len(bad)} bad records (config.data.skip_bad):']
    lines += [f"  {b['record']}: {b['reason']}: {b['message']}" for b in bad[:20]]
    if len(bad) > 20:
      lines.append(f'  ... and {len(bad) - 20} more, every one in metrics.json')
  lines += ['', f"test accuracy {results['test_accuracy']:.3f}", '', table(results), '',
            f'metrics.json, report.md and figures in {workdir}']
  return '\n'.join(lines)


def table(results: dict) -> str:
  """The localisation table (markdown).

  With each method's fallback boxes (true-class / top-k) and, where the results carry them, 95% intervals
  over images; the config's selected method in bold.

  Args:
    results: a main-job metrics.json.

  Returns:
    The table.
  """
  k = results['config']['top_k']
  top_k = f' top-{k} loc. error |' if k > 1 else ''
  lines = [f'| method | GT-known box accuracy | top-1 loc. error |{top_k} fallback boxes (true / top-{k}) |',
           '| --- | --- | --- |' + ' --- |' * (k > 1) + ' --- |']
  for name, r in results['localisation'].items():
    label = f'**{name}** (selected)' if name == results.get('selected_method') else name
    row = f"| {label} | {report.cell(r, 'gt_known_box_accuracy')} | {report.cell(r, 'top1_loc_error')} |"
    row += f" {report.cell(r, f'top{k}_loc_error')} |" if k > 1 else ''
    fallbacks = r.get('fallbacks')  # results written before fallbacks were counted: '-'
    lines.append(row + (f" {fallbacks['true']} / {fallbacks['top']} |" if fallbacks else ' - |'))
  return '\n'.join(lines)


def wsol_table(results: dict) -> str:
  """MaxBoxAccV2 of each map and, with masks, PxAP, with 95% intervals (markdown).

  Its IoU 0.3 / 0.5 / 0.7 columns at their best score-map thresholds.

  Args:
    results: a main-job metrics.json.

  Returns:
    The table.
  """
  rows = results['wsol']
  pxap = any('pxap' in w for w in rows.values())
  header = '| map | MaxBoxAccV2 | IoU 0.3 | IoU 0.5 | IoU 0.7 | best thresholds |'
  lines = [header + (' PxAP |' if pxap else ''), '|---' * (6 + pxap) + '|']
  for name, w in rows.items():
    ci = w['intervals']
    cells = [report.with_interval(w['max_box_acc_v2'], ci['max_box_acc_v2'])]
    cells += [report.with_interval(w['box_acc'][t], ci[f'box_acc_{t}']) for t in w['box_acc']]
    cells.append(' / '.join(f'{v:.2f}' for v in w['best_threshold'].values()))
    if pxap:
      cells.append(f"{w['pxap']:.3f}" if 'pxap' in w else '-')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def comparison_lines(results: dict) -> list[str]:
  """The selected cut against the paper's, the best other and the best baseline (markdown lines).

  Without one, the paper's cut against every other, on the same images.

  Args:
    results: a main-job metrics.json.

  Returns:
    The lines.
  """
  chosen, k = results.get('compared', results['selected_method']), results['config']['top_k']
  which = 'selected cut' if chosen == results['selected_method'] else 'cut'
  lines = [f'The {which} `{chosen}` against others on the same images: the difference in images '
           f'localised right (positive: `{chosen}` is better), its 95% paired bootstrap interval and '
           "McNemar's exact p-value; an interval that holds 0: not distinguishable on these images.", '']
  for other, by_metric in results['comparisons'].items():
    for metric in ('gt_known_box_accuracy', f'top{k}_loc_error'):
      c = by_metric.get(metric)
      if c:
        verdict = 'distinguishable' if c['distinguishable'] else 'not distinguishable'
        lines.append(f"- vs `{other}`, {metric.replace('_', ' ')}: {c['difference']:+.3f} "
                     f"[{c['low']:+.3f}, {c['high']:+.3f}], p = {c['mcnemar']['p_value']:.3g} ({verdict})")
  return lines + ['']


def duplicate_lines(pairs: list) -> list[str]:
  """The report's warning about test images that are training images too.

  Args:
    pairs: [(training file, test file)].

  Returns:
    Markdown lines (none without pairs).
  """
  if not pairs:
    return []
  lines = [f'Warning: {len(pairs)} test images are training images too (the same file under another name); '
           'the numbers below count them:', '']
  return lines + [f'- `{test}` = `{train}` (training)' for train, test in pairs] + ['']


def bad_record_lines(bad: list[dict]) -> list[str]:
  """The report's list of skipped records.

  Args:
    bad: [{'record', 'reason', 'message'}].

  Returns:
    Markdown lines (none when nothing was skipped).
  """
  if not bad:
    return []
  lines = [f'Skipped {len(bad)} bad records (config.data.skip_bad); no number in this report counts them:',
           '']
  lines += [f"- `{b['record']}`: {b['reason']}: {b['message']}" for b in bad]
  return lines + ['']


def failures_table(r: dict) -> str:
  """Why the top-k guesses fail, per method (`scores.localisation_failures`), and the oracle.

  Args:
    r: a main-job metrics.json.

  Returns:
    The markdown table.
  """
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


def accuracy_text(r: dict, key: str) -> str:
  """An accuracy of a metrics.json with its exact binomial 95% interval where the file has one.

  Args:
    r: a main-job metrics.json.
    key: the accuracy's key.

  Returns:
    '0.980 [0.964, 0.990]'.
  """
  return report.with_interval(r[key], r.get('accuracy_intervals', {}).get(key))


def markdown(r: dict) -> str:
  """report.md: the main job's report.

  Args:
    r: the results the job writes as JSON.

  Returns:
    The markdown text.
  """
  k = r['config']['top_k']
  d = r['deconvnet_vs_gradient']
  lines = [
      f"# {r['config'].get('name', 'Experiment')}: saliency, localisation, DeconvNet vs gradient",
      '',
      f"Test accuracy {accuracy_text(r, 'test_accuracy')} on {r['num_test']} images; top-{k} "
      f"{accuracy_text(r, f'top{k}_accuracy_eval')} on the {r['num_eval']} evaluated.",
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
  if r.get('comparisons'):
    lines += comparison_lines(r)
  if r.get('wsol'):
    lines += ["MaxBoxAccV2 and PxAP (Choe et al. 2020, wsolevaluation's definitions) of each map's "
              'true-class maps, each score-map threshold chosen on these same images (the oracle threshold):',
              '',
              wsol_table(r), '']
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
