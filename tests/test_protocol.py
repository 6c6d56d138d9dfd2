"""The protocol's calls on small inputs with known answers: maps, cuts, scores, setup, cache."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, localise, metrics, models, saliency
from saliency_jax.data import make_source
from saliency_jax.errors import UserError
from saliency_jax.protocol import cache, localisation, maps, scores, setup


@pytest.fixture(scope='module')
def net():
  model = models.SmallConvNet(4, stages=((4,), (8,)), rngs=nnx.Rngs(0))
  model.eval()
  x = np.asarray(jax.random.normal(jax.random.key(0), (6, 16, 16, 3)))
  return model, x


def test_make_maps_gives_the_core_functions_maps_and_shares_the_true_class_where_asked(net):
  model, x = net
  classes, _, top = saliency.top_k_saliency(model, x, k=2, crop_size=12)
  labels = np.asarray(classes)[:, 0].copy()
  labels[::2] = (labels[::2] + 1) % 4  # half the images' true class is their top-1, the others' not
  made = maps.make_maps(model, x, specs={'gradient': maps.GRADIENT}, labels=labels, top_k=2, crop_size=12)
  np.testing.assert_array_equal(made.top_classes, classes)
  np.testing.assert_array_equal(made.maps['gradient'][1], np.asarray(top))
  _, own = saliency.class_saliency(model, x, labels[:, None], crop_size=12)
  np.testing.assert_array_equal(made.maps['gradient'][0], np.asarray(own)[:, 0])
  assert made.shared is None and set(made.seconds) == {'gradient'}

  shared = maps.make_maps(model, x, specs={'gradient': maps.GRADIENT}, labels=labels, top_k=2, crop_size=12,
                          share_true=True)
  expected = np.where((np.asarray(classes) == labels[:, None]).any(1),
                      (np.asarray(classes) == labels[:, None]).argmax(1), -1)
  np.testing.assert_array_equal(shared.shared, expected)
  hit = expected >= 0
  assert hit.any() and (~hit).any()
  np.testing.assert_array_equal(shared.maps['gradient'][0][hit], np.asarray(top)[hit, expected[hit]])
  np.testing.assert_allclose(shared.maps['gradient'][0], made.maps['gradient'][0], rtol=1e-5, atol=1e-7)

  alone = maps.make_maps(model, x, specs={'gradient': maps.GRADIENT}, top_k=2, crop_size=12)
  assert alone.maps['gradient'][0] is None and alone.top_scores.shape == (6, 2)
  with pytest.raises(ValueError, match='ranked by the gradient maps'):
    maps.make_maps(model, x, specs={'guided': maps.MapSpec('guided_backprop')}, top_k=2)


def test_make_maps_of_other_methods_take_the_registry_route(net):
  model, x = net
  labels = np.array([0, 1, 2, 3, 0, 1])
  guided = maps.MapSpec.parse('guided', {'method': 'guided_backprop'})
  made = maps.make_maps(model, x, specs={'guided': guided}, labels=labels,
                        top_classes=labels[:, None] * 0 + 2, crop_size=12)
  _, expected = saliency.class_saliency(model, x, labels[:, None], crop_size=12,
                                        relu=attribution.REGISTRY['guided_backprop'].relu)
  np.testing.assert_array_equal(made.maps['guided'][0], np.asarray(expected)[:, 0])
  assert made.maps['guided'][1].shape == (6, 1, 16, 16)
  # crops 'image': each method's own function on the whole image, absolute and signed
  image = maps.make_maps(model, x, specs={'ig': maps.MapSpec('integrated_gradients', 'image', {'steps': 4})},
                         labels=labels, signed=True)
  a = attribution.integrated_gradients(model, x, labels, steps=4)
  np.testing.assert_array_equal(image.maps['ig'][0], attribution.to_map(a))
  np.testing.assert_array_equal(image.signed['ig'], attribution.to_map(a, signed=True))
  # crops 'centre': zero outside the centre crop
  centre = maps.make_maps(model, x, specs={'g': maps.MapSpec('gradient_x_input', 'centre')}, labels=labels,
                          crop_size=12)
  assert not centre.maps['g'][0][:, :2].any() and centre.maps['g'][0][:, 2:14, 2:14].any()


def test_map_specs_and_cuts_are_parsed_with_the_key_named():
  with pytest.raises(ValueError, match="config.maps.m: method must be one of"):
    maps.MapSpec.parse('m', {'method': 'nope'})
  with pytest.raises(ValueError, match="config.maps.m: guided_backprop takes no settings"):
    maps.MapSpec.parse('m', {'method': 'guided_backprop', 'layer': 'x'})
  assert maps.MapSpec.parse('m', {'method': 'grad_cam', 'layer': 'a'}).settings == {'layer': 'a'}
  cut = localisation.Cut.parse('c', {'method': 'threshold', 'threshold': 0.3, 'map': 'm'})
  assert cut.map == 'm' and cut.changes() == {'map': 'm', 'method': 'threshold', 'threshold': 0.3}
  assert localisation.Cut.parse('p', {'method': 'graphcut'}).changes() == {}
  with pytest.raises(ValueError, match=r"config.localise.c: unknown localise settings \['tresh'\]"):
    localisation.Cut.parse('c', {'tresh': 1})


def test_onto_resizes_only_what_differs():
  true, top = np.ones((2, 8, 8)), np.ones((2, 3, 8, 8))
  same = maps.onto({'a': (true, top)}, (8, 8))
  assert same['a'][0] is true and same['a'][1] is top
  bigger = maps.onto({'a': (true, top), 'b': (None, top)}, (12, 10))
  assert bigger['a'][0].shape == (2, 12, 10) and bigger['a'][1].shape == (2, 3, 12, 10)
  np.testing.assert_allclose(bigger['a'][1], 1.0)  # a constant map stays constant
  assert bigger['b'][0] is None


def test_localise_images_without_true_class_maps_repeats_the_first_class():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (3, 20, 20, 3), np.uint8)
  top = np.zeros((3, 2, 20, 20))
  top[:, 0, 2:8, 2:8] = 1.0
  top[:, 1, 10:18, 12:19] = 1.0
  cuts = {'t': localisation.Cut('gradient', localise.settings({'method': 'threshold', 'threshold': 0.5}))}
  found, kept = localisation.localise_images(images, {'gradient': (None, top)}, cuts, np.arange(3), 3)
  np.testing.assert_array_equal(found['t']['top_boxes'][:, 0], [[2, 2, 8, 8]] * 3)
  np.testing.assert_array_equal(found['t']['top_boxes'][:, 1], [[12, 10, 19, 18]] * 3)
  np.testing.assert_array_equal(found['t']['true_boxes'], found['t']['top_boxes'][:, 0])
  assert found['t']['status'].shape == (3, 3) and (found['t']['status'] == 'ok').all()


def test_scores_known_answers():
  boxes = np.array([[0, 0, 10, 10]])
  found = {'m': {'true_boxes': np.array([[0, 0, 10, 10], [20, 20, 30, 30]]),
                 'top_boxes': np.array([[[0, 0, 10, 10], [0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 10, 10]]]),
                 'status': np.array([['ok'] * 3, ['ok', 'flat_saliency', 'ok']]), 'seconds': 0.0}}
  top = np.array([[0, 1], [2, 1]])
  out = scores.localisation_metrics(found, [0, 1], [[0], [1]], [boxes, boxes], top, log=lambda *_: None)['m']
  # image 0: true box right, top-1 right; image 1: true box wrong, top-1 class wrong, top-2 right
  assert out['gt_known_box_accuracy'] == 0.5 and out['top1_loc_error'] == 0.5 and out['top2_loc_error'] == 0
  assert out['fallbacks'] == {'true': 0, 'top': 1, 'total': 1}
  # the pointing game: the map's maximum on the object
  m = np.zeros((2, 10, 10))
  m[0, 1, 1], m[1, 8, 8] = 1, 1
  masks = np.zeros((2, 10, 10), bool)
  masks[:, :5, :5] = True
  assert scores.pointing(m, [0, 1], masks=masks, tolerance=0)['per_image'] == 0.5
  game = scores.pointing(m, [0, 1], boxes=[np.array([[0, 0, 5, 5]]), np.array([[6, 6, 10, 10]])],
                         difficult=[np.array([False]), np.array([True])], tolerance=0)
  assert game['per_image'] == 1.0 and game['played'] == 1  # the second image's only box is difficult


def _synthetic(tmp_path, **data):
  d = ml_collections.ConfigDict({'name': 'synthetic', 'seed': 0, 'image_size': 24, 'num_train': 4,
                                 'num_test': 5, 'num_classes': 10, 'scale': (0.2, 0.6), 'occlusion': 0.3,
                                 'skip_bad': False, 'part': 'all', **data})
  return setup.Data(sources=lambda split: make_source(d, split), image_size=24, key=d.to_dict())


def test_read_records_localises_on_the_photos_at_their_size(tmp_path):
  data = _synthetic(tmp_path)
  source = data.sources('test')
  plain = setup.read_records(data, source, range(5), np.zeros(3), np.ones(3))
  assert plain['x'].shape == (5, 24, 24, 3) and plain['masks'].shape == (5, 24, 24)
  np.testing.assert_allclose(plain['x'], plain['images'] / 255.0, atol=1e-6)
  photos = setup.read_records(setup.Data(**{**data.__dict__, 'localise_size': 48}), source, range(5),
                              np.zeros(3), np.ones(3))
  assert photos['images'].shape == (5, 48, 48, 3) and photos['masks'] is None
  np.testing.assert_array_equal(photos['x'], plain['x'])
  for small, big in zip(plain['boxes'], photos['boxes']):
    np.testing.assert_allclose(big, 2 * small, atol=1)
  # the splits cached: read again from the cache, equal
  first = setup.load_splits(data, tmp_path, train_split=True, log=lambda *_: None)
  again = setup.load_splits(data, tmp_path, train_split=True, log=lambda *_: None)
  np.testing.assert_array_equal(first['test']['images'], again['test']['images'])
  assert set(first) == {'train', 'test'}


def test_normalisation_and_class_names(tmp_path):
  images = np.full((2, 4, 4, 3), 51, np.uint8)
  mean, std = setup.normalisation(setup.Data(sources=None, image_size=4), images)
  np.testing.assert_allclose(mean, 0.2) and np.testing.assert_allclose(std, 1.0)
  given = setup.Data(sources=None, image_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
  np.testing.assert_allclose(setup.normalisation(given, images)[1], 0.25)
  with pytest.raises(ValueError, match='the model brings its preprocessing'):
    setup.normalisation(given, None, {'mean': (0, 0, 0), 'std': (1, 1, 1)})
  (tmp_path / 'synsets.txt').write_text('n01440764 tench, Tinca tinca\nn01443537 goldfish\n')
  (tmp_path / 'meta.json').write_text(json.dumps({'labels': ['a', 'b']}))
  (tmp_path / 'names.txt').write_text('cat\ndog\n')
  assert setup.class_names((), 2, tmp_path / 'synsets.txt') == ['tench', 'goldfish']
  assert setup.class_names((), 2, tmp_path / 'meta.json') == ['a', 'b']
  assert setup.class_names((), 2, tmp_path / 'names.txt') == ['cat', 'dog']
  assert setup.class_names(('x', 'y'), 2, tmp_path / 'names.txt') == ['x', 'y']
  assert setup.class_names((), 3) == ['0', '1', '2']
  with pytest.raises(UserError, match='names 2 classes, config.num_classes is 3'):
    setup.class_names((), 3, tmp_path / 'names.txt')


def test_pack_round_trip_and_weights_digest(net):
  pieces = [np.zeros((0, 4)), np.ones((2, 4)), np.arange(4)[None]]
  back = cache.unpack(*cache.pack(pieces))
  assert [p.shape for p in back] == [(0, 4), (2, 4), (1, 4)] and (back[2] == np.arange(4)).all()
  model, _ = net
  assert cache.weights_digest(model) == cache.weights_digest(nnx.clone(model))
  assert cache.weights_digest(model) != cache.weights_digest(model.fresh(1))


def test_wsol_metrics_of_a_set_in_parts_are_those_of_the_whole():
  """The main job scores its chunks apart (`scores.wsol_rows`) and the set at the end (`wsol_summary`):
  the same MaxBoxAccV2 and PxAP as `metrics.max_box_acc` / `pxap` on all the maps at once."""
  from scipy import ndimage
  rng = np.random.default_rng(0)
  maps_all = np.stack([ndimage.gaussian_filter(rng.normal(size=(24, 24)), 2) for _ in range(10)])
  boxes = [np.array([[x, y, x + 9, y + 8]]) for x, y in rng.integers(0, 14, (10, 2))]
  masks = maps_all > 0.1
  rows = [scores.wsol_rows({'m': (maps_all[a:b], None)}, boxes[a:b], masks[a:b])
          for a, b in ((0, 4), (4, 10))]
  merged = {'m': {key: np.concatenate([r['m'][key] for r in rows]) for key in rows[0]['m']}}
  got = scores.wsol_summary(merged)['m']
  whole = metrics.max_box_acc(maps_all, boxes)
  assert got['max_box_acc_v2'] == whole['max_box_acc_v2']
  assert got['box_acc'] == {str(t): v for t, v in whole['box_acc'].items()}
  assert got['pxap'] == metrics.pxap(maps_all, masks)
  lo, hi = got['intervals']['max_box_acc_v2']
  assert lo <= got['max_box_acc_v2'] <= hi


def test_paired_comparisons_and_intervals_of_cuts():
  right = {'a': {'gt_known': np.array([1, 1, 1, 0] * 10, bool), 'top1': np.ones(40, bool)},
           'b': {'gt_known': np.array([1, 0, 0, 0] * 10, bool), 'top1': np.ones(40, bool)}}
  out = scores.paired_comparisons(right, 'a', ['b', 'a', 'missing'])
  assert list(out) == ['b']
  assert out['b']['gt_known_box_accuracy']['difference'] == 0.5
  assert out['b']['gt_known_box_accuracy']['mcnemar'] == {'only_a': 20, 'only_b': 0,
                                                          'p_value': pytest.approx(2 * 0.5 ** 20)}
  assert not out['b']['top1_loc_error']['distinguishable']
  ci = scores.intervals(right['a'])
  low, high = ci['gt_known_box_accuracy']
  assert ci['top1_loc_error'] == [0.0, 0.0] and low < 0.75 < high
