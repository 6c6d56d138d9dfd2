"""TensorFlow.js layers models: tiny ones written here (every supported layer) against a PyTorch
implementation of Keras' layers, the errors, and the real MobileNet v1 of ../shared/data."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import shared_data

from saliency_jax import deconvnet, models, saliency, weights

# a module-scoped fixture (the MobileNet): keep this file's tests on one worker
pytestmark = pytest.mark.xdist_group('test_weights_tfjs')


def _layer(kind, name, inbound, **config):
  return {'class_name': kind, 'name': name, 'config': {'name': name, **config},
          'inbound_nodes': [[[inbound, 0, 0, {}]]] if inbound else []}


def _chain(spec, input_shape):
  """[(kind, name, config)] -> a Keras functional model config whose layers form a chain."""
  layers, previous = ([_layer('InputLayer', 'input_1', None, batch_input_shape=[None, *input_shape])],
                      'input_1')
  for kind, name, config in spec:
    layers.append(_layer(kind, name, previous, **config))
    previous = name
  return {'class_name': 'Model', 'config': {'name': 'tiny', 'layers': layers,
                                            'input_layers': [['input_1', 0, 0]],
                                            'output_layers': [[previous, 0, 0]]}}


def write_tfjs(folder, model_config, arrays: dict, *, groups: int = 2, extra_weight: dict | None = None):
  """Writes model.json and its weight shards (raw float32, split into `groups` groups)."""
  folder.mkdir(parents=True, exist_ok=True)
  names = list(arrays)
  manifest = []
  for g, part in enumerate(np.array_split(np.arange(len(names)), groups)):
    data = b''.join(np.asarray(arrays[names[i]], '<f4').tobytes() for i in part)
    (folder / f'group{g + 1}-shard1of1').write_bytes(data)
    manifest.append({'paths': [f'group{g + 1}-shard1of1'],
                     'weights': [{'name': names[i], 'shape': list(np.shape(arrays[names[i]])),
                                  'dtype': 'float32', **(extra_weight or {})} for i in part]})
  (folder / 'model.json').write_text(json.dumps({'modelTopology': {'keras_version': '2.1.4',
                                                                   'backend': 'tensorflow',
                                                                   'model_config': model_config},
                                                 'weightsManifest': manifest}))
  return folder


def _bn(rng, name, c):
  return {f'{name}/gamma': rng.uniform(0.5, 1.5, c), f'{name}/beta': rng.normal(size=c) * 0.1,
          f'{name}/moving_mean': rng.normal(size=c) * 0.1,
          f'{name}/moving_variance': rng.uniform(0.5, 1.5, c)}


def mobilenet_like(rng):
  """Conv / BatchNorm / relu6 / depthwise / ReLU / pooling / padding / reshape / dropout, a 1x1
  conv classifier and a final softmax (the layout of Keras' MobileNet)."""
  spec = [('ZeroPadding2D', 'pad', {'padding': [[1, 0], [0, 1]]}),
          ('Conv2D', 'conv1', {'filters': 4, 'kernel_size': [3, 3], 'strides': [2, 2], 'padding': 'same',
                               'activation': 'relu', 'use_bias': True, 'dilation_rate': [1, 1]}),
          ('BatchNormalization', 'bn1', {'epsilon': 1e-3, 'axis': -1, 'center': True, 'scale': True}),
          ('Activation', 'relu6_1', {'activation': 'relu6'}),
          ('DepthwiseConv2D', 'dw', {'kernel_size': [3, 3], 'strides': [2, 2], 'padding': 'same',
                                     'depth_multiplier': 2, 'use_bias': False, 'activation': 'linear'}),
          ('ReLU', 'relu_layer', {'max_value': 6.0, 'negative_slope': 0.0, 'threshold': 0.0}),
          ('MaxPooling2D', 'pool', {'pool_size': [2, 2], 'strides': [1, 1], 'padding': 'same'}),
          ('Conv2D', 'conv2', {'filters': 6, 'kernel_size': [1, 1], 'strides': [1, 1], 'padding': 'valid',
                               'activation': 'linear', 'use_bias': False}),
          ('BatchNormalization', 'bn2', {'epsilon': 1e-3, 'axis': -1}),
          ('Activation', 'relu_2', {'activation': 'relu'}),
          ('GlobalAveragePooling2D', 'gap', {}),
          ('Reshape', 'reshape_1', {'target_shape': [1, 1, 6]}),
          ('Dropout', 'dropout', {'rate': 0.1}),
          ('Conv2D', 'preds', {'filters': 5, 'kernel_size': [1, 1], 'strides': [1, 1], 'padding': 'same',
                               'activation': 'linear', 'use_bias': True}),
          ('Activation', 'softmax', {'activation': 'softmax'}),
          ('Reshape', 'reshape_2', {'target_shape': [5]})]
  arrays = {'conv1/kernel': rng.normal(size=(3, 3, 3, 4)) * 0.5, 'conv1/bias': rng.normal(size=4) * 0.1,
            **_bn(rng, 'bn1', 4), 'dw/depthwise_kernel': rng.normal(size=(3, 3, 4, 2)) * 0.5,
            'conv2/kernel': rng.normal(size=(1, 1, 8, 6)) * 0.5, **_bn(rng, 'bn2', 6),
            'preds/kernel': rng.normal(size=(1, 1, 6, 5)), 'preds/bias': rng.normal(size=5) * 0.1}
  return _chain(spec, (13, 11, 3)), arrays


def dense_head(rng):
  """Conv / ReLU / max-pooling (valid) / Flatten / Dense with relu, and a Dense with a softmax activation."""
  spec = [('Conv2D', 'conv', {'filters': 3, 'kernel_size': [3, 3], 'strides': [1, 1], 'padding': 'valid',
                              'activation': 'linear', 'use_bias': True}),
          ('ReLU', 'relu', {}),
          ('MaxPooling2D', 'pool', {'pool_size': [2, 2], 'strides': None, 'padding': 'valid'}),
          ('Flatten', 'flatten', {}),
          ('Dense', 'fc1', {'units': 6, 'activation': 'relu', 'use_bias': True}),
          ('Dense', 'fc2', {'units': 4, 'activation': 'softmax', 'use_bias': True})]
  arrays = {'conv/kernel': rng.normal(size=(3, 3, 3, 3)), 'conv/bias': rng.normal(size=3) * 0.1,
            'fc1/kernel': rng.normal(size=(27, 6)) * 0.3, 'fc1/bias': rng.normal(size=6) * 0.1,
            'fc2/kernel': rng.normal(size=(6, 4)), 'fc2/bias': rng.normal(size=4) * 0.1}
  return _chain(spec, (8, 8, 3)), arrays


def _torch_scores(folder, x):
  torch = pytest.importorskip('torch', reason="the PyTorch reference needs the torch extra")
  from saliency_jax import torch_reference
  config, arrays = weights.read_tfjs_layers_model(folder)
  net = torch_reference.TorchKerasChain(config['config']['layers'], arrays)
  xt = torch.from_numpy(np.asarray(x, np.float32)).permute(0, 3, 1, 2).requires_grad_(True)
  return net, xt


@pytest.mark.parametrize('build,hw', [(mobilenet_like, (13, 11)), (dense_head, (8, 8))])
def test_tiny_models_match_pytorch_scores_and_rule_maps(tmp_path, build, hw):
  torch = pytest.importorskip('torch', reason="the PyTorch reference needs the torch extra")
  from saliency_jax import torch_reference
  rng = np.random.default_rng(0)
  folder = write_tfjs(tmp_path / 'm', *build(rng))
  model = weights.load_tfjs_layers_model(folder / 'model.json')
  x = rng.normal(size=(3, *hw, 3)).astype(np.float32) * 2  # large enough to reach the relu6 clip
  net, xt = _torch_scores(folder, x)
  expected = net(xt)
  got = np.asarray(model(jnp.asarray(x)))
  np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
  assert model.num_classes == got.shape[1]
  # the same maps under the three backward rules (DeconvNet / guided through relu6 too)
  labels = np.argmax(got, axis=1)
  for rule, twin in ((None, torch.nn.functional.relu),
                     (deconvnet.deconvnet_relu, torch_reference.DeconvNetReLU.apply),
                     (deconvnet.guided_relu, torch_reference.GuidedReLU.apply)):
    xt.grad = None
    scores = net(xt, relu=twin)
    scores[torch.arange(len(x)), torch.as_tensor(labels)].sum().backward()
    reference = xt.grad.permute(0, 2, 3, 1).abs().amax(dim=-1).numpy()
    maps = np.asarray(saliency.saliency_maps(model, x, labels, relu=rule))
    np.testing.assert_allclose(maps, reference, rtol=1e-4, atol=1e-5 * reference.max())


@pytest.mark.parametrize('build,hw', [(mobilenet_like, (13, 11)), (dense_head, (8, 8))])
def test_tiny_models_explicit_deconvnet_equals_the_vjp_in_float64(tmp_path, build, hw):
  # every Keras layer kind transposed by hand (padding, depthwise with multiplier 2, the relu6 clip,
  # max-pool switches, reshape, flatten, a 1x1 conv classifier) against autodiff
  rng = np.random.default_rng(1)
  model = weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'm', *build(rng)) / 'model.json')
  with jax.enable_x64(True):
    model = models.cast(model, jnp.float64)
    x = jnp.asarray(rng.normal(size=(3, *hw, 3)) * 2)  # large enough to reach the relu6 clip
    # from the scores (every step's transpose is checked on the signal that reaches it) and from a
    # middle layer
    names = deconvnet.layer_names(model)
    for layer in ('scores', names[len(names) // 2]):
      result = deconvnet.compare(model, x, layer=layer, neurons=jnp.array([0, 1, 1]))
      assert result['deconvnet_explicit_vs_vjp']['relative'] < 1e-10, layer
      assert result['gradient_explicit_vs_grad']['relative'] < 1e-10, layer
      for name, r in result['steps'].items():
        assert r['max_abs_diff'] <= 1e-10 * max(r['max_abs'], 1e-300), (layer, name)
      assert all(r['same_set'] for r in result['relus'].values()), layer
  kinds = {s.kind for s in deconvnet.steps(model)}
  assert kinds >= ({'pad', 'depthwise_conv', 'clip', 'reshape', 'max_pool'} if build is mobilenet_like
                   else {'flatten', 'dense', 'max_pool'})


def test_relu6_clip_keeps_its_derivative_under_every_rule():
  x = jnp.array([-1.0, 3.0, 7.0])
  for rule in (deconvnet.gradient_relu, deconvnet.deconvnet_relu, deconvnet.guided_relu):
    g = jax.grad(lambda v, r=rule: jnp.sum(jnp.minimum(r(v), 6.0)))(x)
    assert g[2] == 0.0 and g[1] == 1.0  # above 6: no signal back; between 0 and 6: passed
  g = jax.grad(lambda v: jnp.sum(jnp.minimum(deconvnet.deconvnet_relu(v), 6.0)))(x)
  assert g[0] == 1.0  # DeconvNet ignores the forward gate at 0 (positive signal), not the clip


def test_unsupported_layers_and_bad_files_are_clear_errors(tmp_path):
  rng = np.random.default_rng(0)
  model_config, arrays = dense_head(rng)
  model_config['config']['layers'][2]['class_name'] = 'LeakyReLU'
  with pytest.raises(ValueError, match="layer 'relu'.*unsupported layer class 'LeakyReLU'"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'a', model_config, arrays))

  model_config, arrays = dense_head(rng)
  model_config['config']['layers'][5]['config']['activation'] = 'softmax'  # fc1: a softmax before a Dense
  with pytest.raises(ValueError, match="'fc2'.*follows the softmax of layer 'fc1'"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'b', model_config, arrays))

  model_config, arrays = dense_head(rng)
  model_config['config']['layers'][5]['config']['activation'] = 'tanh'
  with pytest.raises(ValueError, match="'fc1'.*unsupported activation 'tanh'"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'c', model_config, arrays))

  model_config, arrays = dense_head(rng)
  model_config['config']['layers'][5]['inbound_nodes'] = [[['pool', 0, 0, {}], ['flatten', 0, 0, {}]]]
  with pytest.raises(ValueError, match="'fc1' reads.*only chains"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'd', model_config, arrays))

  model_config, arrays = dense_head(rng)
  del arrays['fc1/bias']
  with pytest.raises(ValueError, match=r'missing keys \(1\): fc1/bias'):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'e', model_config, arrays))

  model_config, arrays = dense_head(rng)
  arrays['fc1/kernel'] = arrays['fc1/kernel'][:20]
  with pytest.raises(ValueError,
                     match="'fc1': its weights expect 20 input features, the layers before it give 27"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'f', model_config, arrays))

  model_config, arrays = dense_head(rng)
  del arrays['conv/kernel']
  with pytest.raises(ValueError, match="no weight 'conv/kernel'"):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'f2', model_config, arrays))

  model_config, arrays = dense_head(rng)
  arrays['fc2/bias'] = arrays['fc2/bias'][:3]
  with pytest.raises(ValueError, match=r'shape mismatches \(1\): fc2/bias'):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'f3', model_config, arrays))

  model_config, arrays = dense_head(rng)
  folder = write_tfjs(tmp_path / 'g', model_config, arrays, extra_weight={'quantization': {'dtype': 'uint8'}})
  with pytest.raises(ValueError, match='conv/kernel is float32 quantized'):
    weights.load_tfjs_layers_model(folder)

  folder = write_tfjs(tmp_path / 'h', *dense_head(rng), groups=1)
  shard = folder / 'group1-shard1of1'
  shard.write_bytes(shard.read_bytes()[:-4])
  with pytest.raises(ValueError, match='end inside weight fc2/bias'):
    weights.load_tfjs_layers_model(folder)
  with pytest.raises(FileNotFoundError, match='no TensorFlow.js model'):
    weights.load_tfjs_layers_model(tmp_path / 'nowhere')


def test_truncated_or_foreign_model_files_and_missing_shards_are_named(tmp_path):
  folder = write_tfjs(tmp_path / 'a', *dense_head(np.random.default_rng(0)), groups=1)
  text = (folder / 'model.json').read_text()
  (folder / 'model.json').write_text(text[:len(text) // 2])  # a cut-off download
  with pytest.raises(ValueError, match=r'a/model\.json is not a TensorFlow\.js model\.json: not JSON'):
    weights.load_tfjs_layers_model(folder)
  checkpoint = tmp_path / 'resnet20.th'  # a PyTorch pickle handed to the TF.js loader
  checkpoint.write_bytes(b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.')
  with pytest.raises(ValueError, match=r'resnet20\.th is not a TensorFlow\.js model\.json: not JSON'):
    weights.load_tfjs_layers_model(checkpoint)
  folder = write_tfjs(tmp_path / 'b', *dense_head(np.random.default_rng(0)), groups=1)
  (folder / 'group1-shard1of1').unlink()
  with pytest.raises(FileNotFoundError, match=r'manifest are missing: .*group1-shard1of1'):
    weights.load_tfjs_layers_model(folder)


def test_weights_holding_nan_or_inf_are_refused(tmp_path):
  model_config, arrays = dense_head(np.random.default_rng(0))
  arrays['fc1/kernel'][0, :2] = [np.nan, np.inf]
  with pytest.raises(ValueError, match=r'NaN or infinite values \(1 tensors\): fc1/kernel \(2 of '):
    weights.load_tfjs_layers_model(write_tfjs(tmp_path / 'n', model_config, arrays))


# ----------------------------------------------------------------------------- the real MobileNet v1 0.75


@pytest.fixture(scope='module')
def mobilenet():
  return weights.load_tfjs_layers_model(shared_data('imagenet-mobilenet'))


def _photo(image, size=224):
  from PIL import Image
  return (np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), np.float32)
          / 127.5 - 1)


def _cat_and_espresso():
  import skimage.data
  return np.stack([_photo(skimage.data.chelsea()), _photo(skimage.data.coffee())])


def test_mobilenet_recognises_a_cat_and_an_espresso(mobilenet):
  scores = np.asarray(mobilenet(jnp.asarray(_cat_and_espresso())))
  assert scores.shape == (2, 1000)
  top1 = np.argmax(scores, axis=1)
  assert top1[0] in (281, 282, 285) and top1[1] == 967  # tabby / tiger cat / Egyptian cat; espresso


def test_mobilenet_scores_equal_pytorch(mobilenet):
  x = _cat_and_espresso()
  net, xt = _torch_scores(shared_data('imagenet-mobilenet'), x)
  expected = net(xt).detach().numpy()
  np.testing.assert_allclose(np.asarray(mobilenet(jnp.asarray(x))), expected,
                             atol=1e-5 * np.abs(expected).max())


def test_mobilenet_top5_on_real_imagenet_val_images(mobilenet):
  from saliency_jax.data import imagenet, voc
  root = shared_data('imagenet-val-sample')
  wnids = [w for w, _ in imagenet.read_synsets(root / 'synset_words.txt')]
  source = voc.VOCSource(root, wnids, layout='ilsvrc', squashed=True)  # 227 px copies, <size> the original
  items = [source[i] for i in range(0, 650, 13)]  # 50 images across the sample
  x = np.stack([it['image'][1:-2, 1:-2].astype(np.float32) / 127.5 - 1 for it in items])  # centre 224 of 227
  scores = np.asarray(saliency.scores(mobilenet, x, chunk_size=25))
  labels = np.array([it['label'] for it in items])
  top5 = (np.argsort(-scores, axis=1)[:, :5] == labels[:, None]).any(axis=1).mean()
  assert top5 >= 0.75, top5  # published: 88.2% top-5 on all of ImageNet val; a broken import gives ~0.5%
