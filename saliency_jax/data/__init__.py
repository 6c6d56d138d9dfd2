"""Data sources: the embedded synthetic set, VOC / ILSVRC XML folders, tensorflow-datasets.

Every source is random-access: `len(source)`, `source[i]` -> {'image' uint8 [H, W, 3], 'label',
'boxes' float32 [N, 4] (x0, y0, x1, y1, pixels, x1 / y1 exclusive), 'box_labels' int32 [N], 'id'},
optionally 'difficult' bool [N] (VOC's flags; absent means none is difficult).
`make_source(config, split)` builds the one a data config names; `transforms` has what they share.
"""

import pathlib

import numpy as np

from saliency_jax.data import splits


class Concat:
  """Several sources (sharing one class list) one after the other."""

  def __init__(self, sources):
    self.sources = list(sources)
    self._starts = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, i: int) -> tuple[int, int]:
    if not 0 <= i < len(self):
      raise IndexError(f'index {i} out of range for {len(self)} examples')
    k = int(np.searchsorted(self._starts, i, side='right') - 1)
    return k, i - int(self._starts[k])

  def __getitem__(self, i: int) -> dict:
    k, j = self._locate(i)
    return self.sources[k][j]

  def path(self, i: int) -> pathlib.Path:
    """Example i's image file (sources that have files).

    Args:
      i: the example's index.

    Returns:
      The file's path.
    """
    k, j = self._locate(i)
    return self.sources[k].path(j)

  @property
  def bad(self) -> list[dict]:
    """The records the sources left out when built (`records.BadRecord`s as dicts)."""
    return [b for s in self.sources for b in getattr(s, 'bad', [])]


class Subset:
  """The examples `indices` of a source."""

  def __init__(self, source, indices):
    self.source, self.indices = source, [int(i) for i in indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict:
    return self.source[self.indices[i]]

  def path(self, i: int) -> pathlib.Path:
    """Example i's image file (sources that have files).

    Args:
      i: the example's index.

    Returns:
      The file's path.
    """
    return self.source.path(self.indices[i])

  @property
  def bad(self) -> list[dict]:
    """The records the source left out when built: in no subset, so reported with each."""
    return list(getattr(self.source, 'bad', []))


class Relabelled:
  """A source with labels passed through `mapping` {old: new}.

  Examples whose label is unmapped are left out, and so are their boxes of unmapped classes (e.g.
  ImageNet classes onto CIFAR-10). Sources with a `label(i)` method (the XML folders) are filtered
  without decoding their images.
  """

  def __init__(self, source, mapping: dict[int, int]):
    self.source, self.mapping = source, dict(mapping)
    label = getattr(source, 'label', lambda i: source[i]['label'])
    self.indices = [i for i in range(len(source)) if label(i) in self.mapping]

  def __len__(self) -> int:
    return len(self.indices)

  def path(self, i: int) -> pathlib.Path:
    """Example i's image file (sources that have files).

    Args:
      i: the example's index.

    Returns:
      The file's path.
    """
    return self.source.path(self.indices[i])

  def __getitem__(self, i: int) -> dict:
    ex = dict(self.source[self.indices[i]])
    keep = np.asarray([int(b) in self.mapping for b in ex['box_labels']], bool)
    ex['boxes'] = np.asarray(ex['boxes'])[keep]
    if 'difficult' in ex:
      ex['difficult'] = np.asarray(ex['difficult'], bool)[keep]
    ex['box_labels'] = np.asarray([self.mapping[int(b)] for b in ex['box_labels'][keep]], np.int32)
    ex['label'] = self.mapping[ex['label']]
    return ex

  @property
  def bad(self) -> list[dict]:
    """The records the source left out when built."""
    return list(getattr(self.source, 'bad', []))


def split_indices(num: int, split: str, *, test_fraction: float, seed: int) -> np.ndarray:
  """A fixed train / test partition of range(num): a seeded permutation, its first indices the test split.

  round(test_fraction * num) indices are the test split.

  Args:
    num: the number of records.
    split: 'train' or 'test'.
    test_fraction: the test split's fraction.
    seed: the permutation's seed.

  Returns:
    The split's indices, sorted.

  Raises:
    ValueError: another split.
  """
  if split not in ('train', 'test'):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  order = np.random.default_rng([seed, num]).permutation(num)
  n_test = int(round(test_fraction * num))
  return np.sort(order[:n_test] if split == 'test' else order[n_test:])


def _in_part(config, part: str, ids, indices, source) -> np.ndarray:
  """The records `indices` (positions in `ids` and in `source`) that lie in `part`.

  `splits.part_of`; records with identical image files go together.
  """
  indices = np.asarray(list(indices), np.int64)
  files = [source.path(int(i)) for i in indices] if part != 'all' else None
  keep = splits.part_of([ids[i] for i in indices], part, seed=config.get('part_seed', splits.SEED),
                        fraction=config.get('selection_fraction', splits.FRACTION), files=files)
  return indices[keep]


def duplicates(first, second) -> list[tuple[str, str]]:
  """The records of two sources whose image files hold the same bytes (e.g. one photo in train and test).

  Args:
    first: a source with files.
    second: a source with files.

  Returns:
    [(file in `first`, file in `second`)].
  """
  paths = [first.path(i) for i in range(len(first))] + [second.path(i) for i in range(len(second))]
  n = len(first)
  return [(str(paths[i]), str(paths[j])) for group in splits.identical_files(paths)
          for i in group if i < n for j in group if j >= n]


def make_source(config, split: str):
  """The source a data config names (`config.name`) for a split.

  synthetic: num_train / num_test, seed, image_size, num_classes, scale, occlusion.
  voc: data_dir, folders (VOC folders, one class each or sharing `classes`), classes, test_fraction,
  seed, skip_bad: the folders concatenated, split by a seeded permutation.
  ilsvrc: data_dir, folder (images/ + annotations/ + synset_words.txt, as imagenet-val-sample),
  label_map ('' or 'cifar10': only the images whose class maps onto CIFAR-10, relabelled), skip_bad,
  squashed (default True: the sample's images are squashed copies whose <size> is the original's, so
  boxes are rescaled; False: a <size> that disagrees with the image is a bad record): all of it is the
  test split (evaluation of pretrained nets).
  skip_bad: records a source cannot use (`records.BadRecord`) are left out and listed in the source's
  `bad`, instead of stopping with an error that names the first.
  tfds: dataset (e.g. 'voc/2007'), data_dir, train_split / test_split (tfds split names), boxes_dir
  (imagenet2012: the ILSVRC val XMLs): see `data.tfds`.
  part ('all' when absent): the test split's 'selection' or 'report' part (`data.splits`). For voc /
  ilsvrc, records are split by id (ilsvrc: the file stem; voc: 'folder/stem', the folders share stems)
  with part_seed and selection_fraction; for synthetic, 'selection' is the separate 'validation' split
  (num_validation images, default num_test) and 'report' the test split.

  Args:
    config: the data config (`config.data` of a job).
    split: 'train' or 'test'.

  Returns:
    A random-access source.

  Raises:
    ValueError: an unknown source, or a part a tfds source does not have.
  """
  part = splits.check_part(config.get('part', 'all')) if split == 'test' else 'all'
  if config.name == 'synthetic':
    from saliency_jax.data import synthetic
    num = config.num_train if split == 'train' else config.num_test
    if part == 'selection':  # other images of the test split's kind; 'report' is the test split itself
      split, num = 'validation', config.get('num_validation') or config.num_test
    return synthetic.SyntheticSource(num, split=split,
                                     seed=config.seed, image_size=config.image_size,
                                     num_classes=config.num_classes, scale=tuple(config.scale),
                                     occlusion=config.occlusion)
  if config.name == 'voc':
    from saliency_jax.data import voc
    root = pathlib.Path(config.data_dir)
    skip_bad = config.get('skip_bad', False)
    whole = Concat([voc.VOCSource(root / folder, classes=tuple(config.classes), skip_bad=skip_bad)
                    for folder in config.folders])
    ids = [f'{folder}/{i}' for folder, source in zip(config.folders, whole.sources) for i in source.ids]
    indices = split_indices(len(whole), split, test_fraction=config.test_fraction, seed=config.seed)
    return Subset(whole, _in_part(config, part, ids, indices, whole))
  if config.name == 'ilsvrc':
    from saliency_jax.data import imagenet, voc
    root = pathlib.Path(config.data_dir) / config.folder
    wnids = [wnid for wnid, _ in imagenet.read_synsets(root / 'synset_words.txt')]
    source = voc.VOCSource(root, wnids, layout='ilsvrc', skip_bad=config.skip_bad,
                           squashed=config.get('squashed', True))
    if config.get('label_map') == 'cifar10':
      source = Relabelled(source, {wnids.index(w): c for w, c in imagenet.imagenet_to_cifar10().items()})
    if split == 'test' and part == 'all':
      return source
    if split == 'test':
      ids = [source.source.ids[i] for i in source.indices] if isinstance(source, Relabelled) else source.ids
      return Subset(source, _in_part(config, part, ids, range(len(source)), source))
    return Subset(source, [])  # evaluation only: no training split
  if config.name == 'tfds':
    from saliency_jax.data import tfds
    if part != 'all':
      raise ValueError(f"config.data.part {part!r}: tfds sources have no selection / report part (use 'all')")
    return tfds.TfdsSource(config.dataset,
                           split=config.train_split if split == 'train' else config.test_split,
                           data_dir=config.get('data_dir'), boxes_dir=config.get('boxes_dir'))
  raise ValueError(f"unknown data source {config.name!r}: 'synthetic', 'voc' or 'tfds'")
