"""Your own photos: a folder of JPEG / PNG (labels optional) through a pretrained model, without training or
annotations: per photo its top-k classes, maps, overlays and boxes; streamed and resumable."""

import csv
import json
import pathlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from saliency_jax import saliency
from saliency_jax.data import folder, transforms
from saliency_jax.errors import UserError
from saliency_jax.jobs import images, settings
from saliency_jax.protocol import setup

FOREIGN = pathlib.Path(__file__).parent / 'foreign_model.py'


def _photos(root: pathlib.Path) -> list[str]:
  """Photos of several sizes and formats in class subfolders, and one file that is no image."""
  rng = np.random.default_rng(0)
  made = []
  for name, size, cls in [('x.jpg', (40, 56), 'a'), ('y.png', (33, 33), 'b'), ('z.JPEG', (64, 48), 'a'),
                          ('w.png', (50, 30), 'c')]:
    (root / cls).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / cls / name)
    made.append(f'{cls}/{name}')
  (root / 'b' / 'broken.jpg').write_bytes(b'not a jpeg')
  return made


def _config(root, **overrides):
  config = ml_collections.ConfigDict({
      'name': 'test', 'seed': 0, 'num_classes': 3, 'class_names': ('a', 'b', 'c'), 'class_names_file': '',
      'data': {'name': 'images', 'data_dir': str(root), 'labels': 'subfolders', 'image_size': 32,
               'mean': (0.5, 0.5, 0.5), 'std': (0.25, 0.25, 0.25)},
      'checkpoint': {'kind': 'python', 'path': f'{FOREIGN}:build'},
      'top_k': 2, 'crop_size': 28, 'localise_size': 0, 'chunk_size': 2, 'sequential_maps': False,
      'eval_chunk': 2, 'num_images': 0, 'workers': 0, 'overlays': True,
      'maps': {'guided': {'method': 'guided_backprop'}},
      'localise': {'graphcut': {'method': 'graphcut'}, 'guided_threshold': {'method': 'threshold',
                                                                            'map': 'guided'}},
  })
  config.update(overrides)
  return config


def test_a_folder_of_photos_gives_classes_maps_overlays_and_boxes(tmp_path):
  made = _photos(tmp_path / 'photos')
  config = _config(tmp_path / 'photos')
  logged = []
  summary = images.run(config, tmp_path / 'out', log=logged.append)
  assert summary['num_photos'] == 5 and summary['num_explained'] == 4
  assert [b['record'] for b in summary['unreadable']] == ['b/broken.jpg']
  out = tmp_path / 'out'
  model, preprocessing = setup.load_model(settings.checkpoint(config), input_size=settings.input_size(config),
                                          num_classes=config.num_classes)
  for image_id in made:
    name = image_id.replace('/', '__')
    described = json.loads((out / 'images' / f'{name}.json').read_text())
    photo = folder.ImageFolder(tmp_path / 'photos', labels='subfolders', classes=config.class_names)
    i = photo.ids.index(image_id)
    h, w = photo[i]['image'].shape[:2]
    assert (described['width'], described['height']) == (w, h)
    assert described['label'] == 'abc'.index(image_id[0])
    # the classes and scores are the model's own 10-crop top-2, on the photo squashed and preprocessed
    x = transforms.normalise(transforms.resize(photo[i], 32)['image'][None], preprocessing['mean'],
                             preprocessing['std'])
    classes, scores, maps = saliency.top_k_saliency(model, x, k=2, crop_size=28)
    assert [c['class'] for c in described['top_k']] == np.asarray(classes)[0].tolist()
    np.testing.assert_allclose([c['score'] for c in described['top_k']], np.asarray(scores)[0], rtol=1e-5)
    with np.load(out / 'images' / f'{name}.npz') as f:
      assert set(f) == {'gradient', 'guided'} and f['gradient'].shape == (2, 32, 32)
      assert f['gradient'].dtype == np.float32
      np.testing.assert_allclose(f['gradient'], np.asarray(maps)[0], rtol=1e-5, atol=1e-7)
    for c in described['top_k']:  # boxes in the photo's own pixels
      assert set(c['boxes']) == {'graphcut', 'guided_threshold'}
      for b in c['boxes'].values():
        x0, y0, x1, y1 = b['box']
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and b['status'] in ('ok', 'flat_saliency',
                                                                             'empty_segment')
    for m in ('gradient', 'guided'):
      with Image.open(out / 'images' / f'{name}.{m}.png') as png:
        assert png.size[0] > 0
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 2 and {r['image'] for r in rows} == set(made)
  with open(out / 'boxes.csv') as f:
    assert len(list(csv.DictReader(f))) == 4 * 2 * 2
  labels = np.array(['abc'.index(m[0]) for m in sorted(made)])
  top = np.array([[int(r['class']) for r in rows if r['image'] == m] for m in sorted(made)])
  assert summary['accuracy'] == {'num_labelled': 4, 'top1': float(np.mean(top[:, 0] == labels)),
                                 'top2': float(np.mean((top == labels[:, None]).any(1)))}

  # a rerun finds every chunk; a chunk deleted (a killed run) is the only one made again
  before = (out / 'boxes.csv').read_text()
  logged.clear()
  images.run(config, out, log=logged.append)
  assert any('resuming: 3 of 3 chunks already in' in line for line in logged)
  chunk = sorted((out / 'chunks').glob('*/chunk-000001.npz'))[0]
  chunk.unlink()
  logged.clear()
  images.run(config, out, log=logged.append)
  assert any('resuming: 2 of 3 chunks' in line for line in logged)
  assert (out / 'boxes.csv').read_text() == before
  # the boxes do not depend on the chunks: one chunk of all five photos gives the same ones
  config.eval_chunk = 5
  images.run(config, tmp_path / 'one_chunk', log=logged.append)
  assert (tmp_path / 'one_chunk' / 'boxes.csv').read_text() == before


def test_labels_from_a_csv_and_refusals(tmp_path):
  _photos(tmp_path / 'p')
  (tmp_path / 'labels.csv').write_text('image,label\nx.jpg,b\na/z.JPEG,2\n')
  source = folder.ImageFolder(tmp_path / 'p', labels=str(tmp_path / 'labels.csv'), classes=('a', 'b', 'c'))
  assert dict(zip(source.ids, source.labels.tolist())) == {'a/x.jpg': 1, 'a/z.JPEG': 2, 'b/broken.jpg': -1,
                                                          'b/y.png': -1, 'c/w.png': -1}
  (tmp_path / 'bad.csv').write_text('image,label\nx.jpg,dog\n')
  with pytest.raises(UserError, match=r"bad.csv:2: label 'dog' is no class index or name"):
    folder.ImageFolder(tmp_path / 'p', labels=str(tmp_path / 'bad.csv'), classes=('a', 'b', 'c'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='holds no JPEG or PNG photos'):
    folder.ImageFolder(tmp_path / 'empty')
  config = _config(tmp_path / 'p', top_k=0, checkpoint={'kind': '', 'path': ''})
  with pytest.raises(UserError, match=r'(?s)config.top_k must be .*config.checkpoint.kind must be'):
    images.run(config, tmp_path / 'out')
  config = _config(tmp_path / 'p', checkpoint={'kind': 'python', 'path': f'{FOREIGN}:one_score_per_image'})
  with pytest.raises(UserError, match=r'must return class scores \[B, K\]'):
    images.run(config, tmp_path / 'out')
