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

import hashlib
import json
import os
import pathlib
import time

import jax
import ml_collections
import numpy as np

from saliency_jax import (
  class_models,
  deconvnet,
  defaults,
  equivalence,
  localise,
  metrics,
  parallel,
  report,
  saliency,
  train,
)
from saliency_jax.data import Subset, make_source, records, transforms


def default_config() -> ml_collections.ConfigDict:
  """The settings every main-job config shares (`defaults.main_job`)."""
  return defaults.main_job()


def load_data(config, workdir: pathlib.Path, log=print) -> dict:
  """The splits as arrays (`transforms.load`), cached in workdir/data keyed by the data config.

  'train' and 'test' at data.image_size (no 'train' for a pretrained `checkpoint` or with
  data.stream, where training reads the source on demand), and 'photos':
  the test split at `localise_size` when set (localisation on larger images than the net sees).
  Each split holds `transforms.load`'s images, labels, boxes, box_labels, difficult (VOC's flags) and
  masks (or None), and also 'indices' (the record index of every example), 'num_records' and 'bad': the
  records left out with data.skip_bad ([{'record', 'reason', 'message'}], `data.records`; those the
  source dropped when built, which are in no split, are listed with every split), cached with the arrays.
  On several hosts each process reads only its share of the test records (records i, i + P, ...:
  `parallel.host_shard`) and caches it in its own file.
  """
  key = hashlib.sha256(json.dumps(config.data.to_dict(), sort_keys=True,
                                  default=str).encode()).hexdigest()[:12]
  wanted = [('test', 'test', config.data.image_size)]
  if not config.get('checkpoint') and not config.data.get('stream'):
    wanted.insert(0, ('train', 'train', config.data.image_size))
  if config.get('localise_size'):
    wanted.append(('photos', 'test', config.localise_size))
  hosts = jax.process_count()
  out = {}
  for name, split, size in wanted:
    part = f'-part{jax.process_index()}of{hosts}' if split == 'test' and hosts > 1 else ''
    path = workdir / 'data' / f'{name}-{size}-{key}{part}.npz'
    if path.exists():
      with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    if path.exists() and 'bad' in arrays and 'difficult' in arrays:  # older caches are read again
      out[name] = {'images': arrays['images'], 'labels': arrays['labels'], 'masks': arrays.get('masks'),
                   'boxes': _split_ragged(arrays['boxes'], arrays['box_counts']),
                   'box_labels': _split_ragged(arrays['box_labels'], arrays['box_counts']),
                   'difficult': _split_ragged(arrays['difficult'], arrays['box_counts']),
                   'bad': json.loads(str(arrays['bad'])),
                   # older caches: no indices
                   'indices': arrays.get('indices', np.arange(len(arrays['labels']))),
                   'num_records': int(arrays.get('num_records', len(arrays['labels'])))}
      continue
    source = make_source(config.data, split)
    num_records = len(source)
    kept = parallel.host_shard(num_records) if part else np.arange(num_records)
    if part:
      source = Subset(source, kept)
    loaded = transforms.load(source, size, skip_bad=config.data.skip_bad, progress=True, desc=f'data {name}')
    loaded['bad'] = records.unique(getattr(source, 'bad', []) + loaded['bad'])
    if loaded['bad']:
      reasons = sorted({b['reason'] for b in loaded['bad']})
      log(f"{name}: skipped {len(loaded['bad'])} bad records ({', '.join(reasons)}), first: "
          f"{loaded['bad'][0]['record']}: {loaded['bad'][0]['message']}")
    loaded['indices'], loaded['num_records'] = kept[loaded['indices']], num_records
    counts = np.array([len(b) for b in loaded['boxes']])
    arrays = {'images': loaded['images'], 'labels': loaded['labels'], 'box_counts': counts,
              'boxes': np.concatenate(loaded['boxes']), 'box_labels': np.concatenate(loaded['box_labels']),
              'indices': loaded['indices'], 'num_records': num_records,
              'difficult': np.concatenate(loaded['difficult']),
              'bad': np.asarray(json.dumps(loaded['bad']))}  # a str array: no pickle needed to read it back
    if 'masks' in loaded:
      arrays['masks'] = loaded['masks']
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.{os.getpid()}.tmp.npz')  # several processes may write it at once
    np.savez(tmp, **arrays)
    tmp.replace(path)
    out[name] = {**loaded, 'masks': loaded.get('masks')}
  return out


def _split_ragged(flat: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
  return np.split(flat, np.cumsum(counts)[:-1])


def skipped_records(data: dict) -> list[dict]:
  """Every record `load_data` left out, once: [{'record', 'reason', 'message'}] (metrics.json
  'bad_records'). On several hosts: the records this process read (its share of the test split)."""
  return records.unique(b for split in data.values() for b in split['bad'])


def pretrained(config):
  """The model of `config.checkpoint` (kind 'cifar_resnet' or 'torchvision_vgg16', path), inference mode."""
  from saliency_jax import weights
  kind, path = config.checkpoint.kind, pathlib.Path(config.checkpoint.path).expanduser()
  if not (path.is_file() or (kind == 'tfjs_layers' and (path / 'model.json').is_file())):
    raise FileNotFoundError(f'config.checkpoint.path: no checkpoint at {path}')
  loaders = {'cifar_resnet': weights.load_cifar_resnet, 'torchvision_vgg16': weights.load_torchvision_vgg16,
             'tfjs_layers': weights.load_tfjs_layers_model}
  if kind not in loaders:
    raise ValueError(f'config.checkpoint.kind must be one of {sorted(loaders)}, got {kind!r}')
  model = loaders[kind](path)
  model.eval()
  return model


def class_names(config) -> list[str]:
  """config.class_names, or the ILSVRC synset names of the data folder (first synonym), or the indices."""
  if config.get('class_names'):
    return list(config.class_names)
  d = config.data
  path = pathlib.Path(d.get('data_dir', '')) / d.get('folder', '') / 'synset_words.txt'
  if d.name == 'ilsvrc' and not d.get('label_map') and path.is_file():
    from saliency_jax.data import imagenet
    return [name.split(',')[0] for _, name in imagenet.read_synsets(path)]
  return [str(c) for c in range(config.num_classes)]


def input_statistics(config, images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """The normalisation: config.data.mean / std, or the training set's mean colour and std 1 (the
  paper's zero-centring)."""
  if config.data.get('mean') is not None:
    return np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)
  return images.reshape(-1, 3).mean(0).astype(np.float32) / 255.0, np.ones(3, np.float32)


def class_maps(config, model, x, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The maps the job localises (paper Sect. 3.1; config.crop_size > 0: 10-crop maps): of each image's
  config.top_k classes, in one call per chunk (one forward, k backward passes), and of its true class.
  x: normalised [n, H, W, C], labels [n] -> (top classes int [n, k], their maps [n, k, H, W], the true
  class's maps [n, H, W]), on the host."""
  crop = config.crop_size or None
  top_classes, _, top_maps = saliency.top_k_saliency(model, x, k=config.top_k, crop_size=crop,
                                                     chunk_size=config.chunk_size)
  _, true_maps = saliency.class_saliency(model, x, labels[:, None], crop_size=crop,
                                         chunk_size=config.chunk_size)
  return (np.asarray(top_classes), np.asarray(jax.device_get(top_maps)),
          np.asarray(jax.device_get(true_maps))[:, 0])


def localise_images(config, images, true_maps, top_maps, indices, total: int) -> tuple[dict, dict]:
  """Every method of config.localise on each image's true-class map and its top-k maps.

  indices: the images' positions in the evaluation set of `total` images (they seed the GraphCut's
  colour model sampling, so a share of the images gives the same boxes as the whole set). Returns
  ({method: {'true_boxes' [n, 4], 'top_boxes' [n, k, 4], 'status' [n * (k + 1)] str}},
  {method: true-class `localise.Result`s}).
  """
  n, k = top_maps.shape[:2]
  out, kept = {}, {}
  for name, settings in config.localise.items():
    t = time.perf_counter()
    true = localise.localise_batch(list(images), list(true_maps), settings, workers=config.workers,
                                   indices=[int(i) for i in indices])
    top = localise.localise_batch([im for im in images for _ in range(k)],
                                  list(top_maps.reshape(n * k, *top_maps.shape[2:])), settings,
                                  workers=config.workers,
                                  indices=[total + int(i) * k + j for i in indices for j in range(k)])
    out[name] = {'true_boxes': np.array([r.box for r in true], np.int64).reshape(n, 4),
                 'top_boxes': np.array([r.box for r in top], np.int64).reshape(n, k, 4),
                 'status': np.array([r.status for r in true + top]), 'seconds': time.perf_counter() - t}
    kept[name] = true
  return out, kept


def localisation_metrics(config, found: dict, labels, gt_labels, gt_boxes, top_classes, log=print) -> dict:
  """GT-known box accuracy and ILSVRC top-1 / top-k localisation error of `localise_images`' boxes.

  Also per method the status counts and 'fallbacks': how many boxes were the full-image fallback
  (status other than 'ok': flat or invalid map, empty cut), {'true': of the n true-class boxes, 'top':
  of the n x k top-k boxes, 'total'}: a fallback box is a guess like any other and can flatter a method.
  """
  n, k = top_classes.shape
  out = {}
  for name, r in found.items():
    guesses = [[(int(top_classes[i, j]), tuple(r['top_boxes'][i, j])) for j in range(k)] for i in range(n)]
    names, counts = np.unique(r['status'], return_counts=True)
    true_boxes = [tuple(b) for b in r['true_boxes']]
    fallbacks = {'true': localise.fallbacks(r['status'][:n]), 'top': localise.fallbacks(r['status'][n:])}
    out[name] = {
        'gt_known_box_accuracy': metrics.gt_known_accuracy(true_boxes, gt_labels, gt_boxes, labels),
        'top1_loc_error': metrics.localisation_error(guesses, gt_labels, gt_boxes, top_k=1),
        f'top{k}_loc_error': metrics.localisation_error(guesses, gt_labels, gt_boxes, top_k=k),
        'status': {str(a): int(b) for a, b in zip(names, counts)},
        'fallbacks': {**fallbacks, 'total': fallbacks['true'] + fallbacks['top']},
        'seconds': float(r['seconds']),
    }
    top_k = f", top-{k} error {out[name][f'top{k}_loc_error']:.3f}" if k > 1 else ''
    log(f"localise {name}: GT-known {out[name]['gt_known_box_accuracy']:.3f}, "
        f"top-1 error {out[name]['top1_loc_error']:.3f}{top_k}, fallback boxes {fallbacks['true']} "
        f"true-class, {fallbacks['top']} top-{k} ({out[name]['seconds']:.1f} s)")
  return out


def _part_arrays(flat: dict, ragged: dict, totals: dict) -> dict:
  """One process's share as flat arrays (npz): per-image arrays, ragged boxes with their counts, totals."""
  out = dict(flat)
  out['box_counts'] = np.array([len(b) for b in ragged['boxes']], np.int64)
  out['ragged/boxes'] = np.concatenate(ragged['boxes']).reshape(-1, 4)
  out['ragged/box_labels'] = np.concatenate(ragged['box_labels']).astype(np.int32)
  out.update({f'total/{k}': np.asarray(v) for k, v in totals.items()})
  return out


def _merge_hosts(config, workdir: pathlib.Path, mine: dict, since: float) -> tuple[dict, dict, dict]:
  """Process 0: its own share (`_part_arrays`) plus every other process's (workdir/hosts/part-*.npz
  written after `since`) -> (per-image arrays over the whole evaluation set in index order,
  {'boxes', 'box_labels'}: lists in that order, summed totals)."""
  num = config.distributed.num_processes
  paths = [workdir / 'hosts' / f'part-{p}-of-{num}.npz' for p in range(1, num)]
  deadline = time.time() + config.distributed.timeout_s
  while not all(p.exists() and p.stat().st_mtime >= since for p in paths):
    if time.time() > deadline:
      missing = [str(p) for p in paths if not (p.exists() and p.stat().st_mtime >= since)]
      raise TimeoutError(f'no result from the other processes after {config.distributed.timeout_s} s: '
                         f'{missing}')
    time.sleep(1.0)
  parts = [mine]
  for p in paths:
    with np.load(p, allow_pickle=False) as f:
      parts.append(dict(f))
  order = np.argsort(np.concatenate([part['indices'] for part in parts]), kind='stable')
  per_image = [k for k in mine if k != 'box_counts' and not k.startswith(('ragged/', 'total/'))]
  flat = {key: np.concatenate([part[key] for part in parts])[order] for key in per_image}
  ragged = {}
  for key in ('boxes', 'box_labels'):
    pieces = [b for part in parts for b in _split_ragged(part[f'ragged/{key}'], part['box_counts'])]
    ragged[key] = [pieces[i] for i in order]
  totals = {k[len('total/'):]: sum(part[k].item() for part in parts) for k in mine if k.startswith('total/')}
  return flat, ragged, totals


def _flatten_found(found: dict, top_classes, hits) -> dict:
  flat = {'top_classes': top_classes, 'hits': hits}
  for name, r in found.items():
    flat[f'{name}/true_boxes'], flat[f'{name}/top_boxes'] = r['true_boxes'], r['top_boxes']
    k = r['top_boxes'].shape[1]
    flat[f'{name}/status'] = _status_per_image(r['status'], k)
    flat[f'{name}/seconds'] = np.full(len(top_classes), r['seconds'] / max(1, len(top_classes)))
  return flat


def _status_per_image(status, k):
  n = len(status) // (k + 1)
  return np.concatenate([status[:n, None], status[n:].reshape(n, k)], axis=1)


def _unflatten_found(flat: dict, names) -> dict:
  """`_flatten_found`'s inverse: `localise_images`' layout (status: the n true-class ones, then the n x k)."""
  def status(per_image):
    return np.concatenate([per_image[:, 0], per_image[:, 1:].ravel()])
  return {name: {'true_boxes': flat[f'{name}/true_boxes'], 'top_boxes': flat[f'{name}/top_boxes'],
                 'status': status(flat[f'{name}/status']), 'seconds': float(flat[f'{name}/seconds'].sum())}
          for name in names}


def deconvnet_summary(model, x, labels) -> dict:
  """Sect. 4 on the trained net: explicit DeconvNet vs VJP (for the model families `deconvnet.steps`
  knows), and the three rules' maps compared (any model)."""
  maps = equivalence.method_maps(model, x, labels)
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
  every_name = class_names(config)  # read once: for ILSVRC it comes from synset_words.txt
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


def prepare(config, workdir: pathlib.Path, log=print) -> dict:
  """Stages 1-2 of the main job, for every experiment that needs the config's data and trained net:
  {'data', 'splits' (normalised arrays), 'mean', 'std', 'model', 'trained', 'seconds'}.
  Raises ValueError before any work when workdir holds checkpoints trained under another config."""
  if not config.get('checkpoint'):
    train.check_fingerprint(config, workdir)
  seconds = {}
  t0 = time.perf_counter()
  data = load_data(config, workdir, log)
  seconds['data'] = time.perf_counter() - t0
  mean, std = input_statistics(config, data['train']['images'] if 'train' in data else None)
  def prep(images):
    return transforms.normalise(images, mean, std)
  splits = {s: {'images': prep(data[s]['images']), 'labels': data[s]['labels']} for s in ('train', 'test')
            if s in data}
  if config.data.get('stream') and not config.get('checkpoint'):  # read on demand: ImageNet-sized sets
    if config.data.get('mean') is None:
      raise ValueError('config.data.stream needs config.data.mean and std (no pass over the data to compute '
                       'them)')
    source = make_source(config.data, 'train')
    splits['train'] = transforms.Streamed(source, config.data.image_size, mean, std)

  t0 = time.perf_counter()
  if config.get('checkpoint'):
    model = pretrained(config)
    trained = {'checkpoint': config.checkpoint.path, 'steps': 0, 'resumed_from': 0,
               'test_accuracy': train.accuracy(model, splits['test']['images'], splits['test']['labels'],
                                               crop=config.get('eval_crop', 0))}
  else:
    model, trained = train.train_and_evaluate(config, workdir, splits)
  seconds['train'] = time.perf_counter() - t0
  log(f"test accuracy {trained['test_accuracy']:.3f} ({trained['steps']} steps, resumed from "
      f"{trained['resumed_from']})")
  return {'data': data, 'splits': splits, 'mean': mean, 'std': std, 'model': model, 'trained': trained,
          'seconds': seconds}


def run(config, workdir: str, log=print) -> dict:
  """The main job; returns the metrics written to workdir/metrics.json (on several hosts: process 0;
  the others return {'process_index', 'num_images'} once their share is written)."""
  if config.figure_method not in config.localise:
    raise ValueError(f'config.figure_method {config.figure_method!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  if config.get('selected_method') and config.selected_method not in config.localise:
    raise ValueError(f'config.selected_method {config.selected_method!r} is not one of config.localise: '
                     f'{sorted(config.localise)}')
  d = config.distributed
  parallel.initialize(d.coordinator_address or None, d.num_processes, d.process_id)
  since = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepared = prepare(config, workdir, log)
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
  top_classes, top_maps, true_maps = class_maps(config, model, x, labels)
  seconds['saliency'] = time.perf_counter() - t0
  truth = data['photos'] if 'photos' in data else test  # the boxes of the images localised on
  gt_boxes = pick(truth['boxes'])
  masks = None if test['masks'] is None else test['masks'][mine]
  if 'photos' in data:  # localise on the larger images, maps resized onto them
    if not np.array_equal(data['photos']['indices'], test['indices']):
      raise ValueError(f'the test split read at {config.localise_size} px kept other records than at '
                       f'{config.data.image_size} px (bad records?): clear {workdir / "data"} and rerun')
    images, masks = data['photos']['images'][mine], None
    size = images.shape[1:3]
    true_maps = np.stack([localise.resize_map(mp, size) for mp in true_maps])
    top_maps = np.stack([[localise.resize_map(mp, size) for mp in row] for row in top_maps])

  t0 = time.perf_counter()
  found, kept = localise_images(config, images, true_maps, top_maps, index, n)
  hits = np.zeros((len(mine), 3))  # pointing hit, saliency mass on the object, object area fraction
  if masks is not None:
    hits = np.stack([metrics.pointing_hits(true_maps, masks, tolerance=config.pointing_tolerance),
                     metrics.mass_inside(true_maps, masks), masks.mean(axis=(1, 2))], axis=1)
  flat = {'indices': index, 'labels': labels, **_flatten_found(found, top_classes, hits)}
  ragged = {'boxes': gt_boxes, 'box_labels': pick(test['box_labels'])}
  totals = {'test_correct': round(trained['test_accuracy'] * len(test['labels'])),
            'test_count': len(test['labels'])}
  if d.num_processes > 1:
    if jax.process_index() != 0:
      path = workdir / 'hosts' / f'part-{jax.process_index()}-of-{d.num_processes}.npz'
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_name(f'.{path.name}.tmp.npz')
      np.savez(tmp, **_part_arrays(flat, ragged, totals))
      tmp.replace(path)
      log(f'process {jax.process_index()}: {len(mine)} images mapped and localised, written to {path}')
      return {'process_index': jax.process_index(), 'num_images': len(mine)}
    flat, ragged, totals = _merge_hosts(config, workdir, _part_arrays(flat, ragged, totals), since)
    trained = {**trained, 'test_accuracy': totals['test_correct'] / totals['test_count']}
  found = _unflatten_found(flat, list(config.localise))
  all_labels = flat['labels']
  loc = localisation_metrics(config, found, all_labels, ragged['box_labels'], ragged['boxes'],
                             flat['top_classes'], log)
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

  all_top = flat['top_classes']
  results = {
      'test_accuracy': trained['test_accuracy'],
      'top1_accuracy_eval': float(np.mean(all_top[:, 0] == all_labels)),
      f'top{config.top_k}_accuracy_eval': float(np.mean((all_top == all_labels[:, None]).any(1))),
      'num_train': int(len(data['train']['images'])) if 'train' in data else 0,
      'num_test': int(totals['test_count']), 'num_eval': len(all_labels),
      'num_processes': d.num_processes,
      'bad_records': skipped_records(data),  # every record left out (data.skip_bad), with its reason
      'localisation': loc,
      'selected_method': config.get('selected_method'),
      'deconvnet_vs_gradient': sect4,
      **({'class_models': class_model} if config.class_models.steps else {}),
      'training': trained,
      'seconds': seconds,
      'config': config.to_dict(),
  }
  if masks is not None:
    pointing = metrics.pointing_accuracy(flat['hits'][:, 0] > 0, all_labels)
    results['pointing_game'] = pointing['per_image']
    results['pointing_game_class_mean'] = pointing['class_mean']  # TorchRay's summary: the mean over classes
    results['saliency_mass_on_object'] = float(flat['hits'][:, 1].mean())
    results['object_area_fraction'] = float(flat['hits'][:, 2].mean())
  report.write_json(workdir / 'metrics.json', results)

  # figures: this process's first images (on one host: the first images of the set)
  classes = class_names(config)
  num = min(config.num_figure, len(mine))
  titles = [f'{classes[t]} (top-1 {classes[p]})' for t, p in zip(labels[:num], top_classes[:num, 0])]
  report.saliency_figure(workdir / 'saliency.png', images[:num], true_maps[:num], titles,
                         None if masks is None else masks[:num])
  graphcut = config.figure_method
  s = localise.settings(config.localise[graphcut])
  seeds = [localise.seeds(mp, s.fg_quantile, s.bg_quantile, s.fg_floor)[:2] for mp in true_maps[:num]]
  report.localisation_figure(workdir / 'localisation.png', images[:num], true_maps[:num], seeds,
                             kept[graphcut][:num], gt_boxes[:num], titles)
  report.write_atomic(workdir / 'report.md', markdown(results))
  return results


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
