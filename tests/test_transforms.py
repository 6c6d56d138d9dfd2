"""Shared transforms, loading with bad records, the deterministic batcher, and make_source."""

import ml_collections
import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from saliency_jax import data as sources
from saliency_jax.data import imagenet, synthetic, transforms, voc


def test_resize_scales_boxes_and_mask_with_the_image():
  image = np.zeros((20, 40, 3), np.uint8)
  mask = np.zeros((20, 40), bool)
  mask[5:10, 8:24] = True
  ex = {'image': image, 'mask': mask, 'boxes': np.array([[8, 5, 24, 10]], np.float32), 'label': 0}
  out = transforms.resize(ex, (40, 20))  # (H, W): rows x2, columns /2
  assert out['image'].shape == (40, 20, 3)
  np.testing.assert_array_equal(out['boxes'], [[4, 10, 12, 20]])
  rows, cols = np.nonzero(out['mask'])
  assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (4, 10, 12, 20)
  assert ex['image'].shape == (20, 40, 3)  # the input is left alone


def test_normalise_crop_and_flip_known_answers():
  x = np.full((2, 4, 4, 3), 255, np.uint8)
  np.testing.assert_allclose(transforms.normalise(x, (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))[0, 0, 0], [1, 2, 0.5])
  images = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1)
  np.testing.assert_array_equal(transforms.centre_crop(images, 2), images[:, 2:4, 2:4])
  crops = transforms.random_crop_and_flip(np.random.default_rng(0), images, 6)
  for c, im in zip(crops, images):  # a full-size crop is the image or its mirror
    assert np.array_equal(c, im) or np.array_equal(c, im[:, ::-1])
  a = transforms.random_crop_and_flip(np.random.default_rng(1), images, 3)
  np.testing.assert_array_equal(a, transforms.random_crop_and_flip(np.random.default_rng(1), images, 3))
  with pytest.raises(ValueError, match='crop size 7'):
    transforms.centre_crop(images, 7)


def test_batches_visit_every_example_once_per_epoch_and_are_pure():
  num, bs = 10, 3  # 3 batches an epoch, the 10th example of each epoch's order dropped
  epoch = np.concatenate([transforms.batch_indices(num, bs, s, seed=5) for s in range(3)])
  assert len(set(epoch.tolist())) == 9
  np.testing.assert_array_equal(transforms.batch_indices(num, bs, 4, seed=5),
                                transforms.batch_indices(num, bs, 4, seed=5))
  assert not np.array_equal(np.concatenate([transforms.batch_indices(num, bs, s, 5) for s in range(3, 6)]),
                            epoch)
  arrays = {'x': np.arange(num) * 10, 'y': np.arange(num)}
  got = list(transforms.batches(arrays, bs, seed=5, start_step=2, num_steps=2))
  assert [s for s, _ in got] == [2, 3]
  np.testing.assert_array_equal(got[0][1]['x'], 10 * got[0][1]['y'])
  np.testing.assert_array_equal(got[0][1]['y'], transforms.batch_indices(num, bs, 2, seed=5))
  with pytest.raises(ValueError, match='batch_size'):
    transforms.batch_indices(2, 3, 0, 0)


def _voc_folder(root, n, name, size=(48, 40)):
  (root / 'JPEGImages').mkdir(parents=True)
  (root / 'Annotations').mkdir()
  for i in range(n):
    Image.new('RGB', size, (i * 20, 50, 90)).save(root / 'JPEGImages' / f'{name}{i}.jpg')
    (root / 'Annotations' / f'{name}{i}.xml').write_text(
        f'<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size><object><name>{name}'
        f'</name><bndbox><xmin>{3 + i}</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>'
        '</annotation>')
  return root


def test_voc_make_source_splits_a_folder_pair_and_loads_resized(tmp_path):
  _voc_folder(tmp_path / 'a', 6, 'cat')
  _voc_folder(tmp_path / 'b', 4, 'dog')
  config = ml_collections.ConfigDict({'name': 'voc', 'data_dir': str(tmp_path), 'folders': ('a', 'b'),
                                      'classes': ('cat', 'dog'), 'test_fraction': 0.3, 'seed': 0})
  train, test = sources.make_source(config, 'train'), sources.make_source(config, 'test')
  assert len(train) == 7 and len(test) == 3
  ids = {train[i]['id'] for i in range(7)} | {test[i]['id'] for i in range(3)}
  assert len(ids) == 10
  loaded = transforms.load(test, 24)
  assert loaded['images'].shape == (3, 24, 24, 3) and not loaded['bad']
  for label, boxes, i in zip(loaded['labels'], loaded['boxes'], loaded['ids']):
    k = int(i[3:])
    assert label == ('cat', 'dog').index(i[:3])
    np.testing.assert_allclose(boxes, [[(2 + k) * 24 / 48, 3 * 24 / 40, 20 * 24 / 48, 30 * 24 / 40]],
                               rtol=1e-6)


def test_bad_records_raise_naming_the_file_or_are_skipped_and_counted(tmp_path):
  folder = _voc_folder(tmp_path / 'v', 3, 'cat')
  (folder / 'JPEGImages' / 'cat1.jpg').write_bytes(b'not a jpeg')
  source = voc.VOCSource(folder)
  with pytest.raises(ValueError, match='record 1 .*cat1.jpg is not a readable image'):
    transforms.load(source)
  loaded = transforms.load(source, skip_bad=True)
  assert len(loaded['images']) == 2
  assert [(b['index'], b['record'], b['reason']) for b in loaded['bad']] == [(1, 'cat1', 'unreadable_image')]
  assert loaded['indices'].tolist() == [0, 2]  # record indices of the examples kept
  (folder / 'Annotations' / 'cat2.xml').write_text('<annotation><size>')
  with pytest.raises(ValueError, match='cat2.xml is not well-formed'):
    voc.VOCSource(folder)
  skipping = voc.VOCSource(folder, skip_bad=True)
  assert skipping.ids == ['cat0', 'cat1'] and [(b['record'], b['reason']) for b in skipping.bad] == [
      ('cat2', 'malformed_xml')]


def test_ilsvrc_layout_reads_the_real_sample_with_boxes_rescaled():
  root = shared_data('imagenet-val-sample')
  classes = [wnid for wnid, _ in imagenet.read_synsets(root / 'synset_words.txt')]
  source = voc.VOCSource(root, classes, layout='ilsvrc', squashed=True)
  assert len(source) == 650
  records = imagenet.sample_records(root)
  for i in (0, 123, 649):
    ex = source[i]
    assert ex['image'].shape == (227, 227, 3) and ex['id'] == records[i]['id']
    expected = imagenet.read_annotation(records[i]['annotation_path'], image_size=(227, 227))
    np.testing.assert_allclose(ex['boxes'], expected['boxes'])
    assert [classes[c] for c in ex['box_labels']] == expected['names']


def test_synthetic_make_source_matches_the_source():
  config = ml_collections.ConfigDict({'name': 'synthetic', 'num_train': 5, 'num_test': 3, 'seed': 2,
                                      'image_size': 32, 'num_classes': 4, 'scale': (0.3, 0.5),
                                      'occlusion': 0.0})
  test = sources.make_source(config, 'test')
  assert len(test) == 3
  np.testing.assert_array_equal(test[1]['image'], synthetic.example(1, split='test', seed=2, image_size=32,
                                                                     num_classes=4, scale=(0.3, 0.5),
                                                                     occlusion=0.0)['image'])
  with pytest.raises(ValueError, match="unknown data source 'x'"):
    sources.make_source(ml_collections.ConfigDict({'name': 'x'}), 'train')


def test_normalise_takes_8_bit_pixels_or_unit_floats_and_refuses_the_rest():
  pixels = np.array([[[0, 128, 255]]], np.uint8)
  expected = (pixels / 255.0 - 0.5) / 0.25
  np.testing.assert_allclose(transforms.normalise(pixels, 0.5, 0.25), expected, atol=1e-6)
  np.testing.assert_allclose(transforms.normalise(pixels.astype(np.int64), 0.5, 0.25), expected, atol=1e-6)
  np.testing.assert_allclose(transforms.normalise(pixels / 255.0, 0.5, 0.25), expected, atol=1e-6)
  with pytest.raises(ValueError, match=r'integer images must hold 8-bit pixels 0\.\.255, got 0\.\.300'):
    transforms.normalise(np.array([[[0, 300, 5]]]), 0.5, 0.25)
  with pytest.raises(ValueError, match=r'float images must lie in \[0, 1\], got 0\.\.255'):
    transforms.normalise(pixels.astype(np.float32), 0.5, 0.25)
  with pytest.raises(ValueError, match='1 NaN or infinite'):
    transforms.normalise(np.array([[[0.1, np.nan, 0.2]]]), 0.5, 0.25)


class _Labels:
  """A source whose second record has no object (label -1)."""

  def __len__(self):
    return 3

  def __getitem__(self, i):
    return {'image': np.zeros((4, 4, 3), np.uint8), 'label': -1 if i == 1 else 0, 'boxes': np.zeros((0, 4)),
            'box_labels': np.zeros(0, np.int32), 'id': f'r{i}'}


def test_a_record_without_label_is_refused_or_skipped_never_trained_on_as_the_last_class():
  with pytest.raises(ValueError, match='record 1 of _Labels: r1 has no object, so no label'):
    transforms.load(_Labels())
  loaded = transforms.load(_Labels(), skip_bad=True)
  assert loaded['labels'].tolist() == [0, 0] and loaded['indices'].tolist() == [0, 2]
  assert loaded['bad'] == [{'index': 1, 'record': 'r1', 'reason': 'no_object',
                            'message': 'r1 has no object, so no label'}]
