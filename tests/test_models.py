import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from saliency_jax import models


def _count_relus(model, shape):
  calls = []

  def relu(x):
    calls.append(x.shape)
    return jax.nn.relu(x)

  out = jax.eval_shape(lambda m, x: m(x, relu=relu), model, jax.ShapeDtypeStruct(shape, jnp.float32))
  return out, len(calls)


@pytest.mark.parametrize('make,shape,classes,relus', [
    (lambda: models.PaperConvNet(rngs=nnx.Rngs(0)), (2, 224, 224, 3), 1000, 7),
    (lambda: models.PaperConvNet(10, input_size=96, rngs=nnx.Rngs(0)), (2, 96, 96, 3), 10, 7),
    (lambda: models.SmallConvNet(rngs=nnx.Rngs(0)), (2, 64, 64, 3), 10, 4),
    (lambda: models.SmallConvNet(5, stages=((8, 8), (16,)), hidden=(32, 32), in_channels=1, batch_norm=True,
                                 rngs=nnx.Rngs(0)), (2, 37, 41, 1), 5, 5),
    (lambda: models.VGG16(rngs=nnx.Rngs(0)), (1, 224, 224, 3), 1000, 15),
    (lambda: models.CifarResNet(20, rngs=nnx.Rngs(0)), (2, 32, 32, 3), 10, 19),
    (lambda: models.CifarResNet(56, num_classes=100, rngs=nnx.Rngs(0)), (2, 32, 32, 3), 100, 55),
])
def test_scores_shape_and_every_relu_goes_through_the_argument(make, shape, classes, relus):
  model = make()
  out, count = _count_relus(model, shape)
  assert out.shape == (shape[0], classes) and out.dtype == jnp.float32
  assert count == relus
  assert model.num_classes == classes and model.in_channels == shape[-1]


def test_relu_argument_changes_the_computation():
  model = models.CifarResNet(20, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  plain = model(x)
  np.testing.assert_allclose(model(x, relu=lambda v: jnp.maximum(v, 0)), plain, rtol=1e-6)
  assert not np.allclose(model(x, relu=lambda v: v), plain)


def test_vgg16_modules_sit_at_torchvision_indices():
  model = models.VGG16(rngs=nnx.Rngs(0))
  convs = [i for i, layer in enumerate(model.features) if layer is not None]
  assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
  assert len(model.features) == 31
  assert [i for i, layer in enumerate(model.classifier) if layer is not None] == [0, 3, 6]
  assert model.classifier[0].kernel.shape == (25088, 4096)


def test_vgg16_accepts_other_sizes_through_adaptive_pooling():
  model = models.VGG16(num_classes=3, rngs=nnx.Rngs(0))
  out, _ = _count_relus(model, (1, 64, 64, 3))
  assert out.shape == (1, 3)


@pytest.mark.parametrize('depth,blocks', [(20, 3), (32, 5), (44, 7), (56, 9)])
def test_cifar_resnet_depths(depth, blocks):
  model = models.CifarResNet(depth, rngs=nnx.Rngs(0))
  assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3
  convs = sum(isinstance(m, nnx.Conv) for _, m in nnx.iter_modules(model))
  assert convs + 1 == depth  # the convolutions plus the final linear layer


def test_cifar_resnet_rejects_bad_depth():
  with pytest.raises(ValueError, match='6n \\+ 2'):
    models.CifarResNet(21, rngs=nnx.Rngs(0))


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
  block = models.BasicBlock(16, 32, 2, rngs=nnx.Rngs(0))
  for bn in (block.bn1, block.bn2):  # residual branch zeroed: the block is relu(shortcut)
    bn.scale[...] = jnp.zeros_like(bn.scale[...])
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  y = block(x)
  assert y.shape == (2, 4, 4, 32)
  np.testing.assert_array_equal(y[..., :8], 0)
  np.testing.assert_array_equal(y[..., 24:], 0)
  np.testing.assert_allclose(y[..., 8:24], jax.nn.relu(x[:, ::2, ::2]), rtol=1e-6)


def test_models_start_in_inference_mode_and_toggle():
  model = models.SmallConvNet(batch_norm=True, dropout=0.5, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  np.testing.assert_array_equal(model(x), model(x))  # deterministic: dropout off, running stats
  model.train()
  assert model.dropout.deterministic is False and model.norms[0].use_running_average is False
  model.eval()
  assert model.dropout.deterministic is True and model.norms[0].use_running_average is True


def test_paper_convnet_layer_geometry():
  model = models.PaperConvNet(rngs=nnx.Rngs(0))
  assert model.conv1.kernel.shape == (7, 7, 3, 64)
  assert model.conv2.kernel.shape == (5, 5, 64, 256)
  assert [c.kernel.shape for c in (model.conv3, model.conv4, model.conv5)] == [(3, 3, 256, 256)] * 3
  assert model.full6.kernel.shape == (7 * 7 * 256, 4096)
  assert model.full8.kernel.shape == (4096, 1000)


@pytest.mark.parametrize('make,shape', [
    (lambda: models.SmallConvNet(3, stages=((4,), (6,)), hidden=(8,), rngs=nnx.Rngs(0)), (1, 12, 12, 3)),
    (lambda: models.CifarResNet(8, num_classes=3, rngs=nnx.Rngs(0)), (1, 8, 8, 3)),
])
def test_input_gradient_matches_finite_differences(make, shape):
  jax.config.update('jax_enable_x64', True)
  model = models.cast(make(), jnp.float64)
  x = jax.random.normal(jax.random.key(1), shape, jnp.float64)
  check_grads(lambda x: model(x)[:, 1], (x,), order=1, modes=('rev',), eps=1e-5)
