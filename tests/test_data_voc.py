"""The VOC folder source on the real raccoon and kangaroo sets, and its errors."""

import numpy as np
import pytest
from conftest import shared_data

from saliency_jax.data import voc
from saliency_jax.data.records import BadRecord


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
  np.testing.assert_array_equal(voc.VOCSource(tmp_path, squashed=True)[0]['boxes'], [[8, 10, 40, 50]])
  with pytest.raises(BadRecord, match=r'a\.xml: <size> 40 x 30 disagrees with the image read, 80 x 60') as e:
    voc.VOCSource(tmp_path)[0]  # not documented as resized: the annotation may be another image's
  assert (e.value.record, e.value.reason) == ('a', 'size_mismatch')


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
  source = voc.VOCSource(root, wnids, layout='ilsvrc', squashed=True)
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


def _xml(objects: str, size=(40, 30)) -> str:
  return f'<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size>{objects}</annotation>'


def _object(name='cat', box=(5, 6, 20, 25)) -> str:
  x0, y0, x1, y1 = box
  return (f'<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>'
          f'<ymax>{y1}</ymax></bndbox></object>')


def test_every_kind_of_bad_annotation_is_refused_or_skipped_and_listed(tmp_path):
  from PIL import Image
  folder = _folder(tmp_path)  # a.jpg / a.xml: a good record
  annotations = {'b': _xml(_object()), 'empty': '', 'no_object': _xml(''), 'malformed': '<annotation><size>',
                 'outside': _xml(_object(box=(5, 6, 41, 25))), 'dog': _xml(_object('dog')),
                 'orphan': _xml(_object())}
  for name, text in annotations.items():
    (folder / 'Annotations' / f'{name}.xml').write_text(text)
  for name in ('b', 'empty', 'no_object', 'malformed', 'outside', 'dog', 'unannotated'):
    Image.new('RGB', (40, 30)).save(folder / 'JPEGImages' / f'{name}.jpg')
  expected = [('orphan', 'no_image'), ('empty', 'malformed_xml'), ('malformed', 'malformed_xml'),
              ('no_object', 'no_object'), ('outside', 'box_outside'), ('unannotated', 'no_annotation'),
              ('dog', 'unknown_class')]
  with pytest.raises(BadRecord, match=r'orphan\.xml has no image .*and 6 more bad records .*skip_bad=True'):
    voc.VOCSource(folder, classes=('cat',))
  source = voc.VOCSource(folder, classes=('cat',), skip_bad=True)
  assert source.ids == ['a', 'b'] and [source.label(i) for i in range(2)] == [0, 0]
  assert [(b['record'], b['reason']) for b in source.bad] == expected
  messages = {b['record']: b['message'] for b in source.bad}
  assert 'no_object.xml has no <object>' in messages['no_object']
  assert 'empty.xml is not well-formed' in messages['empty']
  assert "classes ['dog'] not in ('cat',)" in messages['dog']
  # the default classes are the names found in the usable records
  assert voc.VOCSource(folder, skip_bad=True).classes == ('cat', 'dog')


def test_make_source_voc_applies_skip_bad_and_keeps_the_list(tmp_path):
  import ml_collections
  from PIL import Image

  from saliency_jax import data
  (tmp_path / 'v').mkdir()
  folder = _folder(tmp_path / 'v')
  (folder / 'Annotations' / 'b.xml').write_text(_xml(''))
  Image.new('RGB', (40, 30)).save(folder / 'JPEGImages' / 'b.jpg')
  config = ml_collections.ConfigDict({'name': 'voc', 'data_dir': str(tmp_path), 'folders': ('v',),
                                      'classes': ('cat',), 'test_fraction': 0., 'seed': 0, 'skip_bad': False})
  with pytest.raises(BadRecord, match='b.xml has no <object>'):
    data.make_source(config, 'train')
  config.skip_bad = True
  train = data.make_source(config, 'train')
  assert len(train) == 1 and [(b['record'], b['reason']) for b in train.bad] == [('b', 'no_object')]


def test_voc_config_with_skip_bad_finishes_and_names_the_bad_records_also_from_the_cache(tmp_path):
  """The VOC config on 5 + 5 real records plus an empty, an object-less and a malformed annotation."""
  import json

  from conftest import load_config

  from saliency_jax.jobs import pipeline, settings
  from saliency_jax.protocol import setup
  for name, bad in (('voc-raccoon', {'empty': '', 'malformed': '<annotation><size><width>5'}),
                    ('voc-kangaroo', {'no_object': _xml('', size=(450, 319))})):
    real = shared_data(name)
    for sub in ('JPEGImages', 'Annotations'):
      (tmp_path / name / sub).mkdir(parents=True)
    stems = sorted(p.stem for p in (real / 'JPEGImages').iterdir())[:5]
    for stem in stems:
      (tmp_path / name / 'JPEGImages' / f'{stem}.jpg').symlink_to(real / 'JPEGImages' / f'{stem}.jpg')
      text = (real / 'Annotations' / f'{stem}.xml').read_text()
      (tmp_path / name / 'Annotations' / f'{stem}.xml').write_text(text)
    for stem, text in bad.items():
      (tmp_path / name / 'JPEGImages' / f'{stem}.jpg').symlink_to(real / 'JPEGImages' / f'{stems[0]}.jpg')
      (tmp_path / name / 'Annotations' / f'{stem}.xml').write_text(text)
  config = load_config('voc_raccoon_kangaroo')
  config.data.update({'data_dir': str(tmp_path), 'skip_bad': True, 'image_size': 32, 'test_fraction': 0.3})
  config.model.stages = ((4,), (8,))
  config.train.update({'steps': 2, 'batch_size': 4, 'warmup_steps': 1, 'checkpoint_every': 2})
  config.update({'crop_size': 28, 'localise_size': 40, 'num_deconvnet': 2, 'num_figure': 2, 'workers': 0})
  config.localise, config.figure_method = {'box': {'method': 'full'}}, 'box'  # the cheapest method
  config.class_models.steps = 0
  expected = [('empty', 'malformed_xml'), ('malformed', 'malformed_xml'), ('no_object', 'no_object')]
  results = pipeline.run(config, tmp_path / 'run', log=lambda *_: None)
  saved = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
  assert [(b['record'], b['reason']) for b in saved['bad_records']] == expected
  assert 'empty.xml is not well-formed' in saved['bad_records'][0]['message']
  assert results['num_train'] + results['num_test'] == 10 and saved['num_test'] == 3
  report = (tmp_path / 'run' / 'report.md').read_text()
  assert 'Skipped 3 bad records' in report and all(f'`{r}`: {why}' in report for r, why in expected)
  cached = setup.load_splits(settings.data(config), tmp_path / 'run' / 'data', train_split=True,
                             log=lambda *_: None)  # what a rerun reads
  assert setup.skipped_records(cached) == saved['bad_records']


def test_difficult_flags_are_read_and_carried_through_load_and_relabelling(tmp_path):
  from saliency_jax.data import Relabelled, imagenet, transforms
  folder = _folder(tmp_path)
  hard = _object(box=(1, 1, 10, 10)).replace('</name>', '</name><difficult>1</difficult>')
  easy = _object('dog').replace('</name>', '</name><difficult>0</difficult>')
  (folder / 'Annotations' / 'a.xml').write_text(_xml(hard + easy + _object()))  # the last one: no tag
  flags = imagenet.read_annotation(folder / 'Annotations' / 'a.xml', one_based=True)['difficult']
  assert flags.dtype == bool and flags.tolist() == [True, False, False]
  source = voc.VOCSource(folder, classes=('cat', 'dog'))
  assert source[0]['difficult'].tolist() == [True, False, False]
  loaded = transforms.load(source, 16)
  assert [d.tolist() for d in loaded['difficult']] == [[True, False, False]]
  cats = Relabelled(source, {0: 0})[0]  # the dog's box and its flag leave together
  assert cats['box_labels'].tolist() == [0, 0] and cats['difficult'].tolist() == [True, False]
  # a source without the flag: none is difficult
  plain = [{'image': np.zeros((8, 8, 3), np.uint8), 'label': 0, 'boxes': np.array([[0, 0, 4, 4]]),
            'box_labels': np.array([0]), 'id': 'x'}]
  assert [d.tolist() for d in transforms.load(plain)['difficult']] == [[False]]
  (folder / 'Annotations' / 'a.xml').write_text(_xml(hard.replace('>1</difficult>', '>yes</difficult>')))
  with pytest.raises(BadRecord, match=r"<object> 0 <difficult> must be 0 or 1, got 'yes'"):
    voc.VOCSource(folder, classes=('cat', 'dog'))
