"""ImageNet (ILSVRC-2012) class lists, annotations and image folders, and the ImageNet -> CIFAR-10 map.

Box convention of the project: (x0, y0, x1, y1) in 0-based pixel units, (x0, y0) inclusive and
(x1, y1) exclusive, i.e. the continuous pixel-edge extent of the box: a box covering exactly
pixel columns 0..9 has x0 = 0, x1 = 10, width x1 - x0 = 10. Such boxes rescale exactly with the
image (multiply x by new_width / width, y by new_height / height).

The XML files store inclusive pixel indices, first and last pixel of the box, in one of two bases:
  - PASCAL VOC: 1-based (the VOC devkit's convention; the first pixel is 1, xmax can equal the
    width). In ../shared/data/voc-raccoon and voc-kangaroo no xmin or ymin is 0 and 19 xmax equal
    the image width. Read them with `one_based=True`.
  - ILSVRC as shipped in ../shared/data/imagenet-val-sample: 0-based. Of its 1018 boxes, 77 have
    xmin = 0 and 76 ymin = 0, none has xmax = width or ymax = height, while 90 have
    xmax = width - 1 and 101 ymax = height - 1: the indices run over [0, width - 1]. This is the
    default (`one_based=False`).
The conversion is x0 = xmin - base, x1 = xmax - base + 1 (and the same for y). A box that then
falls outside the image, or is empty, is an error: it is how a wrong base shows itself.
"""

import functools
import importlib.resources
import os
import pathlib
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from saliency_jax.data.records import BadRecord

CIFAR10_MAP_FILE = 'imagenet_cifar10.tsv'
_WNID = re.compile(r'n\d{8}')
_IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')


# ----------------------------------------------------------------------------- class lists


def read_synsets(path: str | os.PathLike) -> list[tuple[str, str]]:
  """synset_words.txt as [(wnid, name)], the index being the class index (the line number, from 0).

  Each line is `n01440764 tench, Tinca tinca`; the name is the rest of the line (all synonyms).

  Args:
    path: the file.

  Returns:
    [(wnid, name)].

  Raises:
    ValueError: a line that is not "n######## name" (blank lines would shift every later index).
  """
  path = pathlib.Path(path)
  lines = path.read_text(encoding='utf-8').splitlines()
  while lines and not lines[-1].strip():  # a trailing newline or two is not a class
    lines.pop()
  synsets = []
  for i, line in enumerate(lines):
    wnid, _, name = line.strip().partition(' ')
    if not _WNID.fullmatch(wnid) or not name.strip():
      raise ValueError(f'{path}, line {i + 1}: expected "n######## name", got {line!r}')
    synsets.append((wnid, name.strip()))
  return synsets


@functools.cache
def _cifar10_rows() -> tuple[tuple[str, int], ...]:
  text = importlib.resources.files('saliency_jax.data').joinpath(CIFAR10_MAP_FILE).read_text('utf-8')
  lines = [line for line in text.splitlines() if line.strip() and not line.startswith('#')]
  header = lines[0].split('\t')
  for column in ('wnid', 'cifar10_index'):
    if column not in header:
      raise ValueError(f'{CIFAR10_MAP_FILE}: header {header} lacks the column {column!r}')
  w, c = header.index('wnid'), header.index('cifar10_index')
  rows = []
  for line in lines[1:]:
    fields = line.split('\t')
    rows.append((fields[w], int(fields[c])))
  return tuple(rows)


def imagenet_to_cifar10() -> dict[str, int]:
  """{ImageNet wnid: CIFAR-10 class index} for the ImageNet-1k classes that map onto CIFAR-10.

  Read from the packaged `saliency_jax/data/imagenet_cifar10.tsv` (made from WordNet 3.0 hypernyms; its
  header comments give the rule and the exclusions). Unmapped classes are absent. Indices follow
  `weights.CIFAR10_CLASSES` (airplane 0, ..., truck 9).

  Returns:
    The mapping.
  """
  return dict(_cifar10_rows())


# ----------------------------------------------------------------------------- annotations


def _text(node: ET.Element, tag: str, path, what: str) -> str:
  child = node.find(tag)
  if child is None or child.text is None or not child.text.strip():
    raise BadRecord(path, 'malformed_xml', f'{path}: {what} has no <{tag}>')
  return child.text.strip()


def _number(node: ET.Element, tag: str, path, what: str) -> float:
  text = _text(node, tag, path, what)
  try:
    return float(text)
  except ValueError:
    raise BadRecord(path, 'malformed_xml', f'{path}: {what} <{tag}> is not a number: {text!r}') from None


def read_annotation(path: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                    one_based: bool = False) -> dict:
  """An ILSVRC / PASCAL VOC XML annotation.

  A file without <object> is read (names and boxes empty): whether that is an error is the caller's call
  (a training label needs an object).

  Args:
    path: the XML file.
    image_size: (w, h): rescale the boxes to an image of that size (x by w / width, y by h / height),
      e.g. (227, 227) for the sample's squashed images; None keeps the stored size's coordinates.
    one_based: the file's indices start at 1 (PASCAL VOC) rather than 0 (ILSVRC, the default).

  Returns:
    {'size': (width, height) as stored in <size> (for the ImageNet sample: the original image),
    'names': [N] the objects' <name>s (WordNet ids for ILSVRC), in file order, 'boxes': float32 [N, 4]
    (x0, y0, x1, y1), 0-based, (x0, y0) inclusive, (x1, y1) exclusive, 'difficult': bool [N] the
    objects' PASCAL VOC <difficult> flags (False where the tag is absent, as in ILSVRC files)}.

  Raises:
    BadRecord: (a ValueError) naming the file: 'malformed_xml' for malformed XML, a missing tag, a
      non-numeric or non-positive size; 'box_outside' for a box that is empty or outside the image.
  """
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise BadRecord(path, 'malformed_xml', f'{path} is not well-formed XML: {e}') from e
  size = root.find('size')
  if size is None:
    raise BadRecord(path, 'malformed_xml', f'{path}: the annotation has no <size>')
  width, height = (_number(size, tag, path, '<size>') for tag in ('width', 'height'))
  if not (width > 0 and height > 0):
    raise BadRecord(path, 'malformed_xml',
                    f'{path}: <size> must be positive, got width {width}, height {height}')
  base = 1.0 if one_based else 0.0
  names, boxes, difficult = [], [], []
  for i, obj in enumerate(root.findall('object')):
    what = f'<object> {i}'
    names.append(_text(obj, 'name', path, what))
    flag = (obj.findtext('difficult') or '0').strip()
    if flag not in ('0', '1'):
      raise BadRecord(path, 'malformed_xml', f'{path}: {what} <difficult> must be 0 or 1, got {flag!r}')
    difficult.append(flag == '1')
    bndbox = obj.find('bndbox')
    if bndbox is None:
      raise BadRecord(path, 'malformed_xml', f'{path}: {what} has no <bndbox>')
    xmin, ymin, xmax, ymax = (_number(bndbox, tag, path, f'{what} <bndbox>')
                              for tag in ('xmin', 'ymin', 'xmax', 'ymax'))
    box = (xmin - base, ymin - base, xmax - base + 1, ymax - base + 1)
    if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
      raise BadRecord(
          path, 'box_outside',
          f'{path}: {what} box (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g}) read as '
          f'{"1" if one_based else "0"}-based inclusive indices is empty or outside the {width:g} x '
          f'{height:g} image (PASCAL VOC files need one_based=True, ILSVRC files one_based=False)')
    boxes.append(box)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if image_size is not None:
    w, h = image_size
    if not (w > 0 and h > 0):
      raise ValueError(f'image_size must be a positive (width, height), got {image_size}')
    boxes = boxes * np.array([w / width, h / height, w / width, h / height])
  def as_stored(v):
    return int(v) if v == int(v) else v
  return {'size': (as_stored(width), as_stored(height)), 'names': names, 'boxes': boxes.astype(np.float32),
          'difficult': np.asarray(difficult, bool)}


def check_size(annotation: dict, image_size: tuple[int, int], path, record=None) -> None:
  """Raises when an annotation's <size> and the decoded image's differ by a pixel or more.

  Rescaling its boxes would move them onto the wrong place (the annotation of another image, or a crop).
  Only folders documented as squashed copies (the ImageNet sample) rescale instead of checking.

  Args:
    annotation: `read_annotation`'s dict.
    image_size: (width, height) of the decoded image.
    path: the annotation file, for the error.
    record: the record's id, for the error (default: the path).

  Raises:
    BadRecord: 'size_mismatch'.
  """
  (width, height), (w, h) = annotation['size'], image_size
  if abs(width - w) >= 1 or abs(height - h) >= 1:
    raise BadRecord(record if record is not None else path, 'size_mismatch',
                    f'{path}: <size> {width:g} x {height:g} disagrees with the image read, {w} x {h} '
                    '(only squashed copies, such as the ImageNet sample, are rescaled)')


# ----------------------------------------------------------------------------- image folders


def sample_records(root: str | os.PathLike) -> list[dict]:
  """The records of an imagenet-val-sample-like folder, sorted by id.

  `root/images/<id>.JPEG` (or .jpg / .png) with `root/annotations/<id>.xml`.

  Args:
    root: the folder.

  Returns:
    [{'id', 'image_path', 'annotation_path'}].

  Raises:
    FileNotFoundError: a missing folder.
    ValueError: no images, or images without annotations (listed).
  """
  root = pathlib.Path(root)
  images_dir, annotations_dir = root / 'images', root / 'annotations'
  for d in (images_dir, annotations_dir):
    if not d.is_dir():
      raise FileNotFoundError(f'{d} is not a folder (expected {root}/images and {root}/annotations)')
  images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
  if not images:
    raise ValueError(f'{images_dir} holds no images ({", ".join(_IMAGE_SUFFIXES)})')
  records, unannotated = [], []
  for image_id in sorted(images):
    annotation = annotations_dir / f'{image_id}.xml'
    if not annotation.is_file():
      unannotated.append(image_id)
    records.append({'id': image_id, 'image_path': str(images[image_id]), 'annotation_path': str(annotation)})
  if unannotated:
    raise ValueError(f'{len(unannotated)} images in {images_dir} have no annotation in {annotations_dir}: '
                     f'{", ".join(unannotated[:5])}{" ..." if len(unannotated) > 5 else ""}')
  return records


def load_image(path: str | os.PathLike) -> np.ndarray:
  """An image file as uint8 RGB (grey, palette and CMYK files are converted).

  Args:
    path: the file.

  Returns:
    uint8 [H, W, 3].

  Raises:
    FileNotFoundError: a missing file.
    ValueError: naming a file PIL cannot decode.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no image file at {path}')
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'), dtype=np.uint8)
  except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's decode errors
    raise ValueError(f'{path} is not a readable image: {e}') from e


# ----------------------------------------------------------------------------- CIFAR-10 mapped images


_RESAMPLE = {'nearest': Image.Resampling.NEAREST, 'bilinear': Image.Resampling.BILINEAR,
             'bicubic': Image.Resampling.BICUBIC, 'lanczos': Image.Resampling.LANCZOS,
             'box': Image.Resampling.BOX}


def cifar10_mapped(sample_dir: str | os.PathLike, *, image_size: int = 32,
                   resample: str = 'bilinear') -> dict:
  """The sample's images whose first object maps onto CIFAR-10, resized.

  Args:
    sample_dir: the imagenet-val-sample folder.
    image_size: the side they are resized to.
    resample: PIL's resampling filter ('nearest', 'bilinear', ...).

  Returns:
    {'ids' [N], 'wnids' [N], 'images' uint8 [N, s, s, 3], 'labels' int32 [N], 'num_images' (all images in
    the sample), 'mixed_labels' (images whose objects disagree)}.

  Raises:
    ValueError: an unknown resampling filter.
    BadRecord: an annotation without an object.
  """
  if resample not in _RESAMPLE:
    raise ValueError(f'resample must be one of {sorted(_RESAMPLE)}, got {resample!r}')
  mapping = imagenet_to_cifar10()
  records = sample_records(sample_dir)
  ids, wnids, images, labels, mixed = [], [], [], [], 0
  for record in records:
    names = read_annotation(record['annotation_path'])['names']
    if not names:
      raise BadRecord(record['id'], 'no_object',
                      f'{record["annotation_path"]} has no <object>: no label for {record["id"]}')
    mixed += len(set(names)) > 1
    if names[0] not in mapping:
      continue
    image = Image.fromarray(load_image(record['image_path']))
    image = image.resize((image_size, image_size), _RESAMPLE[resample])
    ids.append(record['id'])
    wnids.append(names[0])
    images.append(np.asarray(image))
    labels.append(mapping[names[0]])
  return {'ids': ids, 'wnids': wnids, 'images': np.stack(images), 'labels': np.asarray(labels, np.int32),
          'num_images': len(records), 'mixed_labels': mixed}
