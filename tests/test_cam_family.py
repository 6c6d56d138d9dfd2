"""The CAM family and RISE against their definitions written independently in PyTorch on the same weights.

pytorch-grad-cam needs torchvision, which does not import beside the CPU build of torch here, so its
formulas (version 1.5: `grad_cam_plusplus.py`, `xgrad_cam.py`, `layer_cam.py`, `hirescam.py`,
`eigen_cam.py` with `utils/svd_on_activations.py`, `score_cam.py`, `ablation_cam.py`) are written below on
the PyTorch twin's activations and gradients, in NCHW as that package computes them; RISE as TorchRay
writes it (`torchray.attribution.rise`: reflection-padded upsampling, random shifts, sigmoid scores), with
the same grids and shifts (and then the same masks) given to both sides.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import attribution, models

TORCH_REASON = 'the PyTorch twins need the torch extra'
STAGES = ((8,), (16,), (16,))
RTOL = 1e-9  # float64 on both sides


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _twin_and_model():
  """The twin and the package's net with the same weights, float64, and the twin's (features, head) at the
  package's default layer (its last ReLU)."""
  from saliency_jax.jobs import benchmark_methods
  twin, model, split = benchmark_methods.twin_and_model(STAGES, 6, 0)
  return twin.double(), models.cast(model, jnp.float64), split


def _reference_cams(split, x, labels) -> dict:
  """Every CAM of the family on the twin, pytorch-grad-cam's formulas (`torch_reference.cam_family_maps`,
  written in PyTorch and NumPy apart from the package's JAX), not upsampled: {method: [B, h, w]}."""
  import torch

  from saliency_jax import torch_reference
  features, head = split
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  out = {m: torch_reference.cam_family_maps(features, head, xt, labels, m) for m in attribution.CAM_FAMILY}
  for i in range(len(x)):  # the layer is a ReLU's output: Ablation-CAM's ablated channels are set to 0
    assert features(xt[i:i + 1]).min() == 0
  return out


def test_cam_family_equals_pytorch_grad_cam_formulas_on_the_twin(x64):
  pytest.importorskip('torch', reason=TORCH_REASON)
  _, model, split = _twin_and_model()
  x = np.random.default_rng(0).normal(size=(3, 24, 24, 3))
  labels = np.array([0, 3, 5])
  reference = _reference_cams(split, x, labels)
  assert set(reference) == set(attribution.CAM_FAMILY)
  for method, want in reference.items():
    got = np.asarray(attribution.cam_family(method, model, jnp.asarray(x), labels, upsample=False,
                                            channel_chunk=5))  # 16 channels: chunks of 5, the last padded
    assert want.max() > 0, method
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * want.max(), err_msg=method)


def test_cam_family_on_a_user_split_and_bad_settings():
  model = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(1))
  x = jax.random.normal(jax.random.key(0), (2, 24, 24, 3))
  labels = np.array([1, 4])
  features, head = attribution.split(model, 'relu3')

  def f(z):  # any JAX callable, its layer given as a split
    return model(z)
  for method in attribution.CAM_FAMILY:
    named = attribution.cam_family(method, model, x, labels)
    by_split = attribution.cam_family(method, f, x, labels, layer=(features, head))
    np.testing.assert_allclose(by_split, named, rtol=2e-4, atol=1e-5 * float(np.max(named)), err_msg=method)
  with pytest.raises(ValueError, match='unknown CAM variant'):
    attribution.cam_family('grad_cam_minus', model, x, labels)
  with pytest.raises(ValueError, match='channel_chunk must be a positive integer'):
    attribution.cam_family('score_cam', model, x, labels, channel_chunk=0)
  with pytest.raises(ValueError, match='spatial layer'):
    attribution.cam_family('layer_cam', model, x, labels, layer='mean')


def _torchray_masks(grid, shift_x, shift_y, hw):
  """TorchRay's `_upsample_reflect` and random shift, with given grids [N, n, n] and shifts."""
  import torch
  import torch.nn.functional as F
  n, (h, w) = grid.shape[1], hw
  cell = (int(np.ceil(h / n)), int(np.ceil(w / n)))
  up_size = (h + cell[0], w + cell[1])
  up_cell = [int(np.ceil(s / n)) for s in up_size]
  padded = F.pad(torch.from_numpy(grid[:, None].astype(np.float32)), (1, 1, 1, 1), mode='reflect')
  up = F.interpolate(padded, [c * (n + 2) for c in up_cell], mode='bilinear', align_corners=False)
  up = up[:, :, up_cell[0]:up_cell[0] + up_size[0], up_cell[1]:up_cell[1] + up_size[1]]
  return np.stack([up[i, 0, shift_x[i]:shift_x[i] + h, shift_y[i]:shift_y[i] + w].numpy()
                   for i in range(len(grid))])


def test_rise_equals_torchray_with_the_same_grids_shifts_and_masks(x64):
  torch = pytest.importorskip('torch', reason=TORCH_REASON)
  rng = np.random.default_rng(0)
  hw, n = (24, 20), 7
  grid = (rng.uniform(size=(40, n, n)) < 0.5).astype(np.float64)
  shift_x, shift_y = rng.integers(0, 4, 40), rng.integers(0, 3, 40)  # cells of ceil(24/7), ceil(20/7)
  want = _torchray_masks(grid, shift_x, shift_y, hw)
  got = np.asarray(attribution.rise_masks_from(grid, shift_x, shift_y, hw))
  np.testing.assert_allclose(got, want, atol=1e-6)
  drawn = np.asarray(attribution.rise_masks(jax.random.key(0), 50, hw))
  assert drawn.shape == (50, *hw) and 0 <= drawn.min() and drawn.max() <= 1 and 0.3 < drawn.mean() < 0.7

  twin, model, _ = _twin_and_model()
  x = rng.normal(size=(2, 24, 24, 3))
  labels = np.array([2, 4])
  masks = rng.uniform(size=(37, 24, 24))
  from saliency_jax import torch_reference
  reference = torch_reference.rise_maps(twin, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), labels,
                                        torch.from_numpy(masks))
  got = np.asarray(attribution.rise(model, jnp.asarray(x), labels, masks=masks, mask_chunk=8))
  np.testing.assert_allclose(got, reference, rtol=RTOL)
  with pytest.raises(ValueError, match='masks must be'):
    attribution.rise(model, jnp.asarray(x), labels, masks=masks[:, :20])
  # the RISE paper's weights (the class probability) and the raw score: the mean of weight x mask by hand
  scores = np.stack([np.asarray(model(jnp.asarray(x[i][None] * masks[..., None]))) for i in range(len(x))])
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for score, weights in (('softmax', probs), ('raw', scores)):
    w = weights[np.arange(len(x)), :, labels]  # [B, N]
    got = attribution.rise(model, jnp.asarray(x), labels, masks=masks, mask_chunk=8, score=score)
    np.testing.assert_allclose(got, np.einsum('bn,nhw->bhw', w, masks) / len(masks), rtol=1e-9, atol=1e-12,
                               err_msg=score)
  with pytest.raises(ValueError, match='score must be one of'):
    attribution.rise(model, jnp.asarray(x), labels, masks=masks, score='logit')


def test_rise_memory_does_not_grow_with_the_masks():
  """XLA's temporary buffers of RISE's kernel for 16 and for 256 masks at the same mask_chunk (8) are
  equal: the masks go through the model a chunk at a time (a single chunk, a scan of one step, compiles
  to a program of its own)."""
  model = models.SmallConvNet(6, stages=STAGES, rngs=nnx.Rngs(0))
  x = jnp.zeros((2, 24, 24, 3))
  labels = jnp.array([1, 2])

  def temp_bytes(num_masks):
    masks = jnp.zeros((num_masks, 24, 24))
    compiled = attribution.rise_kernel.lower(model, x, labels, masks, 1.0, mask_chunk=8).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  small, large = temp_bytes(16), temp_bytes(256)
  assert small > 0 and large == small, (small, large)


def test_score_cam_and_ablation_cam_memory_does_not_grow_with_the_channels_passes():
  """The per-channel passes go channel_chunk at a time: at channel_chunk 8, XLA's temporary buffers for a
  layer of 256 channels exceed those for 16 channels by less than twice what the layer itself holds (its
  activations and, for Score-CAM, their masks at the input's size, [B, H, W, 256]), where scoring all 256
  channels at once takes over 3x the chunked program's."""
  x = jnp.zeros((2, 24, 24, 3))
  labels = jnp.array([1, 2])

  def temp_bytes(method, width, chunk):
    model = models.SmallConvNet(6, stages=((8,), (width,)), rngs=nnx.Rngs(0))
    p = attribution.parts(model, None, x, method)
    compiled = attribution.cam_family_kernel.lower(model, p, x, labels, method=method, upsample=True,
                                                   channel_chunk=chunk).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  for method in attribution.CHANNEL_CAMS:
    own = 4 * 2 * 256 * (24 * 24 + 12 * 12)  # float32 masks [2, 24, 24, 256] and activations [2, 12, 12, 256]
    narrow, wide = temp_bytes(method, 16, 8), temp_bytes(method, 256, 8)
    assert 0 < wide - narrow < 2 * own, (method, narrow, wide)
    assert temp_bytes(method, 256, 256) > 3 * wide, method
