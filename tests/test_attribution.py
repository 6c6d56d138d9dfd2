"""Attribution baselines: known answers on linear and hand-built nets, completeness, SmoothGrad at zero
noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, models, saliency

# module-scoped fixtures: keep this file's tests on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group('test_attribution')


class Linear(nnx.Module):
  """S(x) = sum(W_c * x) + b_c: every attribution method has a closed form."""

  def __init__(self, shape, num_classes, rngs):
    self.shape, self.in_channels, self.input_size, self.num_classes = shape, shape[-1], None, num_classes
    self.dense = nnx.Linear(int(np.prod(shape)), num_classes, rngs=rngs)

  def __call__(self, x, *, relu=jax.nn.relu):
    return self.dense(x.reshape(x.shape[0], -1))

  def weights(self, c):
    return np.asarray(self.dense.kernel[...])[:, c].reshape(self.shape)


def _with_biases(model, seed):
  params = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed), 200))
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (0.1 * jax.random.normal(next(keys), x.shape) if 'bias' in jax.tree_util.keystr(path)
                       else x),
      params)
  nnx.update(model, params)
  return model


@pytest.fixture(scope='module')
def net():
  return _with_biases(models.SmallConvNet(4, stages=((8,), (16,)), rngs=nnx.Rngs(0)), 0)


@pytest.fixture(scope='module')
def batch():
  x = jax.random.normal(jax.random.key(1), (5, 16, 16, 3))
  return x, jnp.array([0, 1, 2, 3, 1])


def test_linear_model_closed_forms():
  shape = (6, 7, 3)
  model = Linear(shape, 3, nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, *shape))
  labels = jnp.array([2, 0])
  w = np.stack([model.weights(2), model.weights(0)])
  np.testing.assert_allclose(attribution.gradient(model, x, labels), w, rtol=1e-6)
  np.testing.assert_allclose(attribution.gradient_x_input(model, x, labels), w * np.asarray(x), rtol=1e-5,
                             atol=1e-7)
  for rule in attribution.IG_RULES:  # linear: every rule is exact, IG = (x - x') w
    ig = attribution.integrated_gradients(model, x, labels, steps=3, rule=rule,
                                          baseline=np.ones(shape, np.float32))
    np.testing.assert_allclose(ig, (np.asarray(x) - 1) * w, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(attribution.smoothgrad(model, x, labels, noise=0.5, samples=4), w, rtol=1e-5)
  # occlusion with value 0: the drop for a patch is the sum of w * x over it; each pixel averages its patches
  occ = np.asarray(attribution.occlusion(model, x, labels, patch=3, stride=2))
  masks = attribution.occlusion_masks(shape[:2], 3, 2)
  contrib = (w * np.asarray(x)).sum(-1)  # [B, H, W]
  drops = np.einsum('bhw,phw->bp', contrib, masks)
  expected = np.einsum('bp,phw->bhw', drops, masks) / masks.sum(0)
  np.testing.assert_allclose(occ, expected, rtol=1e-4, atol=1e-5)
  assert masks.sum(0).min() >= 1  # every pixel is covered, the last patches flush with the edge


def test_integrated_gradients_completeness(net, batch):
  x, labels = batch
  s = np.asarray(net(x))[np.arange(5), np.asarray(labels)]
  s0 = np.asarray(net(jnp.zeros_like(x)))[np.arange(5), np.asarray(labels)]
  ig = np.asarray(attribution.integrated_gradients(net, x, labels, steps=256, rule='midpoint', chunk_size=2))
  # ReLU nets are piecewise linear: the quadrature error comes from the kinks on the path. At 256
  # midpoint steps the sum is within 1% of the score difference (the stated tolerance).
  np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), s - s0, rtol=1e-2, atol=1e-2 * np.abs(s - s0).max())
  coarse = np.asarray(attribution.integrated_gradients(net, x, labels, steps=2, rule='midpoint'))
  assert np.abs(coarse.sum(axis=(1, 2, 3)) - (s - s0)).max() > np.abs(ig.sum(axis=(1, 2, 3)) - (s - s0)).max()


def test_smoothgrad_zero_noise_is_the_gradient_and_chunking_changes_nothing(net, batch):
  x, labels = batch
  g = attribution.gradient(net, x, labels)
  np.testing.assert_allclose(attribution.smoothgrad(net, x, labels, noise=0.0, samples=3), g, rtol=1e-5,
                             atol=1e-6)
  key = jax.random.key(7)
  whole = attribution.smoothgrad(net, x, labels, key=key, samples=6)
  parts = attribution.smoothgrad(net, x, labels, key=key, samples=6, chunk_size=2)
  np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
  assert not np.allclose(whole, g)
  other = attribution.smoothgrad(net, x, labels, key=jax.random.key(8), samples=6)
  assert not np.allclose(other, whole)


def test_gradient_shap_equals_captum_with_the_same_draws(monkeypatch):
  """Captum 0.9's GradientShap, its random draws replaced by the package's (`gradient_shap_draws`): the
  same attributions in float64; on a linear model the closed form E[(x~ - x') w]; chunks change nothing."""
  torch = pytest.importorskip('torch', reason='the PyTorch twin needs the torch extra')
  ca = pytest.importorskip('captum.attr', reason='the torch extra (Captum)')
  from saliency_jax.jobs import benchmark_methods
  rng = np.random.default_rng(0)
  x, labels = rng.normal(size=(3, 16, 16, 3)), np.array([1, 4, 0])
  base = rng.normal(size=(4, 16, 16, 3))
  # Captum holds stdevs as a float32 tensor (torch.tensor(0.3)): the same value on both sides
  samples, stdev, key = 5, float(np.float32(0.3)), jax.random.key(2)
  with jax.enable_x64(True):
    twin, model, _ = benchmark_methods.twin_and_model(((8,), (16,)), 6, 0)
    model = models.cast(model, jnp.float64)
    ours = attribution.gradient_shap(model, x, labels, baselines=base, samples=samples, stdev=stdev, key=key)
    pick, alpha, eps = (np.asarray(d) for d in attribution.gradient_shap_draws(
        key, jnp.arange(3), jnp.arange(samples), len(base), x.shape[1:], jnp.float64))
    chunked = attribution.gradient_shap(model, x, labels, baselines=base, samples=samples, stdev=stdev,
                                        key=key, sample_chunk=2, chunk_size=2)
  np.testing.assert_allclose(chunked, ours, rtol=1e-9, atol=1e-12 * np.abs(ours).max())
  # Captum's draws, image-major as its repeat_interleave orders them: baselines and alphas from NumPy's global
  # generator, the noise from torch.normal
  noise = torch.from_numpy(np.ascontiguousarray(eps.reshape(-1, *x.shape[1:]).transpose(0, 3, 1, 2)))
  monkeypatch.setattr(np.random, 'choice', lambda n, size: pick.reshape(-1)[:size])
  monkeypatch.setattr(np.random, 'uniform', lambda low, high, size: alpha.reshape(-1)[:size])
  monkeypatch.setattr(torch, 'normal', lambda mean, std: mean + std * noise)
  as_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
  expected = ca.GradientShap(twin.double()).attribute(
      as_nchw(x).requires_grad_(True), baselines=as_nchw(base), target=torch.from_numpy(labels),
      n_samples=samples, stdevs=stdev).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-10 * np.abs(expected).max())
  # the draws matter: another key, another attribution; no noise and one zero baseline is IG at random points
  with jax.enable_x64(True):
    other = attribution.gradient_shap(model, x, labels, baselines=base, samples=samples, stdev=stdev,
                                      key=jax.random.key(3))
  assert not np.allclose(other, ours, rtol=1e-3)
  shape = (6, 7, 3)
  linear = Linear(shape, 3, nnx.Rngs(0))
  xl, yl = jax.random.normal(jax.random.key(2), (2, *shape)), jnp.array([2, 0])
  w = np.stack([linear.weights(2), linear.weights(0)])
  bl = np.asarray(jax.random.normal(jax.random.key(4), (3, *shape)))
  got = attribution.gradient_shap(linear, xl, yl, baselines=bl, samples=7, key=key)
  pick, _, _ = attribution.gradient_shap_draws(key, jnp.arange(2), jnp.arange(7), 3, shape)
  mean_base = bl[np.asarray(pick)].mean(axis=1)
  np.testing.assert_allclose(got, (np.asarray(xl) - mean_base) * w, rtol=1e-4, atol=1e-6)


def test_gradient_shap_bad_settings_are_named_and_memory_is_bounded(net, batch):
  x, labels = batch
  for bad, match in [({'samples': 0}, 'samples >= 1'), ({'stdev': -1.0}, 'stdev >= 0'),
                     ({'sample_chunk': 0}, 'sample_chunk must be a positive integer'),
                     ({'baselines': np.zeros((2, 3, 3, 3))}, 'baselines must be one image'),
                     ({'baselines': np.full(x.shape[1:], np.nan)}, 'baselines hold'),
                     ({'key': 3}, 'key must be a JAX random key')]:
    with pytest.raises(ValueError, match=match):
      attribution.gradient_shap(net, x, labels, **bad)

  def temp(samples):
    compiled = attribution.gradient_shap_kernel.lower(
        net, x, labels, jnp.zeros((2, *x.shape[1:])), jnp.arange(len(x)), jax.random.key(0), jnp.float32(0.1),
        jnp.zeros(samples), sample_chunk=8).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  assert temp(16) == temp(256) > 0


def test_guided_and_deconvnet_are_the_rules_of_saliency(net, batch):
  from saliency_jax import deconvnet
  x, labels = batch
  np.testing.assert_array_equal(attribution.guided_backprop(net, x, labels),
                                saliency.input_gradients(net, x, labels, relu=deconvnet.guided_relu))
  np.testing.assert_allclose(attribution.deconvnet_attribution(net, x, labels),
                             deconvnet.reconstruct(net, x, neurons=labels), rtol=1e-4, atol=1e-5)


def _hand_built():
  """One conv stage of 2 channels, A_k = relu(x_k), then max-pool, global mean, S_0 = A_0 - A_1:
  dS_0/dA_k is +-1 / (number of pool windows) at each window's argmax, so alpha_k = +-1 / (H W)
  and Grad-CAM = relu(A_0 - A_1) / (H W)."""
  model = models.SmallConvNet(2, stages=((2,),), in_channels=2, rngs=nnx.Rngs(0))
  kernel = np.zeros((3, 3, 2, 2), np.float32)
  kernel[1, 1, 0, 0] = kernel[1, 1, 1, 1] = 1.0
  model.convs[0].kernel[...] = jnp.asarray(kernel)
  model.convs[0].bias[...] = jnp.zeros(2)
  model.classifier.kernel[...] = jnp.asarray([[1.0, 0.0], [-1.0, 1.0]])
  model.classifier.bias[...] = jnp.zeros(2)
  return model


def test_grad_cam_known_answer_on_a_hand_built_net():
  model = _hand_built()
  x = jax.random.uniform(jax.random.key(3), (3, 8, 8, 2))  # positive: relu is the identity
  assert attribution.default_layer(model) == 'relu1'
  got = np.asarray(attribution.grad_cam(model, x, jnp.zeros(3, jnp.int32), upsample=False))
  expected = np.maximum(np.asarray(x)[..., 0] - np.asarray(x)[..., 1], 0) / 64
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  up = attribution.grad_cam(model, x, jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(up, got, rtol=1e-5, atol=1e-7)  # same resolution: the upsampling is the identity


def test_grad_cam_generalises_cam_on_a_resnet_and_layers_match_nnx_capture():
  model = _with_biases(models.CifarResNet(8, rngs=nnx.Rngs(4)), 2)
  x = jax.random.normal(jax.random.key(5), (4, 32, 32, 3))
  labels = jnp.array([1, 5, 9, 0])
  assert attribution.default_layer(model) == 'layer3.0'
  c = np.asarray(attribution.cam(model, x, labels, upsample=False))
  g = np.asarray(attribution.grad_cam(model, x, labels, upsample=False))
  # a linear layer on the global mean: alpha_k = w_kc / (h w), so Grad-CAM = relu(CAM) / (h w)
  np.testing.assert_allclose(g, np.maximum(c, 0) / 64, rtol=1e-4, atol=1e-6)
  # CAM's mean plus the class bias is the score
  bias = np.asarray(model.linear.bias[...])[np.asarray(labels)]
  scores = np.asarray(model(x))[np.arange(4), np.asarray(labels)]
  np.testing.assert_allclose(c.mean(axis=(1, 2)) + bias, scores, rtol=1e-4, atol=1e-5)
  # the layer's activations equal what NNX records for that block, without editing the model
  features, head = attribution.split(model, 'layer3.0')
  _, inter = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
  recorded = inter['layer3'][0]['__call__'].get_value()[0]
  np.testing.assert_allclose(features(x), recorded, rtol=1e-6)
  np.testing.assert_allclose(head(features(x)), model(x), rtol=1e-5, atol=1e-5)
  assert attribution.cam(model, x, labels).shape == (4, 32, 32)


def test_one_api_and_maps(net, batch):
  x, labels = batch
  cheap = {'rise': {'num_masks': 64}, 'blur_ig': {'steps': 8}, 'guided_ig': {'steps': 8},
           'xrai': {'steps': 8}}
  for method in attribution.METHODS:
    settings = cheap.get(method, {})
    a = np.asarray(attribution.attribute(method, net, x, labels, chunk_size=3, **settings))
    assert a.shape == ((5, 16, 16, 3) if method in attribution.INPUT_SPACE else (5, 16, 16)), method
    # the registry's function, the whole batch in one chunk: the chunks of 3 change nothing
    whole = np.asarray(attribution.registered(method).function(net, x, labels, chunk_size=len(x), **settings))
    # Eigen-CAM: XLA's SVD of a batch of 3 and of 5 differ at float32 round-off
    np.testing.assert_allclose(a, whole, rtol=1e-4 if method == 'eigen_cam' else 1e-5,
                               atol=1e-5 if method == 'eigen_cam' else 1e-7,
                               err_msg=method)
    # the map: the paper's max_c |a_c| of an input-space attribution, a region map's positive part
    m = attribution.to_map(a)
    np.testing.assert_array_equal(m, np.abs(a).max(-1) if a.ndim == 4 else np.maximum(a, 0), err_msg=method)
    assert m.max() > 0, f'{method}: no evidence on any image'
  g = attribution.gradient(net, x, labels)
  np.testing.assert_allclose(attribution.to_map(g), saliency.saliency_maps(net, x, labels), rtol=1e-6)
  np.testing.assert_allclose(attribution.to_map(g, signed=True), np.asarray(g).sum(-1), rtol=1e-6)
  region = np.array([[[-2.0, 0.5], [3.0, 0.0]]])  # a region map's positive part is the evidence
  np.testing.assert_array_equal(attribution.to_map(region), [[[0.0, 0.5], [3.0, 0.0]]])
  np.testing.assert_array_equal(attribution.to_map(region, signed=True), region)


def test_bad_input_is_named(net, batch):
  x, labels = batch
  with pytest.raises(ValueError, match='unknown attribution method'):
    attribution.attribute('lime', net, x, labels)
  with pytest.raises(ValueError, match='baseline must be'):
    attribution.integrated_gradients(net, x, labels, baseline=np.zeros((3, 3, 3)))
  with pytest.raises(ValueError, match='rule must be one of'):
    attribution.integrated_gradients(net, x, labels, rule='simpson')
  with pytest.raises(ValueError, match='baseline holds 1 NaN or infinite values'):
    attribution.integrated_gradients(net, x, labels, baseline=np.where(np.arange(x[0].size) == 3, np.nan, 0.0
                                                                       ).reshape(x.shape[1:]))
  with pytest.raises(ValueError, match='labels must lie in'):
    attribution.grad_cam(net, x, labels + 4)
  with pytest.raises(ValueError, match='CAM needs global average pooling'):
    attribution.cam(models.SmallConvNet(4, stages=((4,),), hidden=(8,), rngs=nnx.Rngs(0)), x, labels)
  with pytest.raises(ValueError, match='patch'):
    attribution.occlusion(net, x, labels, patch=40)
  with pytest.raises(ValueError, match='inside the network'):
    attribution.grad_cam(net, x, labels, layer='scores')


def test_class_region_maps_are_each_class_s_map_taken_as_the_paper_takes_saliency():
  """k classes per image in one call equal grad_cam / cam of each class; with crop_size, each equals
  the 10 crops' maps placed back and averaged, exactly as the paper's 10-crop saliency is built."""
  model = _with_biases(models.CifarResNet(8, rngs=nnx.Rngs(4)), 2)
  x = jax.random.normal(jax.random.key(6), (3, 36, 36, 3))
  classes = np.array([[1, 5], [9, 0], [3, 3]])
  for method, fn in (('grad_cam', attribution.grad_cam), ('cam', attribution.cam)):
    full = np.asarray(attribution.class_region_maps(method, model, x, classes, chunk_size=2))
    assert full.shape == (3, 2, 36, 36)
    for j in range(2):
      np.testing.assert_allclose(full[:, j], fn(model, x, classes[:, j]), rtol=1e-5, atol=1e-6)
    cropped = np.asarray(attribution.class_region_maps(method, model, x, classes, crop_size=32))
    for i in range(3):
      crops = saliency.ten_crops(x[i], (32, 32))
      for j in range(2):
        per_crop = fn(model, crops, np.full(10, classes[i, j]))
        np.testing.assert_allclose(cropped[i, j], saliency.uncrop(per_crop, (36, 36)), rtol=1e-5, atol=1e-6)
  occluded = attribution.class_region_maps('occlusion', model, x, classes, patch=12, stride=8)
  for j in range(2):
    one = attribution.occlusion(model, x, classes[:, j], patch=12, stride=8)
    np.testing.assert_allclose(occluded[:, j], one, rtol=1e-5, atol=1e-6)
  # the masked passes of Score-CAM and RISE, and XRAI's segments, shared by the k classes
  shared = {'score_cam': ({'channel_chunk': 8}, functools.partial(attribution.cam_family, 'score_cam')),
            'rise': ({'num_masks': 40, 'mask_chunk': 16}, attribution.rise),
            'xrai': ({'steps': 4}, attribution.xrai)}
  for method, (settings, fn) in shared.items():
    both = np.asarray(attribution.class_region_maps(method, model, x, classes, chunk_size=2, **settings))
    assert both.shape == (3, 2, 36, 36)
    for j in range(2):
      np.testing.assert_allclose(both[:, j], fn(model, x, classes[:, j], **settings), rtol=1e-5,
                                 atol=1e-6 * np.abs(both).max(), err_msg=method)
    assert not np.allclose(both[:2, 0], both[:2, 1]), method  # the classes' maps differ
  with pytest.raises(ValueError, match=r"rise takes no settings \['steps'\]"):
    attribution.class_region_maps('rise', model, x, classes, steps=3)
  with pytest.raises(ValueError, match='xrai takes no crop_size'):
    attribution.class_region_maps('xrai', model, x, classes, crop_size=32)
  with pytest.raises(ValueError, match='method must be one of'):
    attribution.class_region_maps('smoothgrad', model, x, classes)
  with pytest.raises(ValueError, match='occlusion takes no crop_size'):
    attribution.class_region_maps('occlusion', model, x, classes, crop_size=32)
  with pytest.raises(ValueError, match=r'classes must be \[B, k\]'):
    attribution.class_region_maps('cam', model, x, classes[:, 0])
  with pytest.raises(ValueError, match="CAM's layer"):
    attribution.class_region_maps('cam', model, x, classes, layer='layer3.0')


def test_gradient_and_grad_cam_from_the_same_passes_equal_each_computed_apart():
  """One forward pass and k backward passes give the paper's gradient maps and the same classes' Grad-CAM
  maps: each equal to `top_k_saliency` / `class_saliency` and `class_region_maps('grad_cam')`, for the
  top-k classes and for given classes, on 10 crops and on whole images, at the default and another layer."""
  model = _with_biases(models.CifarResNet(8, rngs=nnx.Rngs(4)), 2)
  x = jax.random.normal(jax.random.key(7), (3, 36, 36, 3))
  for crop, layer in ((32, None), (None, 'layer2.0')):
    classes, scores, grads, cams = attribution.gradient_and_grad_cam(model, x, k=3, layer=layer,
                                                                     crop_size=crop, chunk_size=2)
    c, s, g = saliency.top_k_saliency(model, x, k=3, crop_size=crop)
    np.testing.assert_array_equal(classes, c)
    np.testing.assert_allclose(scores, s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, g, rtol=1e-5, atol=1e-7)
    apart = attribution.class_region_maps('grad_cam', model, x, c, layer=layer, crop_size=crop)
    np.testing.assert_allclose(cams, apart, rtol=1e-5, atol=1e-6)
    assert float(np.max(cams)) > 0 and grads.shape == cams.shape == (3, 3, 36, 36)
    sequential = attribution.gradient_and_grad_cam(model, x, k=3, layer=layer, crop_size=crop, chunk_size=2,
                                                   sequential=True)  # one image, one class at a time
    np.testing.assert_array_equal(sequential[0], classes)
    for u, v in zip(sequential[1:], (scores, grads, cams)):
      np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    given = np.array([[4], [0], [c[2, 1]]])
    _, _, grads1, cams1 = attribution.gradient_and_grad_cam(model, x, given, layer=layer, crop_size=crop)
    _, g1 = saliency.class_saliency(model, x, given, crop_size=crop)
    np.testing.assert_allclose(grads1, g1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cams1, attribution.class_region_maps('grad_cam', model, x, given, layer=layer,
                                                                    crop_size=crop), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='either classes'):
    attribution.gradient_and_grad_cam(model, x, given, k=1)
  with pytest.raises(ValueError, match='labels go with k'):
    attribution.gradient_and_grad_cam(model, x, given, labels=np.zeros(3, int))


@pytest.mark.parametrize('sequential', [True, False])
def test_gradient_and_grad_cam_with_labels_adds_each_label_s_maps(sequential):
  """labels: the label's maps out of the same call, the top-k's own where the label is among them (the
  same arrays), else one more backward pass (a branch) equal to the label's maps computed apart."""
  model = _with_biases(models.CifarResNet(8, rngs=nnx.Rngs(4)), 2)
  x = jax.random.normal(jax.random.key(7), (3, 36, 36, 3))
  c, _, g, cams = attribution.gradient_and_grad_cam(model, x, k=3, crop_size=32, sequential=sequential)
  outside = next(j for j in range(10) if j not in np.asarray(c[1]))
  labels = np.array([c[0, 1], outside, c[2, 0]])
  out = attribution.gradient_and_grad_cam(model, x, k=3, crop_size=32, sequential=sequential, labels=labels)
  assert len(out) == 6
  for u, v in zip(out[:4], (c, None, g, cams)):
    if v is not None:
      np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
  grads, label_grads, label_cams = out[2], out[4], out[5]
  np.testing.assert_array_equal(label_grads[0], grads[0, 1])
  np.testing.assert_array_equal(label_cams[2], out[3][2, 0])
  _, apart = saliency.class_saliency(model, x[1:2], labels[1:2, None], crop_size=32)
  np.testing.assert_allclose(label_grads[1], apart[0, 0], rtol=1e-5, atol=1e-7)
  apart_cam = attribution.class_region_maps('grad_cam', model, x[1:2], labels[1:2, None], crop_size=32)
  np.testing.assert_allclose(label_cams[1], apart_cam[0, 0], rtol=1e-5, atol=1e-6)
  assert float(np.abs(label_grads[1]).max()) > 0
  with pytest.raises(ValueError, match=r'k must be an integer in \[1, 10\]'):
    attribution.gradient_and_grad_cam(model, x, k=11)


def test_integrated_gradients_and_smoothgrad_in_chunks_bound_memory(net, batch):
  """With step_chunk / sample_chunk the multiplying axis goes a chunk at a time: the same attributions
  (IG: the unchunked ones to round-off; SmoothGrad: the same whatever the chunk, and the plain gradient
  without noise), and XLA's temporary buffers for 16 and for 256 steps (copies) at the same chunk are
  equal."""
  x, labels = batch
  whole = attribution.integrated_gradients(net, x, labels, steps=20)
  np.testing.assert_allclose(attribution.integrated_gradients(net, x, labels, steps=20, step_chunk=6), whole,
                             rtol=1e-4, atol=1e-6 * float(np.abs(whole).max()))
  a = attribution.smoothgrad(net, x, labels, samples=10, sample_chunk=3)
  other = attribution.smoothgrad(net, x, labels, samples=10, sample_chunk=10, chunk_size=2)
  np.testing.assert_allclose(other, a, rtol=1e-4, atol=1e-6 * float(np.abs(a).max()))
  np.testing.assert_allclose(attribution.smoothgrad(net, x, labels, samples=7, noise=0.0, sample_chunk=4),
                             attribution.gradient(net, x, labels), rtol=1e-4, atol=1e-7)
  with pytest.raises(ValueError, match='step_chunk must be a positive integer'):
    attribution.integrated_gradients(net, x, labels, step_chunk=0)

  def ig_temp(steps):
    alphas, weights = attribution.chunk_points(*attribution.path_points(steps, 'gauss_legendre'), 8)
    compiled = attribution.ig_kernel.lower(net, x, labels, jnp.zeros_like(x), jnp.asarray(alphas, x.dtype),
                                           jnp.asarray(weights, x.dtype)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  def smoothgrad_temp(samples):
    compiled = attribution.smoothgrad_kernel.lower(net, x, labels, jnp.arange(len(x)), jax.random.key(0),
                                                   jnp.float32(0.15), jnp.zeros(samples),
                                                   sample_chunk=8).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  assert ig_temp(16) == ig_temp(256) > 0
  assert smoothgrad_temp(16) == smoothgrad_temp(256) > 0


def test_occlusion_in_patch_chunks_equals_one_batch():
  """The patches a chunk at a time (the last chunk padded) give the one-batch maps; a bad chunk is refused."""
  model = models.SmallConvNet(5, stages=((8,), (16,)), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  labels = jnp.array([0, 2, 4])
  whole = attribution.occlusion(model, x, labels, patch=4, stride=3, patch_chunk=None)  # 25 patches
  for chunk in (1, 7, 25, 40):
    got = attribution.occlusion(model, x, labels, patch=4, stride=3, patch_chunk=chunk)
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5 * float(jnp.abs(whole).max()), err_msg=chunk)
  with pytest.raises(ValueError, match='patch_chunk must be a positive integer'):
    attribution.occlusion(model, x, labels, patch_chunk=0)


def test_occlusion_memory_does_not_grow_with_the_patches():
  """XLA's temporary buffers of occlusion's kernel for 16 and 256 patches at one patch_chunk are equal."""
  model = models.SmallConvNet(5, stages=((8,), (16,)), rngs=nnx.Rngs(0))
  x, classes = jnp.zeros((2, 16, 16, 3)), jnp.array([[1], [2]])

  def temp_bytes(patches):
    masks = jnp.zeros((patches // 8, 8, 16, 16))  # chunks of 8 patches
    compiled = attribution.occlusion_kernel.lower(model, x, classes, masks, 0.0).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  assert temp_bytes(16) == temp_bytes(256) > 0
