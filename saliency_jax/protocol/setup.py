"""Data and model setup: the images as the protocol reads them, the net it explains, their preprocessing.

`Data` says how images are read (the net's input size, the size they are localised at, bad records);
`load_splits` reads whole splits into arrays (cached on disk), `read_records` a few test records, both
with the photos localised on; `load_model` imports a pretrained net and checks its scores;
`normalisation` is the preprocessing; `prepare` is all of it, with training where there is no
checkpoint, and returns one `Setup`. No function here takes a config: the jobs translate theirs.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import pathlib
import time
from collections.abc import Callable

import jax
import numpy as np

from saliency_jax import rules, saliency, store, train, weights
from saliency_jax.data import Subset, records, transforms
from saliency_jax.errors import UserError
from saliency_jax.protocol.cache import pack, source_digest, unpack


@dataclasses.dataclass(frozen=True)
class Data:
  """How the protocol reads images.

  sources: split name ('train', 'test') -> the data source (`saliency_jax.data.make_source`);
  image_size: the side the net sees; localise_size: the side of the photos the boxes are cut on (0: the
  same images); skip_bad: leave unreadable records out (listed) instead of stopping; mean / std: the
  normalisation the data prescribes (None: the model's own, else the training mean); stream: training
  reads its split on demand; key: the data settings, a dict (they key the cache with the data code).
  """
  sources: Callable[[str], object]
  image_size: int
  localise_size: int = 0
  skip_bad: bool = False
  mean: tuple | None = None
  std: tuple | None = None
  stream: bool = False
  key: dict = dataclasses.field(default_factory=dict)

  @property
  def photo_size(self) -> int:
    """The side of the images localised on."""
    return self.localise_size or self.image_size


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A pretrained net: its kind and path; kind '' for none (the job trains its net).

  Attributes:
    kind: 'cifar_resnet', 'torchvision_vgg16', 'tfjs_layers' or 'python' ('file.py:function' or
      'module:function' returning any JAX callable, or (callable, its preprocessing)).
    path: the checkpoint (or the function).
  """
  kind: str = ''
  path: str = ''

  def __str__(self) -> str:
    return f'config.checkpoint ({self.kind} {self.path})'


@dataclasses.dataclass
class Setup:
  """What `prepare` returns.

  The arrays of the splits read (`load_splits`), normalised ('splits'), the normalisation, the model in
  inference mode, what training did ('trained') and each stage's seconds.
  """
  data: dict
  splits: dict
  mean: np.ndarray
  std: np.ndarray
  model: object
  trained: dict
  seconds: dict

  def normalise(self, images) -> np.ndarray:
    """Images normalised as the net expects (`transforms.normalise` with the setup's mean and std).

    Args:
      images: uint8 [..., 3] or floats in [0, 1].

    Returns:
      float32, images' shape.
    """
    return transforms.normalise(images, self.mean, self.std)


def data_key(data: Data) -> str:
  """The digest naming a data cache: the data settings and the data code.

  Args:
    data: the `Data` settings.

  Returns:
    Hex digits.
  """
  return hashlib.sha256(json.dumps([data.key, source_digest('data')], sort_keys=True,
                                   default=str).encode()).hexdigest()[:12]


def load_splits(data: Data, cache: pathlib.Path, *, train_split: bool, test: bool = True, log=print) -> dict:
  """The splits as arrays (`transforms.load`), cached under `data_key`.

  'train' (with `train_split`) and 'test' (with `test`) at data.image_size, and with `test` and
  data.localise_size 'photos': the test split at that size (localisation on larger images than the net
  sees). Each split holds `transforms.load`'s images, labels, boxes, box_labels, difficult (VOC's flags)
  and masks (or None), and 'indices' (the record index of every example), 'num_records' and 'bad': the
  records left out with data.skip_bad ([{'record', 'reason', 'message'}], `data.records`; those the
  source dropped when built, which are in no split, are listed with every split), cached with the arrays.

  Args:
    data: the `Data` settings.
    cache: the cache's folder.
    train_split: read the training split.
    test: read the test split.
    log: where progress is said.

  Returns:
    {split: arrays}.
  """
  key = data_key(data)
  wanted = [('test', 'test', data.image_size)] if test else []
  if train_split:
    wanted.insert(0, ('train', 'train', data.image_size))
  if data.localise_size and test:
    wanted.append(('photos', 'test', data.localise_size))
  out = {}
  for name, split, size in wanted:
    path = cache / f'{name}-{size}-{key}.npz'
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
    source = data.sources(split)
    num_records = len(source)
    loaded = transforms.load(source, size, skip_bad=data.skip_bad, progress=True, desc=f'data {name}')
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


def skipped_records(splits: dict) -> list[dict]:
  """Every record `load_splits` left out, once.

  Args:
    splits: `load_splits`' dict.

  Returns:
    [{'record', 'reason', 'message'}].
  """
  return records.unique(b for split in splits.values() for b in split['bad'])


def read_records(data: Data, source, index, mean, std, *, photos: bool = True,
                 progress: bool = False) -> dict:
  """Test records of a source, read, normalised and with their boxes in the pixels of the images localised on.

  Args:
    data: the `Data` settings.
    source: the test source.
    index: the records' indices.
    mean: the normalisation's mean.
    std: the normalisation's std.
    photos: read 'images' at data.localise_size; without, 'images' are the test images whatever
      localise_size (`read_photos` reads the photos).
    progress: draw a progress bar.

  Returns:
    {'indices' (those read: bad records are left out with data.skip_bad), 'ids', 'labels', 'x'
    (normalised, at data.image_size), 'images' (the images localised on), 'masks' (or None for photos of
    another size), 'boxes' (in the pixels of 'images'), 'box_labels', 'difficult', 'bad' (by record
    index)}.
  """
  index = np.asarray(index, np.int64)
  test = transforms.load(Subset(source, index), data.image_size, skip_bad=data.skip_bad, allow_empty=True,
                         progress=progress, desc='images')
  kept = index[test['indices']]
  bad = [{**b, 'index': int(index[b['index']])} for b in test['bad']]
  out = {'indices': kept, 'ids': [str(i) for i in test['ids']], 'labels': test['labels'],
         'x': transforms.normalise(test['images'], mean, std), 'images': test['images'],
         'masks': test.get('masks'), 'boxes': test['boxes'], 'box_labels': test['box_labels'],
         'difficult': test['difficult'], 'bad': bad}
  if photos and data.localise_size and len(kept):
    out['images'], out['boxes'] = read_photos(data, source, kept, progress=progress)
    out['masks'] = None
  return out


def read_photos(data: Data, source, index, *, progress: bool = False) -> tuple[np.ndarray, list]:
  """The good records at data.localise_size.

  Args:
    data: the `Data` settings.
    source: the test source.
    index: the records' indices.
    progress: draw a progress bar.

  Returns:
    (images uint8 [n, H, W, 3], boxes per image [M_i, 4]).

  Raises:
    ValueError: other records are bad than at data.image_size.
  """
  photos = transforms.load(Subset(source, index), data.localise_size, skip_bad=True, allow_empty=True,
                           progress=progress, desc='photos')
  if len(photos['indices']) != len(index):
    raise ValueError(f'the test split read at {data.localise_size} px left out other records than at '
                     f'{data.image_size} px: {photos["bad"][:3]}')
  return photos['images'], photos['boxes']


def python_model(path: str, input_size: int) -> tuple:
  """A net given as Python: a function that returns the model (and optionally its preprocessing).

  The function returns any JAX callable f(x [B, H, W, C]) -> scores [B, K] (`rules.as_model`), or
  (model, {'mean': (r, g, b), 'std': (r, g, b)}): its preprocessing, x = (image in [0, 1] - mean) / std.

  Args:
    path: 'package.module:function' or 'path/to/file.py:function'.
    input_size: the side of the images the model takes (to trace a closure at).

  Returns:
    (the model as `rules.as_model` gives it, in inference mode; the preprocessing or None).

  Raises:
    ValueError: a path without ':function'.
    FileNotFoundError: no such file.
  """
  where, _, name = str(path).rpartition(':')
  if not where or not name:
    raise ValueError("config.checkpoint.path of kind 'python' must be 'module:function' or "
                     f"'file.py:function', got {path!r}")
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
  model = rules.as_model(model, jax.ShapeDtypeStruct((1, input_size, input_size, 3), np.float32))
  return model.eval(), preprocessing


LOADERS = {'cifar_resnet': weights.load_cifar_resnet, 'torchvision_vgg16': weights.load_torchvision_vgg16,
           'tfjs_layers': weights.load_tfjs_layers_model}


def pretrained(checkpoint: Checkpoint):
  """The net of a checkpoint file (kind 'cifar_resnet', 'torchvision_vgg16' or 'tfjs_layers'), for inference.

  Args:
    checkpoint: the `Checkpoint` settings.

  Returns:
    The model.

  Raises:
    FileNotFoundError: no checkpoint at the path.
    ValueError: an unknown kind.
  """
  kind, path = checkpoint.kind, pathlib.Path(checkpoint.path).expanduser()
  if not (path.is_file() or (kind == 'tfjs_layers' and (path / 'model.json').is_file())):
    raise FileNotFoundError(f'config.checkpoint.path: no checkpoint at {path}')
  if kind not in LOADERS:
    raise ValueError(f"config.checkpoint.kind must be one of {sorted(LOADERS) + ['python']}, got {kind!r}")
  model = LOADERS[kind](path)
  model.eval()
  return model


def load_model(checkpoint: Checkpoint, *, input_size: int, num_classes: int) -> tuple:
  """A pretrained net and its preprocessing (`python_model` or `pretrained`), in inference mode, checked.

  Args:
    checkpoint: the `Checkpoint` settings.
    input_size: the side of the images it takes.
    num_classes: K, the number of class scores it must give.

  Returns:
    (model, its preprocessing or None).

  Raises:
    UserError: the net does not load, gives another number of float scores per image at input_size, or
      its scores of an image depend on the other images of its batch (`saliency.check_model`).
  """
  if checkpoint.kind == 'python':
    model, preprocessing = python_model(checkpoint.path, input_size)
  else:
    model, preprocessing = pretrained(checkpoint), None
  try:
    k = saliency.num_classes(model, (input_size, input_size, 3))
    saliency.check_model(model, jax.random.normal(jax.random.key(0), (2, input_size, input_size, 3)))
  except ValueError as e:
    raise UserError(f'{checkpoint}: {e}') from None
  if k != num_classes:
    raise UserError(f'{checkpoint} gives {k} class scores per image, config.num_classes is {num_classes}')
  return model, preprocessing


def normalisation(data: Data, images: np.ndarray | None, preprocessing=None) -> tuple[np.ndarray, np.ndarray]:
  """The normalisation's (mean, std): the data's, the model's own, or the training set's mean colour.

  data.mean / std, or a Python model's own preprocessing, or the training set's mean colour and std 1
  (the paper's zero-centring); with none of these (no training images), none: the model sees pixels in
  [0, 1].

  Args:
    data: the `Data` settings.
    images: the training images, uint8 [N, H, W, 3], or None.
    preprocessing: the model's {'mean', 'std'}, or None.

  Returns:
    (mean float32 [3], std float32 [3]).

  Raises:
    ValueError: the model's and the data's disagree.
  """
  if preprocessing is not None:
    given = (np.asarray(preprocessing['mean'], np.float32), np.asarray(preprocessing['std'], np.float32))
    if data.mean is not None and not (np.allclose(given[0], data.mean) and np.allclose(given[1], data.std)):
      raise ValueError(f'the model brings its preprocessing (mean {given[0].tolist()}, std '
                       f'{given[1].tolist()}) and config.data sets another (mean {data.mean}, '
                       f'std {data.std})')
    return given
  if data.mean is not None:
    return np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
  if images is None:
    return np.zeros(3, np.float32), np.ones(3, np.float32)
  return images.reshape(-1, 3).mean(0).astype(np.float32) / 255.0, np.ones(3, np.float32)


def prepare(data: Data, workdir: pathlib.Path, *, checkpoint: Checkpoint, num_classes: int, input_size: int,
            eval_crop: int, train_net: Callable | None = None, test: bool = True, log=print) -> Setup:
  """The data and the net every experiment needs: the splits, the normalisation and the net.

  The splits (`load_splits`, cached in workdir/data), the normalisation, and the net: `checkpoint`'s
  (`load_model`), else the one `train_net(splits)` trains (or resumes) in workdir, returning (model, what
  training did). Without `test` the test split is not read and 'trained' has no 'test_accuracy' (the
  main job reads it chunk by chunk).

  Args:
    data: the `Data` settings.
    workdir: the job's workdir.
    checkpoint: the `Checkpoint` settings (kind '' to train).
    num_classes: K.
    input_size: the side of the images the net takes.
    eval_crop: the centred crop the accuracy is measured on (0: the whole image).
    train_net: splits -> (model, what training did), for a net trained here.
    test: read the test split.
    log: where progress is said.

  Returns:
    A `Setup`.

  Raises:
    ValueError: a streamed set without data.mean and std.
  """
  seconds = {}
  t0 = time.perf_counter()
  splits = load_splits(data, workdir / 'data', train_split=not checkpoint.kind and not data.stream, test=test,
                       log=log)
  seconds['data'] = time.perf_counter() - t0
  model, preprocessing = (load_model(checkpoint, input_size=input_size, num_classes=num_classes)
                          if checkpoint.kind else (None, None))
  mean, std = normalisation(data, splits['train']['images'] if 'train' in splits else None, preprocessing)
  normalised = {s: {'images': transforms.normalise(splits[s]['images'], mean, std),
                    'labels': splits[s]['labels']} for s in ('train', 'test') if s in splits}
  if data.stream and not checkpoint.kind:  # read on demand: ImageNet-sized sets
    if data.mean is None:
      raise ValueError('config.data.stream needs config.data.mean and std (no pass over the data to compute '
                       'them)')
    normalised['train'] = transforms.Streamed(data.sources('train'), data.image_size, mean, std)

  t0 = time.perf_counter()
  if checkpoint.kind:
    trained = {'checkpoint': checkpoint.path, 'steps': 0, 'resumed_from': 0}
    if test:
      trained['test_accuracy'] = train.accuracy(model, normalised['test']['images'],
                                                normalised['test']['labels'], crop=eval_crop)
  else:
    model, trained = train_net(normalised)
  seconds['train'] = time.perf_counter() - t0
  if test:
    log(f"test accuracy {trained['test_accuracy']:.3f} ({trained['steps']} steps, resumed from "
        f"{trained['resumed_from']})")
  else:
    log(f"trained: {trained['steps']} steps, resumed from {trained['resumed_from']}")
  return Setup(splits, normalised, mean, std, model, trained, seconds)


def class_names(names, num_classes: int, file=None) -> list[str]:
  """The class names: given, read from a file, or the class indices.

  Args:
    names: the names, or empty.
    num_classes: K.
    file: synset_words.txt (the first synonym of each line), a TF.js metadata.json (its 'labels'), or one
      name per line; or None.

  Returns:
    K names.

  Raises:
    UserError: the file names another number of classes than num_classes.
  """
  if names:
    return list(names)
  if not file:
    return [str(c) for c in range(num_classes)]
  path = pathlib.Path(file)
  text = path.read_text()
  first = text.split(maxsplit=1)[0] if text.strip() else ''
  if path.suffix == '.json':
    found = list(json.loads(text)['labels'])
  elif first[:1] == 'n' and first[1:].isdigit():  # a WordNet id: synset_words.txt
    from saliency_jax.data import imagenet
    found = [name.split(',')[0] for _, name in imagenet.read_synsets(path)]
  else:
    found = [line.strip() for line in text.splitlines() if line.strip()]
  if len(found) != num_classes:
    raise UserError(f'config.class_names_file {path} names {len(found)} classes, config.num_classes is '
                    f'{num_classes}')
  return found
