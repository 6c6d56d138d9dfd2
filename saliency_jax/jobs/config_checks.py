"""A job's config checked as a whole before any work, and its relative paths resolved.

`check_main_job(config)` raises one `UserError` listing every setting that cannot run, one line each,
naming the key, the allowed values and the value given: before the data is read or a step trained
(a mistyped crop size or top-k used to fail minutes or hours in, deep in a traceback). Checks that need
the model (its input size, its classes) build it abstractly (`nnx.eval_shape`: no weights).

`resolve_paths(config, config_file)` makes the config's relative paths (data.data_dir, data.boxes_dir, a
checkpoint's path) absolute: relative to the current directory where they exist there, else to the
folder the config's commands are meant to run from (the repository root for a config in the
repository's configs/ folder, such as '../shared/data' in the package's configs; else the config file's
own folder); found in neither, an error names both places.
"""

import math
import pathlib

from saliency_jax.data import splits, synthetic
from saliency_jax.errors import UserError
from saliency_jax.jobs import settings
from saliency_jax.protocol import maps

SOURCES = ('synthetic', 'voc', 'ilsvrc', 'tfds', 'images')
CHECKPOINT_KINDS = ('', 'cifar_resnet', 'torchvision_vgg16', 'tfjs_layers', 'python')


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


class Problems:
  """Collects one line per bad setting; `raise_any` raises them as one UserError."""

  def __init__(self):
    self.lines = []

  def need(self, ok: bool, key: str, allowed: str, value) -> bool:
    """Records 'config.<key> must be <allowed>, got <value>' unless ok.

    Args:
      ok: whether the setting is fine.
      key: the setting's dotted key.
      allowed: what it must be.
      value: what it is.

    Returns:
      ok.
    """
    if not ok:
      self.lines.append(f'config.{key} must be {allowed}, got {value!r}')
    return ok

  def integer(self, config, key: str, low: int, high: int | None = None) -> bool:
    """Checks that a setting is an integer in range.

    Args:
      config: the config.
      key: the setting's dotted key.
      low: the least value.
      high: the greatest value, or None.

    Returns:
      Whether it is.
    """
    value = _get(config, key)
    allowed = f'an integer >= {low}' if high is None else f'an integer in [{low}, {high}]'
    return self.need(_is_int(value) and value >= low and (high is None or value <= high), key, allowed, value)

  def number(self, config, key: str, low: float, *, strict: bool = False) -> bool:
    """Checks that a setting is a finite number above (or at least) `low`.

    Args:
      config: the config.
      key: the setting's dotted key.
      low: the bound.
      strict: above it, not at least it.

    Returns:
      Whether it is.
    """
    value = _get(config, key)
    ok = _is_number(value) and math.isfinite(value) and (value > low if strict else value >= low)
    return self.need(ok, key, f'a finite number {">" if strict else ">="} {low}', value)

  def one_of(self, config, key: str, allowed) -> bool:
    """Checks that a setting is one of the allowed values.

    Args:
      config: the config.
      key: the setting's dotted key.
      allowed: the values.

    Returns:
      Whether it is.
    """
    value = _get(config, key)
    return self.need(value in allowed, key, f'one of {tuple(allowed)}', value)

  def raise_any(self) -> None:
    """Raises the problems found, every one in one error.

    Raises:
      UserError: listing every setting that cannot run.
    """
    if self.lines:
      more = f' ({len(self.lines)} settings)' if len(self.lines) > 1 else ''
      raise UserError('the config cannot run' + more + ':\n  ' + '\n  '.join(self.lines))


def _get(config, key: str):
  for part in key.split('.'):
    config = config.get(part) if hasattr(config, 'get') else None
  return config


def _check_data(p: Problems, config) -> None:
  d = config.data
  if not p.one_of(config, 'data.name', SOURCES):
    return
  p.integer(config, 'data.image_size', synthetic.MIN_SIZE if d.name == 'synthetic' else 8)
  if d.get('part') is not None:
    p.one_of(config, 'data.part', splits.PARTS)
  p.need((d.get('mean') is None) == (d.get('std') is None), 'data.std',
         'set with data.mean (both or neither)', d.get('std'))
  for key in ('mean', 'std'):
    value = d.get(key)
    if value is not None:
      ok = (isinstance(value, tuple | list) and len(value) == 3 and all(_is_number(v) for v in value)
            and (key == 'mean' or all(v > 0 for v in value)))
      p.need(ok, f'data.{key}', 'None or 3 numbers (r, g, b)' + (', each > 0' if key == 'std' else ''), value)
  if d.name == 'synthetic':
    p.integer(config, 'data.num_test', 1)
    if not settings.checkpoint(config).kind:
      p.integer(config, 'data.num_train', 1)
    p.integer(config, 'data.num_classes', 1)
  if d.name == 'voc':
    fraction = d.get('test_fraction')
    p.need(_is_number(fraction) and 0 < fraction < 1, 'data.test_fraction', 'a fraction in (0, 1)', fraction)
    p.need(len(d.get('folders') or ()) > 0, 'data.folders', 'one or more VOC folders', d.get('folders'))
  if d.name in ('voc', 'ilsvrc', 'images'):
    p.need(bool(d.get('data_dir')), 'data.data_dir', 'a folder', d.get('data_dir'))


def _check_model(p: Problems, config) -> None:
  kind = settings.checkpoint(config).kind
  if config.get('checkpoint') and not p.one_of(config, 'checkpoint.kind', CHECKPOINT_KINDS):
    return
  if kind:
    p.need(bool(config.checkpoint.get('path')), 'checkpoint.path', f'a path for kind {kind!r}',
           config.checkpoint.get('path'))
    return
  if not p.need(config.get('model') is not None and bool(config.model.get('name')), 'model.name',
                'a model of saliency_jax.models (or set config.checkpoint)', _get(config, 'model.name')):
    return
  t = config.get('train')
  if not p.need(t is not None, 'train', 'the training settings (or set config.checkpoint)', t):
    return
  p.integer(config, 'train.steps', 1)
  p.integer(config, 'train.batch_size', 1)
  p.number(config, 'train.learning_rate', 0, strict=True)
  p.number(config, 'train.weight_decay', 0)
  p.one_of(config, 'train.optimizer', ('adamw', 'sgd'))
  p.one_of(config, 'train.schedule', ('cosine', 'step', 'constant'))
  p.integer(config, 'train.warmup_steps', 0)
  p.integer(config, 'train.checkpoint_every', 1)
  p.integer(config, 'train.log_every', 1)
  p.integer(config, 'train.max_shift', 0)
  if t.get('momentum') is not None:
    p.need(_is_number(t.momentum) and 0 <= t.momentum < 1, 'train.momentum', 'a number in [0, 1)', t.momentum)
  if t.get('crop') is not None:
    p.integer(config, 'train.crop', 0, _get(config, 'data.image_size'))


def _model_runs(p: Problems, config, size: int) -> None:
  """The config's model, built abstractly, scores one image of `size` px into num_classes scores."""
  if settings.checkpoint(config).kind or p.lines:
    return
  import jax
  from flax import nnx

  from saliency_jax import train
  try:
    abstract = nnx.eval_shape(lambda: train.make_model(config, config.num_classes))
    graphdef, state = nnx.split(abstract)
    jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((1, size, size, 3),
                                                                                         'float32'))
  except Exception as e:  # the model's own error, shortened: the size or a setting does not fit it
    message = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    what = 'config.crop_size' if config.get('crop_size') else 'config.data.image_size'
    p.lines.append(f'config.model ({config.model.name}) cannot score {size} px images ({what}): '
                   f'{type(e).__name__}: {message}')


def _check_maps_and_boxes(p: Problems, config) -> int | None:
  """What every job that maps and localises a config's images shares, checked.

  The classes, top-k, crops, chunks, workers, config.maps and config.localise. Returns num_classes (None:
  not an integer).
  """
  p.integer(config, 'num_classes', 1)
  k_all = config.get('num_classes') if _is_int(config.get('num_classes')) else None
  p.integer(config, 'top_k', 1, k_all)
  names = config.get('class_names') or ()
  if names and k_all is not None:
    p.need(len(names) == k_all, 'class_names', f'empty or one name per class ({k_all})',
           f'{len(names)} names')
  if 'data' in config and config.data is not None:
    _check_data(p, config)
  else:
    p.need(False, 'data', 'the data settings', None)
  size = _get(config, 'data.image_size')
  p.integer(config, 'crop_size', 0, size if _is_int(size) else None)
  p.integer(config, 'localise_size', 0)
  p.integer(config, 'chunk_size', 1)
  p.integer(config, 'eval_chunk', 1)
  p.integer(config, 'workers', 0)
  p.integer(config, 'seed', 0)
  try:
    check_localise(config)
  except ValueError as e:
    p.lines.append(str(e))
  if config.get('sequential_maps') is not None:
    p.need(isinstance(config.sequential_maps, bool), 'sequential_maps', 'True or False',
           config.sequential_maps)
  return k_all


def check_localise(config) -> None:
  """Raises for config.localise / config.maps entries that cannot run, before any map is made.

  Args:
    config: the job's config.

  Raises:
    ValueError: a cut of a map config.maps does not name, or an entry that does not parse.
  """
  named = dict(config.get('maps') or {})
  for name, cut in settings.cuts(config).items():
    if cut.map != 'gradient' and cut.map not in named:
      raise ValueError(f'config.localise.{name} localises map {cut.map!r}, which config.maps does not name '
                       f'(it names {sorted(named)})')
  for name, spec in named.items():
    maps.MapSpec.parse(name, spec)


def check_main_job(config) -> None:
  """Raises listing every setting of the main job's config that cannot run (`Problems`).

  Args:
    config: the job's config.

  Raises:
    UserError: listing the settings.
  """
  p = Problems()
  k_all = _check_maps_and_boxes(p, config)
  p.need(_get(config, 'data.name') != 'images', 'data.name', 'a source with boxes (a folder of photos '
         'without them: experiments/explain_images.py)', 'images')
  size = _get(config, 'data.image_size')
  p.integer(config, 'num_eval', 0)
  p.integer(config, 'num_deconvnet', 0)
  p.integer(config, 'num_figure', 0)
  p.number(config, 'pointing_tolerance', 0)
  if config.get('eval_crop') is not None:
    p.integer(config, 'eval_crop', 0, size if _is_int(size) else None)
  d = config.get('distributed')
  if d is not None:
    p.integer(config, 'distributed.num_processes', 1)
    p.integer(config, 'distributed.process_id', 0)
    p.number(config, 'distributed.timeout_s', 0, strict=True)
  c = config.get('class_models')
  if c is not None:
    p.integer(config, 'class_models.steps', 0)
    if k_all is not None:
      bad = [k for k in (c.get('classes') or ()) if not _is_int(k) or not 0 <= k < k_all]
      p.need(not bad, 'class_models.classes', f'class indices in [0, {k_all})', bad)
  _check_model(p, config)
  for key in ('selected_method', 'figure_method'):
    name = config.get(key)
    if name and name not in config.localise:
      p.lines.append(f'config.{key} {name!r} is not one of config.localise: {sorted(config.localise)}')
  if _is_int(size):
    _model_runs(p, config, config.get('crop_size') or size)
  p.raise_any()


def check_images_job(config) -> None:
  """Raises listing every setting of the photos job's config (`jobs.images`) that cannot run.

  Args:
    config: the job's config.

  Raises:
    UserError: listing the settings.
  """
  p = Problems()
  _check_maps_and_boxes(p, config)
  p.need(_get(config, 'data.name') == 'images', 'data.name', "'images' (a folder of photos)",
         _get(config, 'data.name'))
  labels = _get(config, 'data.labels')
  p.need(labels is None or isinstance(labels, str), 'data.labels',
         "'' (none), 'subfolders' or a CSV file of image,label rows", labels)
  p.need(bool(settings.checkpoint(config).kind), 'checkpoint.kind',
         f'the kind of the pretrained net, one of {CHECKPOINT_KINDS[1:]}', settings.checkpoint(config).kind)
  _check_model(p, config)
  p.integer(config, 'num_images', 0)
  if config.get('overlays') is not None:
    p.need(isinstance(config.overlays, bool), 'overlays', 'True or False', config.overlays)
  p.raise_any()


def _repository_root(config_file: pathlib.Path) -> pathlib.Path | None:
  folder = config_file.resolve().parent
  return folder.parent if folder.name == 'configs' and (folder.parent / 'saliency_jax').is_dir() else None


def base_folder(config_file) -> pathlib.Path:
  """The folder a config's relative paths start from when not found from the current directory.

  See the module docstring.

  Args:
    config_file: the config's file.

  Returns:
    The repository root holding it, else its folder.
  """
  config_file = pathlib.Path(config_file)
  return _repository_root(config_file) or config_file.resolve().parent


def resolve_paths(config, config_file) -> list[str]:
  """Makes the relative paths the job reads absolute (module docstring), in place.

  '~' is the user's home; a python model's 'module:function' is no path.

  Args:
    config: the job's config.
    config_file: its file.

  Returns:
    The keys changed.

  Raises:
    UserError: a path found neither from the current directory nor from the config's folder.
  """
  base = base_folder(config_file)
  changed = []

  def resolve(name: str, suffix: str = '') -> None:  # name: 'data.data_dir', 'checkpoint.path', ...
    part, key = name.split('.')
    holder = config[part]
    value = holder.get(key)
    if not isinstance(value, str) or not value:
      return
    path = pathlib.Path(value[:len(value) - len(suffix)]).expanduser()
    if path.is_absolute():
      return
    found = next((where / path for where in (pathlib.Path.cwd(), base) if (where / path).exists()), None)
    if found is None:
      raise UserError(f'config.{name} {value!r} is found neither from the current directory '
                      f'({pathlib.Path.cwd()}) nor from {base}')
    holder[key] = str(found.resolve()) + suffix  # a field that others refer to carries them along
    changed.append(name)

  if config.get('data') is not None:
    resolve('data.data_dir')
    resolve('data.boxes_dir')
  kind = settings.checkpoint(config).kind
  if kind == 'python':
    where, _, function = str(config.checkpoint.get('path') or '').rpartition(':')
    if where.endswith('.py'):
      resolve('checkpoint.path', f':{function}')
  elif kind:
    resolve('checkpoint.path')
  return changed
