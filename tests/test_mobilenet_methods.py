"""Every method on the real MobileNet v1 0.75 of ../shared/data: its layer graph, read from the
imported Keras layer list, gives the explicit DeconvNet, Grad-CAM, CAM, the randomisation check and
class models; each is checked against the VJP (float64) or the PyTorch twin built independently
from the same layer list (`torch_reference.TorchKerasChain`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import shared_data

from saliency_jax import attribution, class_models, deconvnet, faithfulness, models, saliency, weights

# a module-scoped fixture (the MobileNet): keep this file's tests on one worker
pytestmark = pytest.mark.xdist_group('test_mobilenet_methods')

SIZE = 96  # global pooling: any size works; 96 px keeps float64 and PyTorch runs short


@pytest.fixture(scope='module')
def mobilenet():
  return weights.load_tfjs_layers_model(shared_data('imagenet-mobilenet'))


@pytest.fixture(scope='module')
def photos():
  import skimage.data
  from PIL import Image
  images = [skimage.data.chelsea(), skimage.data.coffee()]
  return np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.float32)
                   / 127.5 - 1 for im in images])


def _twin():
  torch = pytest.importorskip('torch', reason='the PyTorch twin needs the torch extra')
  from saliency_jax import torch_reference
  config, arrays = weights.read_tfjs_layers_model(shared_data('imagenet-mobilenet'))
  return torch, torch_reference, torch_reference.TorchKerasChain(config['config']['layers'], arrays), arrays


def _nchw(torch, x):
  return torch.from_numpy(np.asarray(x, np.float32)).permute(0, 3, 1, 2)


def test_layer_graph_read_from_the_keras_layers(mobilenet):
  names = deconvnet.layer_names(mobilenet)
  assert names[:4] == ['conv1', 'conv1_bn', 'conv1_relu/relu', 'conv1_relu']  # relu6: rectify, then clip
  kinds = {s.kind for s in deconvnet.steps(mobilenet)}
  assert kinds == {'conv', 'depthwise_conv', 'batch_norm', 'relu', 'clip', 'mean', 'reshape', 'identity'}
  assert attribution.default_layer(mobilenet) == 'conv_pw_13_relu'
  layer, w = attribution.classifier(mobilenet)
  assert layer == 'conv_pw_13_relu' and w.shape == (768, 1000)
  groups = [name for name, _ in faithfulness.randomisation_groups(mobilenet)]
  assert len(groups) == 28 and groups[0] == 'conv_preds' and groups[-1] == 'conv1'  # 1 + 13 dw + 13 pw + 1


def test_explicit_deconvnet_equals_the_vjp_in_float64(mobilenet, photos):
  with jax.enable_x64(True):
    model = models.cast(mobilenet, jnp.float64)
    x = jnp.asarray(photos[:1], jnp.float64)
    result = deconvnet.compare(model, x, neurons=jnp.array([281]))
  assert result['deconvnet_explicit_vs_vjp']['relative'] < 1e-10
  assert result['gradient_explicit_vs_grad']['relative'] < 1e-10
  assert result['grad_vs_gradient_relu']['max_abs'] == 0.0
  assert result['gradient_vs_deconvnet']['relative'] > 0.1  # the rules really differ on the real net
  assert len(result['relus']) == 27 and all(r['same_set'] for r in result['relus'].values())
  assert sum(r['disagree'] for r in result['relus'].values()) > 0
  for name, r in result['steps'].items():  # every transposed layer (depthwise, pad, clip, ...) = its VJP
    assert r['max_abs_diff'] <= 1e-10 * max(r['max_abs'], 1e-300), name
  assert {r['kind'] for r in result['steps'].values()} >= {'depthwise_conv', 'clip', 'reshape'}


def test_grad_cam_and_cam_equal_the_pytorch_twin(mobilenet, photos):
  torch, _, net, arrays = _twin()
  labels = np.array([281, 967])
  layer = attribution.default_layer(mobilenet)
  got_grad_cam = np.asarray(attribution.grad_cam(mobilenet, photos, labels, upsample=False))
  got_cam = np.asarray(attribution.cam(mobilenet, photos, labels, upsample=False))
  a = net(_nchw(torch, photos), stop=layer).detach().requires_grad_(True)  # [B, C, h, w]
  scores = net(a, start=layer)
  scores[torch.arange(2), torch.as_tensor(labels)].sum().backward()
  alpha = a.grad.mean(dim=(2, 3))  # Selvaraju et al.: the mean gradient of each channel
  grad_cam = torch.relu(torch.einsum('bchw,bc->bhw', a, alpha)).detach().numpy()
  np.testing.assert_allclose(got_grad_cam, grad_cam, rtol=1e-4, atol=1e-5 * grad_cam.max())
  w = arrays['conv_preds/kernel'][0, 0][:, labels].T  # Zhou et al.: the classifier's weights of the class
  cam = torch.einsum('bchw,bc->bhw', a, torch.from_numpy(w)).detach().numpy()
  np.testing.assert_allclose(got_cam, cam, rtol=1e-4, atol=1e-5 * np.abs(cam).max())
  # CAM's mean plus the class bias is the score
  bias = arrays['conv_preds/bias'][labels]
  np.testing.assert_allclose(got_cam.mean(axis=(1, 2)) + bias, scores.detach().numpy()[np.arange(2), labels],
                             rtol=1e-4, atol=1e-4)
  assert attribution.grad_cam(mobilenet, photos, labels).shape == (2, SIZE, SIZE)


def test_guided_backprop_and_smoothgrad_equal_the_pytorch_twin(mobilenet, photos):
  torch, torch_reference, net, _ = _twin()
  labels = np.array([281, 967])

  def twin_gradient(x, relu):
    xt = _nchw(torch, x).requires_grad_(True)
    net(xt, relu=relu)[torch.arange(len(x)), torch.as_tensor(np.resize(labels, len(x)))].sum().backward()
    return xt.grad.permute(0, 2, 3, 1).numpy()

  guided = np.asarray(attribution.guided_backprop(mobilenet, photos, labels))
  expected = twin_gradient(photos, torch_reference.GuidedReLU.apply)
  np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
  # SmoothGrad: the documented noise (std 0.15 x each image's range, key folded with the image's index),
  # drawn here, pushed through the twin and averaged; in float64 on both sides: in float32 an input of a
  # ReLU or relu6 of a noisy copy can lie within round-off of its kink, and which side of it each program
  # lands on (and so the gradient behind it) depends on its compiler's kernels
  samples, noise, key = 4, 0.15, jax.random.key(7)
  net = net.double()
  with jax.enable_x64(True):
    x64 = jnp.asarray(photos, jnp.float64)
    got = np.asarray(attribution.smoothgrad(models.cast(mobilenet, jnp.float64), x64, labels, key=key,
                                            samples=samples, noise=noise))
    for i in range(2):
      eps = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (samples, *x64.shape[1:]), x64.dtype))
      span = np.asarray(x64[i].max() - x64[i].min())
      noisy = np.asarray(x64[i])[None] + noise * span * eps
      xt = torch.from_numpy(noisy).permute(0, 3, 1, 2).requires_grad_(True)
      net(xt)[:, labels[i]].sum().backward()
      expected = xt.grad.permute(0, 2, 3, 1).numpy().mean(axis=0)
      np.testing.assert_allclose(got[i], expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


def test_randomisation_check_and_class_models_run_on_the_layer_graph(mobilenet, photos):
  labels = np.array([281, 967])
  fresh = faithfulness.fresh_like(mobilenet, 1)
  randomised = faithfulness.randomise(mobilenet, fresh, {'conv_preds', 'conv_pw_13'})
  np.testing.assert_array_equal(randomised.blocks[-3].kernel[...], fresh.blocks[-3].kernel[...])
  assert not np.array_equal(randomised.blocks[-3].kernel[...], mobilenet.blocks[-3].kernel[...])
  np.testing.assert_array_equal(randomised.blocks[0].kernel[...], mobilenet.blocks[0].kernel[...])

  def maps(model):
    g = attribution.gradient(model, photos, labels)
    return {'absolute': attribution.to_map(g), 'signed': attribution.to_map(g, signed=True)}

  out = faithfulness.cascading_randomisation(mobilenet, fresh, maps)
  assert len(out['absolute']) == 28
  assert out['absolute'][-1] < 0.5 and out['absolute'][-1] < out['absolute'][0]  # all layers: little is left
  # class models (Sect. 2): gradient ascent raises the class score on the imported net
  result = class_models.visualise(mobilenet, [281], image_shape=(SIZE, SIZE, 3), steps=20, l2_weight=1e-3,
                                  return_history=True)
  assert result.scores[0, -1] > result.scores[0, 0] + 1.0
  assert np.argmax(np.asarray(saliency.scores(mobilenet, result.images))[0]) == 281


def test_sect4_job_counts_the_relu6_clips_and_their_image_dependence(mobilenet, photos):
  from saliency_jax.jobs import equivalence
  x = jnp.asarray(photos)
  clips = equivalence.clip_statistics(mobilenet, x)
  assert len(clips) == 27 and sum(c['clipped'] for c in clips.values()) > 0
  for name in ('conv1_relu', 'conv_pw_13_relu'):  # the clip's input is the rectified output before it
    before = deconvnet.forward(mobilenet, x, layer=f'{name}/relu')
    assert clips[name] == {'units': before.size, 'clipped': int(jnp.sum(before >= 6.0))}
  row = equivalence.image_dependence_row('MobileNet', mobilenet, x, 1e-4)
  # no max-pooling, but the clips gate by the forward value: the DeconvNet maps vary between images
  assert row['has_clip'] and not row['has_max_pool'] and row['confirmed']
  assert row['max_rel_diff_between_images'] > 1e-3
