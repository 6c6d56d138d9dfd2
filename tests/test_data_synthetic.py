"""The embedded synthetic localisation set: deterministic, exact masks and boxes, class colour families."""

import numpy as np
import pytest
import skimage.color

from saliency_jax.data import synthetic


def test_examples_are_pure_functions_of_seed_split_index():
  a, b = synthetic.example(7, seed=3), synthetic.example(7, seed=3)
  for key in ('image', 'mask', 'boxes', 'box_labels'):
    np.testing.assert_array_equal(a[key], b[key])
  assert a['label'] == b['label'] and a['id'] == b['id']
  assert not np.array_equal(a['image'], synthetic.example(7, seed=4)['image'])
  assert not np.array_equal(a['image'], synthetic.example(7, seed=3, split='test')['image'])


@pytest.mark.parametrize('size', [40, 64, 96])
def test_fields_and_box_is_the_masks_bounding_box(size):
  source = synthetic.SyntheticSource(12, split='test', image_size=size)
  assert len(source) == 12 and source.classes == synthetic.CLASSES
  for i in range(len(source)):
    ex = source[i]
    assert ex['image'].shape == (size, size, 3) and ex['image'].dtype == np.uint8
    assert ex['mask'].shape == (size, size) and ex['mask'].dtype == bool and ex['mask'].any()
    rows, cols = np.nonzero(ex['mask'])
    np.testing.assert_array_equal(ex['boxes'], [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]])
    assert ex['boxes'].dtype == np.float32 and ex['box_labels'].tolist() == [ex['label']]
    assert 0 <= ex['label'] < 10


def test_object_hue_lies_in_its_class_band_and_scale_is_respected():
  """Each class has its own 30-degree hue band; without occlusion the object spans <= 60% of the side."""
  size = 64
  for i in range(40):
    ex = synthetic.example(i, seed=1, image_size=size, occlusion=0.0)
    band = synthetic.CLASS_SPECS[ex['label']][2]
    hsv = skimage.color.rgb2hsv(ex['image'])
    hue = hsv[..., 0][ex['mask'] & (hsv[..., 1] > 0.3)] * 360  # saturated object pixels
    centre = np.angle(np.mean(np.exp(1j * np.deg2rad(hue))), deg=True) % 360  # circular mean
    assert min(abs(centre - (band + 15)), 360 - abs(centre - (band + 15))) < 20, (i, centre, band)
    x0, y0, x1, y1 = ex['boxes'][0]
    assert max(x1 - x0, y1 - y0) <= 0.6 * size + 2


def test_occlusion_hides_part_of_the_same_object():
  smaller = 0
  for i in range(20):
    whole = synthetic.example(i, occlusion=0.0)
    hidden = synthetic.example(i, occlusion=1.0)
    assert whole['label'] == hidden['label']
    assert not (hidden['mask'] & ~whole['mask']).any()  # the visible part of the same shape
    assert hidden['mask'].sum() >= 0.4 * whole['mask'].sum()  # an occluder covers at most 40% of the extent
    smaller += hidden['mask'].sum() < whole['mask'].sum()
  assert smaller >= 15


def test_train_and_test_backgrounds_are_disjoint_photos():
  assert not set(synthetic.TRAIN_PHOTOS) & set(synthetic.TEST_PHOTOS)
  for name in synthetic.TRAIN_PHOTOS + synthetic.TEST_PHOTOS:
    assert synthetic.photo(name).ndim == 3


def test_num_classes_limits_labels_and_bad_settings_are_named():
  labels = {synthetic.example(i, num_classes=3)['label'] for i in range(30)}
  assert labels == {0, 1, 2}
  with pytest.raises(ValueError, match='num_classes'):
    synthetic.SyntheticSource(4, num_classes=11)
  with pytest.raises(ValueError, match='split'):
    synthetic.SyntheticSource(4, split='val')
  with pytest.raises(ValueError, match='scale'):
    synthetic.SyntheticSource(4, scale=(0.5, 0.2))
  with pytest.raises(IndexError, match='out of range'):
    synthetic.SyntheticSource(4)[4]
