"""The main job: data -> trained net -> saliency maps -> localisation -> metrics, figures, report.

`run(config, workdir)` is what `experiments/reproduce.py` calls; every number comes from the
config (configs/quickstart.py documents the fields). Each stage keeps what it made in the workdir
(the loaded data, orbax checkpoints of the training), so an interrupted run resumes.
  1. data: the config's source (`saliency_jax.data.make_source`), resized, both splits;
  2. training (or resuming) with `train.train_and_evaluate`; test accuracy;
  3. 10-crop saliency maps (paper Sect. 3.1) of each test image's top-k classes, in one call per
     chunk (one forward, k backward passes), and of its true class;
  4. localisation (Sect. 3.2) of every map by each method of `config.localise` (the GraphCut
     pipeline and the baselines); ILSVRC top-1 / top-k localisation error and GT-known box
     accuracy;
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

from saliency_jax import class_models, deconvnet, defaults, localise, metrics, parallel, report, saliency
from saliency_jax.jobs import hosts, stages


def default_config() -> ml_collections.ConfigDict:
  """The settings every main-job config shares (`defaults.main_job`)."""
  return defaults.main_job()


def deconvnet_summary(model, x, labels) -> dict:
  """Sect. 4 on the trained net: explicit DeconvNet vs VJP (for the model families `deconvnet.steps`
  knows), and the three rules' maps compared (any model)."""
  maps = deconvnet.rule_maps(model, x, labels)
  rho = {f'gradient_vs_{m}': float(np.mean([metrics.spearman(a, b)
                                            for a, b in zip(maps['gradient'], maps[m])]))
         for m in maps if m != 'gradient'}
  out = {'num_images': int(len(x)), 'spearman': rho}
  try:
    deconvnet.steps(model)
  except TypeError:
    return out  # no explicit DeconvNet for this architecture: the maps only
  compared = deconvnet.compare(model, x, neurons=labels)
  return {**out, 'deconvnet_explicit_vs_vjp_relative': compared['deconvnet_explicit_vs_vjp']['relative'],
          'gradient_explicit_vs_grad_relative': compared['gradient_explicit_vs_grad']['relative'],
          'gradient_vs_deconvnet_relative': compared['gradient_vs_deconvnet']['relative']}


def class_model_summary(config, model, x, labels, mean, std, workdir: pathlib.Path, log=print) -> dict:
  """Sect. 2: class model images of `config.class_models.classes` (empty: the first 10 classes);
  writes class_models.png (the training mean added back) and class_models_objective.png; returns per
  class the final score and the best score of a real test image of that class (x, labels)."""
  c = config.class_models
  classes = np.asarray(c.classes if c.classes else range(min(10, config.num_classes)), np.int32)
  settings = {k: v for k, v in c.to_dict().items() if k != 'classes'}
  result = class_models.visualise(model, classes, image_shape=x.shape[1:], return_history=True, **settings)
  final = np.asarray(saliency.scores(model, result.images))[np.arange(len(classes)), classes]
  real = np.asarray(saliency.scores(model, x, chunk_size=config.chunk_size))
  real_max = np.array([real[labels == k, k].max() if (labels == k).any() else np.nan for k in classes])
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
         'real_l2_norm_median': float(np.median(np.linalg.norm(x.reshape(len(x), -1), axis=1))),
         'settings': settings}
  log(f"class models: score above every real test image of the class for "
      f"{int((final[has_real] > real_max[has_real]).sum())} of {int(has_real.sum())} classes")
  return out


def run(config, workdir: str, log=print) -> dict:
  """The main job; returns the metrics written to workdir/metrics.json (on several hosts: process 0;
  the others return {'process_index', 'num_images'} once their share is written)."""
  if config.figure_method not in config.localise:
    raise ValueError(f'config.figure_method {config.figure_method!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  if config.get('selected_method') and config.selected_method not in config.localise:
    raise ValueError(f'config.selected_method {config.selected_method!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  stages.check_localise(config)
  d = config.distributed
  parallel.initialize(d.coordinator_address or None, d.num_processes, d.process_id)
  since = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepared = stages.prepare(config, workdir, log)
  data, splits, model, trained = prepared['data'], prepared['splits'], prepared['model'], prepared['trained']
  seconds = prepared['seconds']

  test = data['test']
  n = test['num_records'] if not config.num_eval else min(config.num_eval, test['num_records'])
  mine = np.flatnonzero(test['indices'] < n)  # this process's evaluation images (all of them on one host)
  index = test['indices'][mine]  # their record indices: the same image on one host and on several
  def pick(seq):
    return [seq[i] for i in mine]
  images, labels, x = test['images'][mine], test['labels'][mine], splits['test']['images'][mine]
  t0 = time.perf_counter()
  shared = None
  if config.get('share_true_maps'):  # the true class's gradient map, when among the top-k, is that map
    top_classes, top_maps, true_maps, shared = stages.shared_class_maps(config, model, x, labels)
  else:
    top_classes, top_maps, true_maps = stages.class_maps(config, model, x, labels)
  seconds['saliency'] = time.perf_counter() - t0
  other_maps = {}  # the other maps config.localise's methods localise (config.maps)
  for name in stages.used_maps(config):
    if name != 'gradient':
      t0 = time.perf_counter()
      spec = stages.check_map(name, config.maps[name])
      top, true = stages.method_maps(config, model, x, labels, top_classes, spec)
      if shared is not None:
        true = np.where((shared >= 0)[:, None, None], top[np.arange(len(top)), np.maximum(shared, 0)], true)
      other_maps[name] = (true, top)
      seconds[f'maps_{name}'] = time.perf_counter() - t0
  truth = data['photos'] if 'photos' in data else test  # the boxes of the images localised on
  gt_boxes = pick(truth['boxes'])
  masks = None if test['masks'] is None else test['masks'][mine]
  if 'photos' in data:  # localise on the larger images, maps resized onto them
    if not np.array_equal(data['photos']['indices'], test['indices']):
      raise ValueError(f'the test split read at {config.localise_size} px kept other records than at '
                       f'{config.data.image_size} px (bad records?): clear {workdir / "data"} and rerun')
    images, masks = data['photos']['images'][mine], None
    size = images.shape[1:3]
    true_maps, top_maps = stages.on_photos(true_maps, top_maps, size)
    other_maps = {name: stages.on_photos(true, top, size) for name, (true, top) in other_maps.items()}

  t0 = time.perf_counter()
  all_maps = {'gradient': (true_maps, top_maps), **other_maps}
  found, kept = stages.localise_images(config, images, all_maps, index, n, shared)
  hits = np.zeros((len(mine), 3))  # pointing hit, saliency mass on the object, object area fraction
  if masks is not None:
    hits = np.stack([metrics.pointing_hits(true_maps, masks, tolerance=config.pointing_tolerance),
                     metrics.mass_inside(true_maps, masks), masks.mean(axis=(1, 2))], axis=1)
  # this process's results, per image (and two totals)
  share = {'indices': index, 'labels': labels, 'top_classes': top_classes, 'hits': hits, 'found': found,
           'gt_boxes': gt_boxes, 'gt_labels': pick(test['box_labels']),
           'test_correct': round(trained['test_accuracy'] * len(test['labels'])),
           'test_count': len(test['labels'])}
  if d.num_processes > 1:
    if jax.process_index() != 0:
      target = hosts.path(workdir, jax.process_index(), d.num_processes)
      hosts.write(target, share)
      log(f'process {jax.process_index()}: {len(mine)} images mapped and localised, written to {target}')
      return {'process_index': jax.process_index(), 'num_images': len(mine)}
    share = hosts.gather(workdir, share, d.num_processes, since, d.timeout_s)
    trained = {**trained, 'test_accuracy': share['test_correct'] / share['test_count']}
  all_labels = share['labels']
  loc = stages.localisation_metrics(config, share['found'], all_labels, share['gt_labels'], share['gt_boxes'],
                                    share['top_classes'], log)
  failures = per_image = None
  if config.get('failure_analysis'):
    failures = stages.localisation_failures(share['found'], share['gt_labels'], share['gt_boxes'],
                                            share['top_classes'])
    per_image = failures.pop('per_image')
  seconds['localisation'] = time.perf_counter() - t0

  t0 = time.perf_counter()
  m = min(config.num_deconvnet, len(mine))
  sect4 = deconvnet_summary(model, x[:m], labels[:m])
  seconds['deconvnet'] = time.perf_counter() - t0

  if config.class_models.steps:
    t0 = time.perf_counter()
    test_x, test_y = splits['test']['images'], splits['test']['labels']
    class_model = class_model_summary(config, model, test_x, test_y, prepared['mean'], prepared['std'],
                                      workdir, log)
    seconds['class_models'] = time.perf_counter() - t0

  all_top = share['top_classes']
  results = {
      'test_accuracy': trained['test_accuracy'],
      'top1_accuracy_eval': float(np.mean(all_top[:, 0] == all_labels)),
      f'top{config.top_k}_accuracy_eval': float(np.mean((all_top == all_labels[:, None]).any(1))),
      'num_train': int(len(data['train']['images'])) if 'train' in data else 0,
      'num_test': int(share['test_count']), 'num_eval': len(all_labels),
      'num_processes': d.num_processes,
      'bad_records': stages.skipped_records(data),  # every record left out (data.skip_bad), with its reason
      'localisation': loc,
      'selected_method': config.get('selected_method'),
      **({'failures': failures} if failures else {}),
      'deconvnet_vs_gradient': sect4,
      **({'class_models': class_model} if config.class_models.steps else {}),
      'training': trained,
      'seconds': seconds,
      'config': config.to_dict(),
  }
  if masks is not None:
    pointing = metrics.pointing_accuracy(share['hits'][:, 0] > 0, all_labels)
    results['pointing_game'] = pointing['per_image']
    results['pointing_game_class_mean'] = pointing['class_mean']  # TorchRay's summary: the mean over classes
    results['saliency_mass_on_object'] = float(share['hits'][:, 1].mean())
    results['object_area_fraction'] = float(share['hits'][:, 2].mean())
  report.write_json(workdir / 'metrics.json', results)

  # figures: this process's first images (on one host: the first images of the set)
  classes = stages.class_names(config)
  num = min(config.num_figure, len(mine))
  titles = [f'{classes[t]} (top-1 {classes[p]})' for t, p in zip(labels[:num], top_classes[:num, 0])]
  report.saliency_figure(workdir / 'saliency.png', images[:num], true_maps[:num], titles,
                         None if masks is None else masks[:num])
  shown = config.figure_method
  shown_maps = all_maps[stages.map_of(shown, config.localise[shown])][0][:num]
  s = localise.settings(stages.cut_settings(config.localise[shown]))
  seeds = [localise.seeds(mp, s.fg_quantile, s.bg_quantile, s.fg_floor)[:2] for mp in shown_maps]
  report.localisation_figure(workdir / 'localisation.png', images[:num], shown_maps, seeds,
                             kept[shown][:num], gt_boxes[:num], titles)
  if per_image:
    drawn = [name for name in ('graphcut', config.get('selected_method')) if name in per_image]
    rows = {name: failure_examples(share, per_image[name], name, index, images,
                                   all_maps[stages.map_of(name, config.localise[name])][1], classes)
            for name in dict.fromkeys(drawn)}
    if any(rows.values()):
      report.failure_figure(workdir / 'failures.png', {k: v for k, v in rows.items() if v})
  report.write_atomic(workdir / 'report.md', markdown(results))
  return results


FAILURE_KINDS = ('too_small', 'too_large', 'displaced', 'wrong_classes')


def failure_examples(share: dict, categories, name: str, index, images, top_maps, classes,
                     per_kind: int = 2) -> list[tuple]:
  """`report.failure_figure`'s examples of one method: the first `per_kind` images of each failure kind
  among this process's images. For a box that missed, the guess of a right class with the best IoU and
  the map it was cut from; for no right class, the top-1 class's map and no box."""
  local = {int(i): p for p, i in enumerate(index)}
  found = share['found'][name]
  out = []
  for kind in FAILURE_KINDS:
    rows = [r for r, c in enumerate(categories) if c == kind and int(share['indices'][r]) in local][:per_kind]
    for r in rows:
      p = local[int(share['indices'][r])]
      gt_labels, gt = np.asarray(share['gt_labels'][r]), np.asarray(share['gt_boxes'][r])
      top = share['top_classes'][r]
      right = [j for j in range(len(top)) if (gt_labels == top[j]).any()]
      j = max(right, key=lambda j: metrics.box_iou(found['top_boxes'][r, j], gt[gt_labels == top[j]]).max(),
              default=0)
      box = tuple(found['top_boxes'][r, j]) if right else None
      title = f"{kind.replace('_', ' ')}: {classes[int(top[j])]}"
      out.append((images[p], top_maps[p, j], box, gt, title))
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
  lines += [
      '## DeconvNet vs gradient (paper Sect. 4)',
      '',
      f"On {d['num_images']} test images: {explicit}Spearman of the maps: "
      + ', '.join(f'{k_} {v:.2f}' for k_, v in d['spearman'].items()) + '.',
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
