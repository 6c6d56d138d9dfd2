"""The stages the jobs share: the config's data and trained net, the maps, their localisation.

`prepare` (data, then the trained or imported net), `class_maps` (Sect. 3.1 maps of the top-k and
true classes), `localise_images` (every method of config.localise) and `localisation_metrics` (GT-known,
ILSVRC top-1 / top-k error, fallback counts). The main job (`pipeline`), the localisation sweep and the
attribution comparison are built from them; they import these stages, never each other.
"""

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import (
  attribution,
  deconvnet,
  localise,
  metrics,
  parallel,
  rules,
  saliency,
  store,
  train,
  weights,
)
from saliency_jax.data import make_source, records, transforms
from saliency_jax.errors import UserError


def pack(pieces) -> tuple[np.ndarray, np.ndarray]:
  """A ragged list of arrays (e.g. each image's boxes) -> (counts [n], values: the pieces concatenated).
  The one encoding of ragged per-image data on disk (the data cache, the evaluation's chunks)."""
  pieces = [np.asarray(p) for p in pieces]
  return np.array([len(p) for p in pieces], np.int64), np.concatenate(pieces) if pieces else np.zeros(0)


def unpack(counts: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
  """`pack`'s inverse."""
  return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


def load_data(config, workdir: pathlib.Path, log=print, test: bool = True) -> dict:
  """The splits as arrays (`transforms.load`), cached in workdir/data keyed by the data config and the
  data code (`source_digest('data')`).

  'train' and (with `test`) 'test' at data.image_size (no 'train' for a pretrained `checkpoint` or with
  data.stream, where training reads the source on demand), and 'photos':
  the test split at `localise_size` when set (localisation on larger images than the net sees).
  Each split holds `transforms.load`'s images, labels, boxes, box_labels, difficult (VOC's flags) and
  masks (or None), and also 'indices' (the record index of every example), 'num_records' and 'bad': the
  records left out with data.skip_bad ([{'record', 'reason', 'message'}], `data.records`; those the
  source dropped when built, which are in no split, are listed with every split), cached with the arrays.
  (The main job reads the test split chunk by chunk instead: `pipeline.evaluate_chunk`.)
  """
  key = hashlib.sha256(json.dumps([config.data.to_dict(), source_digest('data')], sort_keys=True,
                                  default=str).encode()).hexdigest()[:12]
  wanted = [('test', 'test', config.data.image_size)] if test else []
  if not checkpoint_kind(config) and not config.data.get('stream'):
    wanted.insert(0, ('train', 'train', config.data.image_size))
  if config.get('localise_size') and test:
    wanted.append(('photos', 'test', config.localise_size))
  out = {}
  for name, split, size in wanted:
    path = workdir / 'data' / f'{name}-{size}-{key}.npz'
    meta = {'kind': 'data cache', 'split': name, 'size': size, 'key': key}
    arrays = store.load_or_none(path, meta=meta, log=log)  # a damaged or older cache is read again
    if arrays is not None:
      out[name] = {'images': arrays['images'], 'labels': arrays['labels'], 'masks': arrays.get('masks'),
                   'boxes': unpack(arrays['box_counts'], arrays['boxes']),
                   'box_labels': unpack(arrays['box_counts'], arrays['box_labels']),
                   'difficult': unpack(arrays['box_counts'], arrays['difficult']),
                   'bad': json.loads(str(arrays['bad'])), 'indices': arrays['indices'],
                   'num_records': int(arrays['num_records'])}
      continue
    source = make_source(config.data, split)
    num_records = len(source)
    loaded = transforms.load(source, size, skip_bad=config.data.skip_bad, progress=True, desc=f'data {name}')
    loaded['bad'] = records.unique(getattr(source, 'bad', []) + loaded['bad'])
    if loaded['bad']:
      reasons = sorted({b['reason'] for b in loaded['bad']})
      log(f"{name}: skipped {len(loaded['bad'])} bad records ({', '.join(reasons)}), first: "
          f"{loaded['bad'][0]['record']}: {loaded['bad'][0]['message']}")
    loaded['num_records'] = num_records
    counts, boxes = pack(loaded['boxes'])
    arrays = {'images': loaded['images'], 'labels': loaded['labels'], 'box_counts': counts, 'boxes': boxes,
              'box_labels': pack(loaded['box_labels'])[1], 'difficult': pack(loaded['difficult'])[1],
              'indices': loaded['indices'], 'num_records': num_records,
              'bad': np.asarray(json.dumps(loaded['bad']))}  # a str array: no pickle needed to read it back
    if 'masks' in loaded:
      arrays['masks'] = loaded['masks']
    store.save(path, arrays, meta=meta)  # several processes may write it at once: each its own temporary
    out[name] = {**loaded, 'masks': loaded.get('masks')}
  return out


def skipped_records(data: dict) -> list[dict]:
  """Every record `load_data` left out, once: [{'record', 'reason', 'message'}] (metrics.json
  'bad_records')."""
  return records.unique(b for split in data.values() for b in split['bad'])


def checkpoint_kind(config) -> str:
  """config.checkpoint.kind: '' (no checkpoint: the job trains config.model) or the kind of net to load."""
  checkpoint = config.get('checkpoint')
  return str(checkpoint.get('kind') or '') if checkpoint else ''


def python_model(config) -> tuple:
  """config.checkpoint kind 'python': `path` names a function, 'package.module:function' or
  'path/to/file.py:function', that returns the model, any JAX callable f(x [B, H, W, C]) -> scores [B, K]
  (`rules.as_model`), or (model, {'mean': (r, g, b), 'std': (r, g, b)}): its preprocessing, x = (image
  in [0, 1] - mean) / std. Returns (model as `rules.as_model` gives it, preprocessing or None)."""
  where, _, name = str(config.checkpoint.path).rpartition(':')
  if not where or not name:
    raise ValueError("config.checkpoint.path of kind 'python' must be 'module:function' or "
                     f"'file.py:function', got {config.checkpoint.path!r}")
  if where.endswith('.py'):
    spec = importlib.util.spec_from_file_location(pathlib.Path(where).stem, pathlib.Path(where).expanduser())
    if spec is None or not pathlib.Path(where).expanduser().is_file():
      raise FileNotFoundError(f'config.checkpoint.path: no file {where}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  else:
    module = importlib.import_module(where)
  built = getattr(module, name)()
  model, preprocessing = built if isinstance(built, tuple) else (built, None)
  size = config.get('crop_size') or config.data.image_size
  model = rules.as_model(model, jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
  return model.eval(), preprocessing


def pretrained(config):
  """The model of `config.checkpoint` (kind 'cifar_resnet', 'torchvision_vgg16' or 'tfjs_layers', path),
  in inference mode."""
  kind, path = config.checkpoint.kind, pathlib.Path(config.checkpoint.path).expanduser()
  if not (path.is_file() or (kind == 'tfjs_layers' and (path / 'model.json').is_file())):
    raise FileNotFoundError(f'config.checkpoint.path: no checkpoint at {path}')
  loaders = {'cifar_resnet': weights.load_cifar_resnet, 'torchvision_vgg16': weights.load_torchvision_vgg16,
             'tfjs_layers': weights.load_tfjs_layers_model}
  if kind not in loaders:
    raise ValueError(f"config.checkpoint.kind must be one of {sorted(loaders) + ['python']}, got {kind!r}")
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


def load_pretrained(config) -> tuple:
  """(model, its preprocessing or None) of config.checkpoint (`python_model` or `pretrained`), in inference
  mode, its scores checked (`check_scores`)."""
  if checkpoint_kind(config) == 'python':
    model, preprocessing = python_model(config)
  else:
    model, preprocessing = pretrained(config), None
  check_scores(config, model)
  return model, preprocessing


def check_scores(config, model) -> None:
  """A UserError unless the pretrained model gives config.num_classes float scores per image at the size
  it is given (config.crop_size, else data.image_size), and an image's scores do not depend on the other
  images of its batch (`saliency.check_model`): a model that returns anything else is named."""
  size = config.get('crop_size') or config.data.image_size
  try:
    k = saliency.num_classes(model, (size, size, 3))
    saliency.check_model(model, jax.random.normal(jax.random.key(0), (2, size, size, 3)))
  except ValueError as e:
    raise UserError(f'config.checkpoint ({config.checkpoint.kind} {config.checkpoint.path}): {e}') from None
  if k != config.num_classes:
    raise UserError(f'config.checkpoint ({config.checkpoint.kind} {config.checkpoint.path}) gives {k} class '
                    f'scores per image, config.num_classes is {config.num_classes}')


def input_statistics(config, images: np.ndarray | None, preprocessing=None) -> tuple[np.ndarray, np.ndarray]:
  """The normalisation: config.data.mean / std, or a Python model's own (`python_model`), or the training
  set's mean colour and std 1 (the paper's zero-centring); for a pretrained model with none of these (no
  training images), none: the model sees pixels in [0, 1]."""
  if preprocessing is not None:
    given = (np.asarray(preprocessing['mean'], np.float32), np.asarray(preprocessing['std'], np.float32))
    if config.data.get('mean') is not None and not (np.allclose(given[0], config.data.mean)
                                                    and np.allclose(given[1], config.data.std)):
      raise ValueError(f'the model brings its preprocessing (mean {given[0].tolist()}, std '
                       f'{given[1].tolist()}) and config.data sets another (mean {config.data.mean}, '
                       f'std {config.data.std})')
    return given
  if config.data.get('mean') is not None:
    return np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)
  if images is None:
    return np.zeros(3, np.float32), np.ones(3, np.float32)
  return images.reshape(-1, 3).mean(0).astype(np.float32) / 255.0, np.ones(3, np.float32)


def eval_crop(config) -> int:
  """The centred crop test accuracy is measured on: a pretrained net's config.eval_crop, or the size of
  the random crops it was trained on (config.train.crop; 0: the whole image)."""
  return config.get('eval_crop', 0) if checkpoint_kind(config) else config.train.get('crop', 0)


@functools.cache
def source_digest(folder: str = '') -> str:
  """A digest of every source file of the saliency_jax package (or of its `folder`, e.g. 'data'), read
  once per process: results kept on disk by other code are never taken for this code's."""
  root = pathlib.Path(__file__).resolve().parents[1]
  h = hashlib.sha256()
  for source in sorted((root / folder).rglob('*.py')):
    h.update(source.relative_to(root).as_posix().encode())
    h.update(source.read_bytes())
  return h.hexdigest()[:16]


def code_modules(*modules) -> list[str]:
  """The names of `modules` and of every saliency_jax module they import (a module, or a function or
  class of it), transitively, sorted; a module of `saliency_jax.jobs` is taken alone (the jobs' shared
  stages import every core module)."""
  found, todo = set(), list(modules)
  while todo:
    module = todo.pop()
    if module.__name__ in found:
      continue
    found.add(module.__name__)
    if module.__name__.startswith('saliency_jax.jobs'):
      continue
    for value in vars(module).values():
      name = (value.__name__ if inspect.ismodule(value)
              else value.__module__ if inspect.isclass(value) or inspect.isfunction(value) else '')
      if name.startswith('saliency_jax.') and name not in found:
        todo.append(sys.modules[name])
  return sorted(found)


def code_digest(*modules) -> str:
  """A digest of the source of `code_modules(*modules)`: kept results made by other code are not reused."""
  sources = [inspect.getsource(sys.modules[name]) for name in code_modules(*modules)]
  return hashlib.sha256(json.dumps(sources).encode()).hexdigest()[:16]


def digest(model) -> str:
  """A digest of a model's arrays (an NNX module's state, or a pytree such as `rules.Function`): results
  computed with other weights are never taken for this model's."""
  from flax import nnx
  state = nnx.state(model) if isinstance(model, nnx.Module) else model
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    if not hasattr(leaf, 'shape'):
      continue
    value = np.asarray(jax.device_get(parallel.local(leaf)))
    h.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}'.encode())
    h.update(np.ascontiguousarray(value).tobytes())
  return h.hexdigest()[:16]


def prepare(config, workdir: pathlib.Path, log=print, test: bool = True) -> dict:
  """Stages 1-2 of the main job, for every experiment that needs the config's data and trained net:
  {'data', 'splits' (normalised arrays), 'mean', 'std', 'model', 'trained', 'seconds'}.
  Without `test` the test split is not read and trained has no 'test_accuracy' (the main job reads
  the test split chunk by chunk).
  Raises ValueError before any work when workdir holds checkpoints trained under another config."""
  if not checkpoint_kind(config):
    train.check_fingerprint(config, workdir)
  seconds = {}
  t0 = time.perf_counter()
  data = load_data(config, workdir, log, test)
  seconds['data'] = time.perf_counter() - t0
  model, preprocessing = load_pretrained(config) if checkpoint_kind(config) else (None, None)
  mean, std = input_statistics(config, data['train']['images'] if 'train' in data else None, preprocessing)
  def prep(images):
    return transforms.normalise(images, mean, std)
  splits = {s: {'images': prep(data[s]['images']), 'labels': data[s]['labels']} for s in ('train', 'test')
            if s in data}
  if config.data.get('stream') and not checkpoint_kind(config):  # read on demand: ImageNet-sized sets
    if config.data.get('mean') is None:
      raise ValueError('config.data.stream needs config.data.mean and std (no pass over the data to compute '
                       'them)')
    source = make_source(config.data, 'train')
    splits['train'] = transforms.Streamed(source, config.data.image_size, mean, std)

  t0 = time.perf_counter()
  if checkpoint_kind(config):
    trained = {'checkpoint': config.checkpoint.path, 'steps': 0, 'resumed_from': 0}
    if test:
      trained['test_accuracy'] = train.accuracy(model, splits['test']['images'], splits['test']['labels'],
                                                crop=eval_crop(config))
  else:
    model, trained = train.train_and_evaluate(config, workdir, splits,
                                              progress=jax.process_index() == 0)
  seconds['train'] = time.perf_counter() - t0
  if test:
    log(f"test accuracy {trained['test_accuracy']:.3f} ({trained['steps']} steps, resumed from "
        f"{trained['resumed_from']})")
  else:
    log(f"trained: {trained['steps']} steps, resumed from {trained['resumed_from']}")
  return {'data': data, 'splits': splits, 'mean': mean, 'std': std, 'model': model, 'trained': trained,
          'seconds': seconds}


def class_maps(config, model, x, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The maps the job localises (paper Sect. 3.1; config.crop_size > 0: 10-crop maps): of each image's
  config.top_k classes, in one call per chunk (one forward, k backward passes), and of its true class.
  x: normalised [n, H, W, C], labels [n] -> (top classes int [n, k], their maps [n, k, H, W], the true
  class's maps [n, H, W]), on the host."""
  crop = config.crop_size or None
  sequential = config.get('sequential_maps', False)
  top_classes, _, top_maps = saliency.top_k_saliency(model, x, k=config.top_k, crop_size=crop,
                                                     chunk_size=config.chunk_size, sequential=sequential)
  _, true_maps = saliency.class_saliency(model, x, labels[:, None], crop_size=crop,
                                         chunk_size=config.chunk_size, sequential=sequential)
  return (np.asarray(top_classes), np.asarray(jax.device_get(top_maps)),
          np.asarray(jax.device_get(true_maps))[:, 0])


RELU_RULES = {'gradient': None, 'guided_backprop': deconvnet.guided_relu,
              'deconvnet': deconvnet.deconvnet_relu}
CROPS = ('ten', 'centre')


def check_map(name: str, spec) -> dict:
  """One entry of config.maps: {'method': an `attribution.METHODS` name, 'crops': 'ten' (the paper's
  10-crop maps with config.crop_size, else the whole image) or 'centre' (the centre crop alone, the map
  placed back, zero outside: for methods too slow for 10 crops), and the method's settings}."""
  spec = dict(spec)
  method, crops = spec.pop('method', None), spec.pop('crops', 'ten')
  if method not in attribution.METHODS:
    raise ValueError(f'config.maps.{name}: method must be one of {attribution.METHODS}, got {method!r}')
  if crops not in CROPS:
    raise ValueError(f'config.maps.{name}: crops must be one of {CROPS}, got {crops!r}')
  if method in RELU_RULES and spec:
    raise ValueError(f'config.maps.{name}: {method} takes no settings, got {sorted(spec)}')
  return {'method': method, 'crops': crops, 'settings': spec}


def map_of(name: str, settings) -> str:
  """The config.maps entry a config.localise method localises ('map'; default 'gradient', the paper's)."""
  return dict(settings).get('map', 'gradient')


def cut_settings(settings) -> dict:
  """A config.localise method without its 'map': the `localise.settings` fields."""
  return {k: v for k, v in dict(settings).items() if k != 'map'}


def used_maps(config) -> list[str]:
  """The config.maps names that config.localise's methods localise, in order."""
  return list(dict.fromkeys(map_of(name, s) for name, s in config.localise.items()))


def check_localise(config) -> None:
  """Errors for config.localise / config.maps that cannot run, before any map is computed."""
  maps = dict(config.get('maps') or {})
  for name, settings in config.localise.items():
    used = map_of(name, settings)
    if used != 'gradient' and used not in maps:
      raise ValueError(f'config.localise.{name} localises map {used!r}, which config.maps does not name '
                       f'(it names {sorted(maps)})')
    try:
      localise.settings(cut_settings(settings))
    except ValueError as e:
      raise ValueError(f'config.localise.{name}: {e}') from None
  for name, spec in maps.items():
    check_map(name, spec)


def true_class_positions(top_classes, labels) -> np.ndarray:
  """[n] int: where each image's true class stands among its top-k classes [n, k], -1 where it is not
  among them."""
  hit = np.asarray(top_classes) == np.asarray(labels)[:, None]
  return np.where(hit.any(1), hit.argmax(1), -1)


def shared_class_maps(config, model, x, labels):
  """`class_maps` computing a true class's map only where it is not among the top-k: where it is,
  its map is that class's top-k map. Returns (top classes, top maps, true maps, shared [n]: the top-k
  position of the true class, -1 where it is not among them)."""
  crop = config.crop_size or None
  sequential = config.get('sequential_maps', False)
  top_classes, _, top_maps = saliency.top_k_saliency(model, x, k=config.top_k, crop_size=crop,
                                                     chunk_size=config.chunk_size, sequential=sequential)
  top_classes, top_maps = np.asarray(top_classes), np.asarray(jax.device_get(top_maps))
  shared = true_class_positions(top_classes, labels)
  true_maps = top_maps[np.arange(len(x)), np.maximum(shared, 0)].copy()
  alone = np.flatnonzero(shared < 0)
  if len(alone):
    _, own = saliency.class_saliency(model, x[alone], np.asarray(labels)[alone, None], crop_size=crop,
                                     chunk_size=config.chunk_size, sequential=sequential)
    true_maps[alone] = np.asarray(jax.device_get(own))[:, 0]
  return top_classes, top_maps, true_maps, shared


def shares_gradient_passes(model, spec) -> bool:
  """Whether a config.maps entry (`check_map`) comes out of the gradient maps' own passes
  (`gradient_and_grad_cam_maps`): Grad-CAM on the 10 crops (or the whole image) at a named layer of the
  net's graph, the gradient maps being the paper's (no ReLU rule)."""
  return (spec['method'] == 'grad_cam' and spec['crops'] == 'ten' and set(spec['settings']) <= {'layer'}
          and isinstance(spec['settings'].get('layer'), str | None) and not isinstance(model, rules.Function))


def gradient_and_grad_cam_maps(config, model, x, labels, layer):
  """`class_maps` (or, with config.share_true_maps, `shared_class_maps`) and the same classes' Grad-CAM
  maps at `layer` (`attribution.gradient_and_grad_cam`: one forward pass, k backward passes, Grad-CAM
  read off on the way). Returns (top classes [n, k], gradient maps (true [n, H, W], top [n, k, H, W]),
  Grad-CAM maps (true, top), shared [n] (the top-k position of the true class, -1 where it is not among
  them) or None without share_true_maps), on the host."""
  sequential = config.get('sequential_maps', False)
  maps = functools.partial(attribution.gradient_and_grad_cam, model, layer=layer,
                           crop_size=config.crop_size or None, chunk_size=config.chunk_size,
                           sequential=sequential)
  labels = np.asarray(labels)
  if config.get('share_true_maps') and sequential and parallel.size() == 1:
    # the true class's maps in the same call: one more backward pass where it is not among the top-k
    top_classes, _, top_maps, top_cams, true_maps, true_cams = (
        np.asarray(jax.device_get(a)) for a in maps(x, k=config.top_k, labels=labels))
    return (top_classes, (true_maps, top_maps), (np.maximum(true_cams, 0), np.maximum(top_cams, 0)),
            true_class_positions(top_classes, labels))
  top_classes, _, top_maps, top_cams = (np.asarray(jax.device_get(a)) for a in maps(x, k=config.top_k))
  shared = (true_class_positions(top_classes, labels) if config.get('share_true_maps')
            else np.full(len(x), -1))
  rows, column = np.arange(len(x)), np.maximum(shared, 0)
  true_maps, true_cams = top_maps[rows, column].copy(), np.maximum(top_cams[rows, column], 0)
  alone = np.flatnonzero(shared < 0)
  if len(alone):
    _, _, own_maps, own_cams = (np.asarray(jax.device_get(a)) for a in maps(x[alone], labels[alone, None]))
    true_maps[alone], true_cams[alone] = own_maps[:, 0], np.maximum(own_cams[:, 0], 0)
  return (top_classes, (true_maps, top_maps), (true_cams, np.maximum(top_cams, 0)),
          shared if config.get('share_true_maps') else None)


def method_maps(config, model, x, labels, top_classes, spec) -> tuple[np.ndarray, np.ndarray | None]:
  """The maps of one config.maps entry (`check_map`) for each image's top-k classes and true class,
  at the net's input size: (top maps [n, k, H, W], true-class maps [n, H, W], None when labels is None:
  images without labels) on the host.

  Gradient, guided backprop and DeconvNet: `saliency.class_saliency` with the ReLU rule (one forward,
  k + 1 backward passes); Grad-CAM, CAM, occlusion: `attribution.class_region_maps`; crops 'centre':
  every method by `attribution.attribute`, one class at a time, on the centre crop. Region maps and
  signed maps are reduced by `attribution.to_map` (their positive part; input space max_c |a_c|).
  """
  method, crops, settings = spec['method'], spec['crops'], spec['settings']
  k = np.shape(top_classes)[1]
  classes = np.asarray(top_classes) if labels is None else np.concatenate(
      [np.asarray(top_classes), np.asarray(labels)[:, None]], axis=1)
  crop = config.crop_size or None
  chunk = config.chunk_size
  if crops == 'ten' and method in RELU_RULES:
    _, maps = saliency.class_saliency(model, x, classes, crop_size=crop, relu=RELU_RULES[method],
                                      chunk_size=chunk, sequential=config.get('sequential_maps', False))
    maps = np.asarray(jax.device_get(maps))
  elif crops == 'ten' and method in attribution.CLASS_MAP_METHODS and not (method == 'occlusion' and crop):
    maps = np.maximum(np.asarray(jax.device_get(attribution.class_region_maps(
        method, model, x, classes, crop_size=crop, chunk_size=chunk, **settings))), 0)
  elif crops == 'ten':
    raise ValueError(f"{method} on 10 crops x {classes.shape[1]} classes is not supported: use crops "
                     "'centre'")
  else:
    h, w = x.shape[1:3]
    ch, cw = saliency.crop_shape(crop or (h, w), (h, w))
    top, left = (h - ch) // 2, (w - cw) // 2
    centre = x[:, top:top + ch, left:left + cw]
    maps = np.zeros((*classes.shape, h, w), np.float32)
    if method in attribution.CLASS_MAP_METHODS:
      region = attribution.class_region_maps(method, model, centre, classes, chunk_size=chunk, **settings)
      maps[:, :, top:top + ch, left:left + cw] = np.maximum(np.asarray(jax.device_get(region)), 0)
    else:
      for j in range(classes.shape[1]):
        a = attribution.attribute(method, model, centre, classes[:, j], chunk_size=chunk, **settings)
        maps[:, j, top:top + ch, left:left + cw] = attribution.to_map(a)
  return maps[:, :k], (None if labels is None else maps[:, k])


def on_photos(true_maps, top_maps, size) -> tuple[np.ndarray, np.ndarray]:
  """True-class maps [n, h, w] and top-k maps [n, k, h, w] resized onto the photos localised on, of
  `size` (`localise.resize_map`)."""
  return (np.stack([localise.resize_map(m, size) for m in true_maps]),
          np.stack([[localise.resize_map(m, size) for m in row] for row in top_maps]))


def localise_images(config, images, maps: dict, indices, total: int, shared=None, *, methods=None,
                    progress=None) -> tuple[dict, dict]:
  """Every method of config.localise (or of `methods`, {name: settings}) on each image's true-class map
  and its top-k maps; `progress(name, n)` (optional) is called as each method is done.

  maps: {config.maps name: (true-class maps [n, H, W], top-k maps [n, k, H, W])}, each method taking
  its `map_of`. indices: the images' positions in the evaluation set of `total` images (they seed the
  GraphCut's colour model sampling, so a share of the images gives the same boxes as the whole set).
  shared [n] int (optional): where the true class is top-k class j (else -1) and its map that class's
  map: its box is then that map's box, localised once. Returns ({method: {'true_boxes' [n, 4],
  'top_boxes' [n, k, 4], 'status' [n, k + 1] str (column 0: the true class, then the top-k), 'seconds'}},
  {method: true-class `localise.Result`s}).

  Every method is started (`localise.start_batch`: seeds and colour models here, cuts queued in the
  worker pool) before the first one's results are collected, so the workers go from one method's cuts
  to the next's without waiting; those without colour models first, while the colour models' program
  compiles (`localise.prepare`). A method's 'seconds': its start plus the wait for its
  results (they add up to the whole call, less the compile's wait).
  """
  n = len(images)
  shared = np.full(n, -1) if shared is None else np.asarray(shared)
  alone = np.flatnonzero(shared < 0)  # the true-class maps localised on their own
  views = list(images)  # one array object per image: its maps share one cut task
  methods = dict(config.localise if methods is None else methods)
  cuts = {name: cut_settings(s) for name, s in methods.items()}
  graphcuts = [name for name in methods if localise.settings(cuts[name]).method == 'graphcut']
  top_k = next(iter(maps.values()))[1].shape[1] if maps else 0  # every map has each image's top-k
  sizes = [im.shape[:2] for im in views for _ in range(top_k)] + [views[i].shape[:2] for i in alone]
  preparing = localise.prepare(sizes, cuts.values(), workers=config.workers)

  def start(name):
    t = time.perf_counter()
    true_maps, top_maps = maps[map_of(name, methods[name])]
    k = top_maps.shape[1]
    # the top-k maps, then the true-class maps localised on their own, in one batch
    positions = [total + int(i) * k + j for i in indices for j in range(k)] + [int(indices[i]) for i in alone]
    finish = localise.start_batch([im for im in views for _ in range(k)] + [views[i] for i in alone],
                                  list(top_maps.reshape(n * k, *top_maps.shape[2:])) + list(true_maps[alone]),
                                  cuts[name], workers=config.workers, indices=positions)
    return finish, k, time.perf_counter() - t

  # the methods without colour models first, while the workers start and the colour models compile
  started = {name: start(name) for name in methods if name not in graphcuts}
  preparing.join()
  started.update({name: start(name) for name in graphcuts})
  out, kept = {}, {}
  for name in methods:
    finish, k, seconds = started[name]
    t = time.perf_counter()
    results = finish()
    top, own = results[:n * k], results[n * k:]
    true = [top[i * k + shared[i]] for i in range(n)]
    for i, r in zip(alone, own):
      true[i] = r
    out[name] = {'true_boxes': np.array([r.box for r in true], np.int64).reshape(n, 4),
                 'top_boxes': np.array([r.box for r in top], np.int64).reshape(n, k, 4),
                 'status': np.array([[a.status] + [b.status for b in top[i * k:(i + 1) * k]]
                                     for i, a in enumerate(true)]).reshape(n, k + 1),
                 'seconds': seconds + time.perf_counter() - t}
    kept[name] = true
    if progress is not None:
      progress(name, n)
  return out, kept


def top_guesses(found: dict, top_classes) -> list[list[tuple]]:
  """One method's `localise_images` result as ILSVRC guesses: per image, (class, box) for its top-k."""
  n, k = top_classes.shape
  return [[(int(top_classes[i, j]), tuple(found['top_boxes'][i, j])) for j in range(k)] for i in range(n)]


def localisation_failures(found: dict, gt_labels, gt_boxes, top_classes) -> dict:
  """Why the top-k guesses fail, per method (`metrics.localisation_failures` counts; 'per_image': each
  image's category), and the oracle: the top-k error if each image took whichever method localised it
  right (an upper bound on any choice)."""
  k = top_classes.shape[1]
  per_image = {name: metrics.localisation_failures(top_guesses(r, top_classes), gt_labels, gt_boxes, top_k=k)
               for name, r in found.items()}
  right = np.array([[c == 'correct' for c in f['per_image']] for f in per_image.values()])
  return {'top_k': k, 'per_method': {name: f['counts'] for name, f in per_image.items()},
          f'oracle_top{k}_loc_error': float(1 - right.any(axis=0).mean()),
          'per_image': {name: f['per_image'] for name, f in per_image.items()}}


def localisation_metrics(config, found: dict, labels, gt_labels, gt_boxes, top_classes, log=print) -> dict:
  """GT-known box accuracy and ILSVRC top-1 / top-k localisation error of `localise_images`' boxes.

  Also per method the status counts and 'fallbacks': how many boxes were the full-image fallback
  (status other than 'ok': flat or invalid map, empty cut), {'true': of the n true-class boxes, 'top':
  of the n x k top-k boxes, 'total'}: a fallback box is a guess like any other and can flatter a method.
  """
  n, k = top_classes.shape
  out = {}
  for name, r in found.items():
    guesses = top_guesses(r, top_classes)
    names, counts = np.unique(np.ravel(r['status']), return_counts=True)
    true_boxes = [tuple(b) for b in r['true_boxes']]
    fallbacks = {'true': localise.fallbacks(r['status'][:, 0]),
                 'top': localise.fallbacks(r['status'][:, 1:].ravel())}
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
