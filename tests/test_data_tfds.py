"""tensorflow-datasets sources on tfds's mock data (no TensorFlow, no download)."""

import ml_collections
import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets',
                           reason="needs the tfds extra: pip install 'saliency-jax[tfds]'")

from saliency_jax import data as sources  # noqa: E402
from saliency_jax.data import tfds as tfds_source  # noqa: E402
from saliency_jax.data import transforms  # noqa: E402
from saliency_jax.data.records import BadRecord  # noqa: E402


def _mock(n=4):
  return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


def test_voc_objects_become_pixel_boxes_with_labels():
  with _mock():
    raw = tfds.data_source('voc/2007', split='train')
    source = tfds_source.TfdsSource('voc/2007', 'train')
    assert len(source) == 4 and len(source.classes) == 20
    for i in range(4):
      ex, r = source[i], raw[i]
      h, w = r['image'].shape[:2]
      n = min(len(r['objects']['label']), len(r['objects']['bbox']))
      assert ex['image'].shape == (h, w, 3) and ex['image'].dtype == np.uint8
      assert ex['boxes'].shape == (n, 4) and ex['box_labels'].tolist() == list(r['objects']['label'][:n])
      ymin, xmin, ymax, xmax = r['objects']['bbox'][0]
      np.testing.assert_allclose(ex['boxes'][0], [xmin * w, ymin * h, xmax * w, ymax * h], rtol=1e-6)
      assert ex['label'] == ex['box_labels'][0]


def test_imagenet_joins_the_ilsvrc_box_xmls(tmp_path):
  with _mock(3):
    raw = tfds.data_source('imagenet2012', split='validation')
    source = tfds_source.TfdsSource('imagenet2012', 'validation', boxes_dir=tmp_path)
    for i in range(3):
      r = raw[i]
      stem = str(r['file_name']).rsplit('.', 1)[0]
      h, w = r['image'].shape[:2]
      wnid = source.classes[int(r['label'])]
      box = f'<xmin>0</xmin><ymin>0</ymin><xmax>{w // 2 - 1}</xmax><ymax>{h // 2 - 1}</ymax>'  # 0-based
      xml = (f'<annotation><size><width>{{}}</width><height>{{}}</height></size><object><name>{wnid}</name>'
             f'<bndbox>{box}</bndbox></object></annotation>')
      (tmp_path / f'{stem}.xml').write_text(xml.format(w, h))
      ex = source[i]
      np.testing.assert_allclose(ex['boxes'], [[0, 0, w // 2, h // 2]])
      assert ex['box_labels'].tolist() == [int(r['label'])] == [ex['label']]
      (tmp_path / f'{stem}.xml').write_text(xml.format(2 * w, 2 * h))  # the originals: no rescaling
      with pytest.raises(BadRecord, match=f'{stem}.xml: <size> {2 * w} x {2 * h} disagrees') as e:
        source[i]
      assert e.value.reason == 'size_mismatch'


def test_make_source_and_load_through_tfds():
  config = ml_collections.ConfigDict({'name': 'tfds', 'dataset': 'voc/2007', 'train_split': 'train',
                                      'test_split': 'test'})
  with _mock(5):
    loaded = transforms.load(sources.make_source(config, 'test'), 32)
  assert loaded['images'].shape == (5, 32, 32, 3) and len(loaded['boxes']) == 5


def test_caltech_birds_single_box():
  with _mock(2):
    raw = tfds.data_source('caltech_birds2011', split='test')
    ex, r = tfds_source.TfdsSource('caltech_birds2011', 'test')[0], raw[0]
    h, w = r['image'].shape[:2]
    ymin, xmin, ymax, xmax = r['bbox']
    np.testing.assert_allclose(ex['boxes'], [[xmin * w, ymin * h, xmax * w, ymax * h]], rtol=1e-6)
    assert ex['box_labels'].tolist() == [int(r['label'])] == [ex['label']]
