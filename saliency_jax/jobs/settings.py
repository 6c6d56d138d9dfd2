"""A config read into the protocol's settings: the one place the jobs' shared keys are read.

Each job's `run` calls these at its top (after `config_checks`) and from then on passes settings, never
the config: `data` (`setup.Data`), `checkpoint` (`setup.Checkpoint`), `specs` ({name: `maps.MapSpec`}),
`cuts` ({name: `localisation.Cut`}), `class_names`, and `prepare` (`setup.prepare` with the config's
training). Every key read here has its default in `saliency_jax.defaults`.
"""

import pathlib

import jax

from saliency_jax import train
from saliency_jax.data import make_source
from saliency_jax.protocol import localisation, maps, setup


def data(config) -> setup.Data:
  """The data settings of a config: config.data, and config.localise_size (0: the net's images).

  Args:
    config: the job's config.

  Returns:
    A `setup.Data`.
  """
  d = config.data
  return setup.Data(sources=lambda split: make_source(d, split), image_size=d.image_size,
                    localise_size=config.get('localise_size') or 0, skip_bad=bool(d.get('skip_bad', False)),
                    mean=None if d.get('mean') is None else tuple(d.mean),
                    std=None if d.get('std') is None else tuple(d.std),
                    stream=bool(d.get('stream', False)), key=d.to_dict())


def checkpoint(config) -> setup.Checkpoint:
  """config.checkpoint (kind '': none, the job trains config.model).

  Args:
    config: the job's config.

  Returns:
    A `setup.Checkpoint`.
  """
  c = config.get('checkpoint')
  return setup.Checkpoint(str(c.get('kind') or ''), str(c.get('path') or '')) if c else setup.Checkpoint()


def input_size(config) -> int:
  """The side of what the net sees: config.crop_size, else data.image_size.

  Args:
    config: the job's config.

  Returns:
    Pixels.
  """
  return config.get('crop_size') or config.data.image_size


def eval_crop(config) -> int:
  """The centred crop test accuracy is measured on.

  A pretrained net's config.eval_crop, or the size of the random crops it was trained on
  (config.train.crop).

  Args:
    config: the job's config.

  Returns:
    Pixels (0: the whole image).
  """
  return config.get('eval_crop', 0) if checkpoint(config).kind else config.train.get('crop', 0)


def specs(config, names=None) -> dict:
  """The map specs: the paper's gradient maps and the config.maps entries `names`, in order.

  Args:
    config: the job's config.
    names: config.maps entries (None: those config.localise cuts).

  Returns:
    {name: `maps.MapSpec`}.
  """
  if names is None:
    names = dict.fromkeys(cut.map for cut in cuts(config).values())
  entries = dict(config.get('maps') or {})
  return {'gradient': maps.GRADIENT, **{name: maps.MapSpec.parse(name, entries[name])
                                        for name in names if name != 'gradient'}}


def cuts(config, entries=None) -> dict:
  """The cuts of config.localise (or of `entries`).

  Args:
    config: the job's config.
    entries: {name: entry}, or None.

  Returns:
    {name: `localisation.Cut`}.
  """
  return {name: localisation.Cut.parse(name, e) for name, e in (entries or config.localise).items()}


def class_names(config) -> list[str]:
  """The class names of a config.

  config.class_names, or the names of config.class_names_file, or for ILSVRC folders the synset names of
  data_dir/folder/synset_words.txt, or the class indices.

  Args:
    config: the job's config.

  Returns:
    The names.
  """
  file = config.get('class_names_file') or None  # the photos job's (`defaults.images_job`)
  d = config.data
  synsets = pathlib.Path(d.get('data_dir', '')) / d.get('folder', '') / 'synset_words.txt'
  if not file and d.name == 'ilsvrc' and not d.get('label_map') and synsets.is_file():
    file = synsets
  return setup.class_names(config.get('class_names'), config.num_classes, file)


def prepare(config, workdir: pathlib.Path, *, test: bool = True, log=print) -> setup.Setup:
  """`setup.prepare` of the config: its data, and its checkpoint or the net trained in workdir.

  The net config.model is trained (or resumed) in workdir by `train.train_and_evaluate`; a workdir holding
  checkpoints trained under another config is refused before any work.

  Args:
    config: the job's config.
    workdir: the job's workdir.
    test: read the test split.
    log: where progress is said.

  Returns:
    A `setup.Setup`.
  """
  pretrained = checkpoint(config)
  if not pretrained.kind:
    train.check_fingerprint(config, workdir)
  def train_net(splits):
    return train.train_and_evaluate(config, workdir, splits, progress=jax.process_index() == 0)
  return setup.prepare(data(config), workdir, checkpoint=pretrained, num_classes=config.num_classes,
                       input_size=input_size(config), eval_crop=eval_crop(config), train_net=train_net,
                       test=test, log=log)
