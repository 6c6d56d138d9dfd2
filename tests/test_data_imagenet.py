import importlib.resources

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from saliency_jax import weights
from saliency_jax.data import imagenet


def _xml(size='<width>500</width><height>375</height>', objects=(), extra=''):
  body = ''.join(
      f'<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>'
      f'<ymax>{y1}</ymax></bndbox></object>' for name, (x0, y0, x1, y1) in objects)
  size = f'<size>{size}<depth>3</depth></size>' if size is not None else ''
  return f'<annotation><filename>a.JPEG</filename>{size}{body}{extra}</annotation>'


def _write(tmp_path, text, name='a.xml'):
  path = tmp_path / name
  path.write_text(text)
  return path


# ----------------------------------------------------------------------------- ImageNet -> CIFAR-10


def test_cifar10_map_known_entries():
  mapping = imagenet.imagenet_to_cifar10()
  assert mapping['n02085620'] == 5  # Chihuahua -> dog
  assert mapping['n04147183'] == 8  # schooner -> ship
  assert mapping['n02123045'] == 3  # tabby -> cat
  assert mapping['n01530575'] == 2  # brambling -> bird
  assert mapping['n04552348'] == 0  # warplane -> airplane
  assert mapping['n04467665'] == 9  # trailer truck -> truck
  assert mapping['n01641577'] == 6  # bullfrog -> frog
  # Excluded or no CIFAR-10 class: pickup, submarine, zebra, lion, timber wolf, minivan (ambiguous).
  for wnid in ('n03930630', 'n04347754', 'n02391049', 'n02129165', 'n02114367', 'n03770679'):
    assert wnid not in mapping


def test_cifar10_map_rows_are_unique_and_consistent():
  text = importlib.resources.files('saliency_jax.data').joinpath('imagenet_cifar10.tsv').read_text()
  lines = [line for line in text.splitlines() if line and not line.startswith('#')]
  header, rows = lines[0].split('\t'), [line.split('\t') for line in lines[1:]]
  assert header == ['imagenet_index', 'wnid', 'imagenet_name', 'cifar10_index', 'cifar10_name', 'anchor_wnid']
  wnids = [r[1] for r in rows]
  assert len(wnids) == len(set(wnids)) == len(imagenet.imagenet_to_cifar10()) > 200
  assert len({r[0] for r in rows}) == len(rows)  # no ImageNet index twice either
  for index, wnid, _, c, c_name, _ in rows:
    assert 0 <= int(index) < 1000 and wnid.startswith('n') and len(wnid) == 9
    assert 0 <= int(c) < 10 and weights.CIFAR10_CLASSES[int(c)] == c_name
  # deer has no ImageNet-1k class; every other CIFAR-10 class has at least one.
  assert {int(r[3]) for r in rows} == set(range(10)) - {4}


def test_cifar10_map_indices_agree_with_synset_words():
  synsets = imagenet.read_synsets(shared_data('imagenet-val-sample', 'synset_words.txt'))
  text = importlib.resources.files('saliency_jax.data').joinpath('imagenet_cifar10.tsv').read_text()
  lines = [line for line in text.splitlines() if line and not line.startswith('#')]
  rows = [line.split('\t') for line in lines[1:]]
  for index, wnid, name, *_ in rows:
    assert synsets[int(index)][0] == wnid
    assert synsets[int(index)][1].split(',')[0] == name


# ----------------------------------------------------------------------------- synsets


def test_read_synsets(tmp_path):
  path = _write(tmp_path, 'n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n\n', 's.txt')
  assert imagenet.read_synsets(path) == [('n01440764', 'tench, Tinca tinca'),
                                         ('n01443537', 'goldfish, Carassius auratus')]
  bad = _write(tmp_path, 'n01440764 tench\ngoldfish\n', 'bad.txt')
  with pytest.raises(ValueError, match=r'bad\.txt, line 2'):
    imagenet.read_synsets(bad)


def test_read_real_synsets():
  synsets = imagenet.read_synsets(shared_data('imagenet-val-sample', 'synset_words.txt'))
  assert len(synsets) == len({w for w, _ in synsets}) == 1000
  assert synsets[0] == ('n01440764', 'tench, Tinca tinca')
  assert synsets[151][0] == 'n02085620' and synsets[151][1].startswith('Chihuahua')


# ----------------------------------------------------------------------------- annotations


def test_read_annotation_ilsvrc_is_zero_based_inclusive(tmp_path):
  # 0-based inclusive: columns 10..109 and rows 20..69 -> [10, 110) x [20, 70); a full-width box
  # 0..499 -> [0, 500).
  path = _write(tmp_path, _xml(objects=[('n02085620', (10, 20, 109, 69)), ('n02085620', (0, 0, 499, 374))]))
  ann = imagenet.read_annotation(path)
  assert ann['size'] == (500, 375) and ann['names'] == ['n02085620'] * 2
  assert ann['boxes'].dtype == np.float32 and ann['boxes'].shape == (2, 4)
  np.testing.assert_array_equal(ann['boxes'], [[10, 20, 110, 70], [0, 0, 500, 375]])


def test_read_annotation_voc_is_one_based_inclusive(tmp_path):
  # 1-based inclusive: columns 1..100 are the first 100 pixels -> [0, 100); xmax = width is the last.
  path = _write(tmp_path, _xml(objects=[('dog', (1, 1, 100, 50)), ('cat', (11, 21, 500, 375))]))
  ann = imagenet.read_annotation(path, one_based=True)
  assert ann['names'] == ['dog', 'cat']
  np.testing.assert_array_equal(ann['boxes'], [[0, 0, 100, 50], [10, 20, 500, 375]])


def test_read_annotation_rescales_to_the_image(tmp_path):
  path = _write(tmp_path, _xml(objects=[('n02085620', (10, 20, 109, 69)), ('n02085620', (0, 0, 499, 374))]))
  ann = imagenet.read_annotation(path, image_size=(250, 125))
  assert ann['size'] == (500, 375)  # as stored, not the image size
  np.testing.assert_allclose(ann['boxes'], [[5, 20 / 3, 55, 70 / 3], [0, 0, 250, 125]], rtol=1e-6)
  # The sample's squashed 227 x 227 images: a full box stays the full image.
  full = imagenet.read_annotation(path, image_size=(227, 227))['boxes'][1]
  np.testing.assert_allclose(full, [0, 0, 227, 227], rtol=1e-6)


def test_read_annotation_without_objects(tmp_path):
  ann = imagenet.read_annotation(_write(tmp_path, _xml()))
  assert ann['names'] == [] and ann['boxes'].shape == (0, 4) and ann['boxes'].dtype == np.float32


def test_read_annotation_wrong_base_is_an_error(tmp_path):
  zero = _write(tmp_path, _xml(objects=[('n01', (0, 5, 99, 50))]), 'zero.xml')
  with pytest.raises(ValueError, match=r'zero\.xml.*outside.*one_based'):
    imagenet.read_annotation(zero, one_based=True)
  one = _write(tmp_path, _xml(objects=[('dog', (400, 5, 500, 50))]), 'one.xml')
  with pytest.raises(ValueError, match=r'one\.xml.*outside'):
    imagenet.read_annotation(one)
  empty = _write(tmp_path, _xml(objects=[('dog', (40, 50, 30, 60))]), 'empty.xml')
  with pytest.raises(ValueError, match=r'empty\.xml.*empty'):
    imagenet.read_annotation(empty)


@pytest.mark.parametrize('text,message', [
    ('<annotation><size><width>5</width>', 'not well-formed XML'),
    (_xml(size=None), 'no <size>'),
    (_xml(size='<width>500</width>'), r'<size> has no <height>'),
    (_xml(size='<width>500</width><height>zero</height>'), 'not a number'),
    (_xml(size='<width>0</width><height>375</height>'), 'must be positive'),
    (_xml(extra='<object><name>n01</name></object>'), r'<object> 0 has no <bndbox>'),
    (_xml(extra='<object><bndbox><xmin>1</xmin></bndbox></object>'), r'<object> 0 has no <name>'),
    (_xml(objects=[('n01', (1, 2, 3, 4))],
          extra='<object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><ymax>4</ymax></bndbox></object>'),
     r'<object> 1 <bndbox> has no <xmax>'),
])
def test_malformed_annotation_names_the_file_and_the_problem(tmp_path, text, message):
  path = _write(tmp_path, text, 'broken.xml')
  with pytest.raises(ValueError, match=message) as info:
    imagenet.read_annotation(path)
  assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- folders and images


def _sample_folder(tmp_path, ids, annotated):
  (tmp_path / 'images').mkdir()
  (tmp_path / 'annotations').mkdir()
  for i in ids:
    Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(tmp_path / 'images' / f'{i}.JPEG')
  for i in annotated:
    _write(tmp_path / 'annotations', _xml(), f'{i}.xml')
  return tmp_path


def test_sample_records_are_sorted_and_paired(tmp_path):
  root = _sample_folder(tmp_path, ['val_3', 'val_1', 'val_2'], ['val_1', 'val_2', 'val_3'])
  records = imagenet.sample_records(root)
  assert [r['id'] for r in records] == ['val_1', 'val_2', 'val_3']
  assert records[0]['image_path'].endswith('images/val_1.JPEG')
  assert records[0]['annotation_path'].endswith('annotations/val_1.xml')


def test_sample_records_missing_annotation_or_folder(tmp_path):
  root = _sample_folder(tmp_path, ['val_1', 'val_2'], ['val_1'])
  with pytest.raises(ValueError, match='1 images .* no annotation.*val_2'):
    imagenet.sample_records(root)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    imagenet.sample_records(tmp_path / 'nowhere')


def test_load_image_is_rgb_uint8(tmp_path):
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  Image.fromarray(grey, 'L').save(tmp_path / 'grey.png')
  image = imagenet.load_image(tmp_path / 'grey.png')
  assert image.shape == (3, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[..., 1], grey)


def test_load_image_errors_name_the_file(tmp_path):
  bad = tmp_path / 'corrupt.JPEG'
  bad.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  with pytest.raises(ValueError, match=r'corrupt\.JPEG'):
    imagenet.load_image(bad)
  with pytest.raises(FileNotFoundError, match=r'missing\.JPEG'):
    imagenet.load_image(tmp_path / 'missing.JPEG')


# ----------------------------------------------------------------------------- the real sample


def test_every_sample_annotation_parses_and_boxes_lie_in_their_image():
  root = shared_data('imagenet-val-sample')
  records = imagenet.sample_records(root)
  synsets = {w for w, _ in imagenet.read_synsets(root / 'synset_words.txt')}
  assert len(records) == 650
  num_boxes = 0
  for record in records:
    with Image.open(record['image_path']) as image:
      size = image.size
    assert size == (227, 227)
    ann = imagenet.read_annotation(record['annotation_path'], image_size=size)
    boxes = ann['boxes']
    assert len(ann['names']) >= 1 and set(ann['names']) <= synsets
    assert len(set(ann['names'])) == 1  # an ILSVRC val image's boxes are all of its class
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= size[0]) and np.all(boxes[:, 3] <= size[1])
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    num_boxes += len(boxes)
  assert num_boxes == 1018


def test_sample_images_load():
  records = imagenet.sample_records(shared_data('imagenet-val-sample'))
  for record in records[::50]:
    image = imagenet.load_image(record['image_path'])
    assert image.shape == (227, 227, 3) and image.dtype == np.uint8 and image.std() > 1


def _parse_all(paths, one_based):
  ok = 0
  for path in paths:
    try:
      imagenet.read_annotation(path, one_based=one_based)
      ok += 1
    except ValueError:
      pass
  return ok


def test_index_bases_of_the_real_files():
  """The evidence for the documented bases: the wrong base puts some real boxes outside their image."""
  ilsvrc = sorted(shared_data('imagenet-val-sample', 'annotations').glob('*.xml'))
  assert _parse_all(ilsvrc, one_based=False) == len(ilsvrc)
  assert _parse_all(ilsvrc, one_based=True) < len(ilsvrc)  # xmin = 0 occurs
  voc = sorted(shared_data('voc-raccoon', 'Annotations').glob('*.xml'))
  assert _parse_all(voc, one_based=True) == len(voc)
  assert _parse_all(voc, one_based=False) < len(voc)  # xmax = width occurs
