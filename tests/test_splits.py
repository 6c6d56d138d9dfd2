"""Selection / report parts: a pure function of the record ids, applied where the test records are chosen."""

import hashlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from saliency_jax.data import duplicates, make_source, splits

IDS = [f'ILSVRC2012_val_{i:08d}' for i in range(1, 2001)]


def test_part_of_is_a_pure_function_of_each_id():
  selection = dict(zip(IDS, splits.part_of(IDS, 'selection', seed=0)))
  shuffled = list(np.random.default_rng(1).permutation(IDS))
  assert dict(zip(shuffled, splits.part_of(shuffled, 'selection', seed=0))) == selection
  other_folder = IDS[500:700] + ['ILSVRC2012_val_00049999']  # another folder: some shared ids, some new
  assert [selection[i] for i in IDS[500:700]] == list(splits.part_of(other_folder, 'selection', seed=0)[:200])
  report = splits.part_of(IDS, 'report', seed=0)
  assert np.array_equal(report, ~np.array([selection[i] for i in IDS]))
  assert splits.part_of(IDS, 'all', seed=0).all()


def test_part_of_is_seeded_and_about_the_fraction():
  a, b = splits.part_of(IDS, 'selection', seed=0), splits.part_of(IDS, 'selection', seed=1)
  # 2000 fair coins: a share outside 0.5 +- 0.05 is 4.5 standard deviations away
  assert 0.45 < a.mean() < 0.55 and 0.45 < b.mean() < 0.55
  assert 0.4 < np.mean(a == b) < 0.6  # another seed: an independent split
  assert 0.2 < splits.part_of(IDS, 'selection', seed=0, fraction=0.25).mean() < 0.3


def test_part_of_is_sha256_of_seed_and_id():
  # the same answer on every machine: the first 8 bytes of sha256('seed:id') against the fraction
  digest = hashlib.sha256(b'0:ILSVRC2012_val_00000001').digest()
  assert splits.position('ILSVRC2012_val_00000001', seed=0) == int.from_bytes(digest[:8], 'big') / 2**64
  assert splits.part_of(IDS[:10], 'selection', seed=0).astype(int).tolist() == [1, 0, 1, 0, 0, 0, 1, 1, 1, 0]


def test_bad_part_or_fraction_is_named():
  with pytest.raises(ValueError, match="part must be one of"):
    splits.part_of(IDS, 'validation', seed=0)
  with pytest.raises(ValueError, match='fraction'):
    splits.part_of(IDS, 'selection', seed=0, fraction=1.0)


def _ilsvrc_folder(root, ids, same=()):
  """A tiny imagenet-val-sample-like folder: one 8 x 8 image per id (each its own grey level, but the ids
  `same` one photo), class n00000001 or n00000002."""
  (root / 'images').mkdir(parents=True)
  (root / 'annotations').mkdir()
  (root / 'synset_words.txt').write_text('n00000001 one\nn00000002 two\n')
  for i in ids:
    level = 0 if i in same else 1 + int(i[-5:]) % 250
    Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(root / 'images' / f'{i}.JPEG')
    wnid = f'n0000000{1 + int(i[-1]) % 2}'
    (root / 'annotations' / f'{i}.xml').write_text(
        f'<annotation><size><width>8</width><height>8</height></size><object><name>{wnid}</name>'
        '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>')
  return root


def _ids(source):
  return [source[i]['id'] for i in range(len(source))]


def test_ilsvrc_parts_follow_the_ids_not_the_folder(tmp_path):
  _ilsvrc_folder(tmp_path / 'a' / 'sample', IDS[:40])
  _ilsvrc_folder(tmp_path / 'b' / 'sample', IDS[20:60])  # another folder sharing 20 images
  def config(root, part):
    return ml_collections.ConfigDict({'name': 'ilsvrc', 'data_dir': str(root), 'folder': 'sample',
                                      'skip_bad': False, 'part': part})
  parts = {(root, part): _ids(make_source(config(tmp_path / root, part), 'test'))
           for root in 'ab' for part in ('all', 'selection', 'report')}
  for root in 'ab':
    everything = parts[root, 'all']
    assert sorted(parts[root, 'selection'] + parts[root, 'report']) == everything
    assert not set(parts[root, 'selection']) & set(parts[root, 'report'])
    chosen = splits.part_of(everything, 'selection', seed=splits.SEED)
    assert parts[root, 'selection'] == [i for i, s in zip(everything, chosen) if s]
  shared = set(IDS[20:40])
  for part in ('selection', 'report'):
    assert set(parts['a', part]) & shared == set(parts['b', part]) & shared
  assert len(make_source(config(tmp_path / 'a', 'selection'), 'train')) == 0  # evaluation only


def test_ilsvrc_part_seed_and_fraction_come_from_the_config(tmp_path):
  _ilsvrc_folder(tmp_path / 'sample', IDS[:40])
  config = ml_collections.ConfigDict({'name': 'ilsvrc', 'data_dir': str(tmp_path), 'folder': 'sample',
                                      'skip_bad': False, 'part': 'selection', 'part_seed': 3,
                                      'selection_fraction': 0.25})
  expected = [i for i, s in zip(IDS[:40], splits.part_of(IDS[:40], 'selection', seed=3, fraction=0.25)) if s]
  assert _ids(make_source(config, 'test')) == expected


def test_synthetic_selection_is_the_validation_split_and_report_the_test_split():
  config = ml_collections.ConfigDict({'name': 'synthetic', 'seed': 0, 'image_size': 32, 'num_train': 4,
                                      'num_test': 3, 'num_classes': 3, 'scale': (0.2, 0.6), 'occlusion': 0.3})
  test = make_source(config, 'test')
  config.part = 'report'
  report = make_source(config, 'test')
  config.part = 'selection'
  selection = make_source(config, 'test')
  assert _ids(report) == _ids(test) == ['test-0-0', 'test-0-1', 'test-0-2']
  assert np.array_equal(report[1]['image'], test[1]['image'])
  assert _ids(selection) == ['validation-0-0', 'validation-0-1', 'validation-0-2']
  for i in range(3):  # new images, not the test images again
    assert not np.array_equal(selection[i]['image'], test[i]['image'])
  assert len(make_source(config, 'train')) == 4 and _ids(make_source(config, 'train'))[0] == 'train-0-0'
  config.num_validation = 5
  assert len(make_source(config, 'test')) == 5



def _voc_folder(root, name, stems):
  (root / 'JPEGImages').mkdir(parents=True)
  (root / 'Annotations').mkdir()
  for stem in stems:
    level = (2 * int(stem) + ord(name[0])) % 250  # each image its own photo
    Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(root / 'JPEGImages' / f'{stem}.jpg')
    (root / 'Annotations' / f'{stem}.xml').write_text(
        f'<annotation><size><width>8</width><height>8</height></size><object><name>{name}</name>'
        '<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>6</xmax><ymax>6</ymax></bndbox></object></annotation>')


def test_voc_parts_split_the_test_split_by_folder_and_stem(tmp_path):
  stems = [f'{i:05d}' for i in range(1, 41)]  # both folders use the same file names
  _voc_folder(tmp_path / 'voc-a', 'a', stems)
  _voc_folder(tmp_path / 'voc-b', 'b', stems)
  config = ml_collections.ConfigDict({'name': 'voc', 'data_dir': str(tmp_path), 'folders': ('voc-a', 'voc-b'),
                                      'classes': ('a', 'b'), 'test_fraction': 0.5, 'seed': 0})
  test = make_source(config, 'test')
  ids = [f"{('voc-a', 'voc-b')[test[i]['label']]}/{test[i]['id']}" for i in range(len(test))]
  parts = {}
  for part in ('selection', 'report'):
    config.part = part
    source = make_source(config, 'test')
    parts[part] = [f"{('voc-a', 'voc-b')[source[i]['label']]}/{source[i]['id']}" for i in range(len(source))]
    assert len(make_source(config, 'train')) == 40  # the training split is untouched
  assert sorted(parts['selection'] + parts['report']) == sorted(ids)
  assert parts['selection'] == [i for i, s in zip(ids, splits.part_of(ids, 'selection', seed=0)) if s]


def test_one_photo_under_two_ids_falls_in_one_part(tmp_path):
  """Before: a duplicated image under a second id could land in both the selection and the report part."""
  chosen = splits.part_of(IDS[:40], 'selection', seed=splits.SEED)
  a, b = IDS[int(np.argmax(chosen))], IDS[int(np.argmin(chosen))]  # by their ids: selection and report
  _ilsvrc_folder(tmp_path / 'sample', IDS[:40], same={a, b})
  assert splits.identical_files([tmp_path / 'sample' / 'images' / f'{i}.JPEG' for i in IDS[:40]]) == [
      sorted([IDS.index(a), IDS.index(b)])]
  def ids(part):
    config = ml_collections.ConfigDict({'name': 'ilsvrc', 'data_dir': str(tmp_path), 'folder': 'sample',
                                        'skip_bad': False, 'part': part})
    return set(_ids(make_source(config, 'test')))
  selection, report = ids('selection'), ids('report')
  assert not selection & report and selection | report == set(IDS[:40])
  assert {a, b} <= (selection if min(a, b) == a else report)  # both where the smaller id falls
  others = [i for i in IDS[:40] if i not in (a, b)]
  assert [i in selection for i in others] == [bool(c) for i, c in zip(IDS[:40], chosen) if i in others]


def test_test_images_that_are_training_images_are_named():
  """The raccoon / kangaroo folders hold one photo twice across the training and test splits: the main
  job lists it in metrics.json and the report."""
  from conftest import load_config, shared_data

  from saliency_jax.jobs import pipeline
  shared_data('voc-kangaroo', 'JPEGImages')
  config = load_config('voc_raccoon_kangaroo')
  config.data.data_dir = str(shared_data())
  pairs = duplicates(make_source(config.data, 'train'), make_source(config.data, 'test'))
  assert [(p.split('/')[-1], q.split('/')[-1]) for p, q in pairs] == [('00033.jpg', '00007.jpg')]
  lines = pipeline.duplicate_lines(pairs)
  assert lines[0].startswith('Warning: 1 test images are training images too') and '00007.jpg' in lines[2]
