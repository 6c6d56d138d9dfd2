"""The VOC folder source on the real raccoon and kangaroo sets, and its errors."""

import numpy as np
import pytest
from conftest import shared_data

from saliency_jax.data import voc


@pytest.mark.parametrize('name,count,cls',
                         [('voc-raccoon', 150, 'raccoon'), ('voc-kangaroo', 123, 'kangaroo')])
def test_real_sets_read_with_boxes_inside_the_images(name, count, cls):
  source = voc.VOCSource(shared_data(name))
  assert len(source) == count and source.classes == (cls,)
  for i in range(0, count, 10):
    item = source[i]
    h, w = item['image'].shape[:2]
    assert item['image'].dtype == np.uint8 and item['image'].shape[2] == 3
    boxes = item['boxes']
    assert boxes.shape[1] == 4 and len(boxes) == len(item['box_labels']) >= 1
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h)
    assert np.all(boxes[:, 2:] > boxes[:, :2]) and item['label'] == 0


def _folder(tmp_path, xml_size=(40, 30), box=(5, 6, 20, 25), image_size=(40, 30)):
  from PIL import Image
  (tmp_path / 'JPEGImages').mkdir()
  (tmp_path / 'Annotations').mkdir()
  Image.new('RGB', image_size, (10, 20, 30)).save(tmp_path / 'JPEGImages' / 'a.jpg')
  x0, y0, x1, y1 = box
  (tmp_path / 'Annotations' / 'a.xml').write_text(
      f'<annotation><size><width>{xml_size[0]}</width><height>{xml_size[1]}</height></size>'
      f'<object><name>cat</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>'
      f'<ymax>{y1}</ymax></bndbox></object></annotation>')
  return tmp_path


def test_one_based_boxes_become_exclusive_pixels_and_rescale(tmp_path):
  item = voc.VOCSource(_folder(tmp_path))[0]
  np.testing.assert_array_equal(item['boxes'], [[4, 5, 20, 25]])  # VOC 1-based inclusive -> 0-based exclusive
  (tmp_path / 'JPEGImages' / 'a.jpg').unlink()
  from PIL import Image
  Image.new('RGB', (80, 60)).save(tmp_path / 'JPEGImages' / 'a.jpg')  # a copy at twice the size
  np.testing.assert_array_equal(voc.VOCSource(tmp_path)[0]['boxes'], [[8, 10, 40, 50]])


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='JPEGImages'):
    voc.VOCSource(tmp_path)
  folder = _folder(tmp_path)
  (folder / 'Annotations' / 'a.xml').write_text('<annotation><size>')
  with pytest.raises(ValueError, match='a.xml is not well-formed'):
    voc.VOCSource(folder)
  (tmp_path / 'b').mkdir()
  _folder(tmp_path / 'b')
  with pytest.raises(ValueError, match="classes \\['cat'\\] not in"):
    voc.VOCSource(tmp_path / 'b', classes=('dog',))[0]


def test_labels_from_the_annotations_alone_and_the_cheap_relabelling():
  from saliency_jax.data import Relabelled, imagenet
  root = shared_data('imagenet-val-sample')
  wnids = [w for w, _ in imagenet.read_synsets(root / 'synset_words.txt')]
  source = voc.VOCSource(root, wnids, layout='ilsvrc')
  for i in range(0, len(source), 65):
    assert source.label(i) == source[i]['label']
  mapping = {wnids.index(w): c for w, c in imagenet.imagenet_to_cifar10().items()}
  cheap = Relabelled(source, mapping)
  decoding = Relabelled(_NoLabel(source), mapping)  # the same filter through the decoded examples
  assert cheap.indices == decoding.indices and len(cheap) == 150  # the CIFAR-mapped images


class _NoLabel:
  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]
