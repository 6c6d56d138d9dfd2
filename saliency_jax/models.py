"""Flax NNX ConvNets whose ReLUs are injectable.

Every model is called as `model(x, *, relu=jax.nn.relu)` with x float32 NHWC [B, H, W, C] and
returns UNNORMALISED class scores [B, K] (the paper's S_c; no softmax). Every rectification of
the network, residual blocks included, goes through `relu`, so that a backward rule passed there
(gradient, DeconvNet, guided backprop) applies to all of them.

Models are built in inference mode (dropout off, BatchNorm on running statistics); `train.py`
switches them with `model.train()` and back with `model.eval()`.

Every model carries `num_classes`, `in_channels` and `input_size` (the (H, W) it was built for,
or None when any size works), which the saliency functions use to check their input.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import layers

Relu = Callable[[jax.Array], jax.Array]


def cast(model, dtype):
  """A copy of `model` with its floating-point arrays in `dtype` (e.g. float64 for exact checks)."""
  as_dtype = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
  return jax.tree.map(as_dtype, model)


def _torch_padding(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding k // 2, as PyTorch's Conv2d(padding=k // 2); differs from 'SAME' at stride 2."""
  return ((k // 2, k // 2), (k // 2, k // 2))


class PaperConvNet(nnx.Module):
  """The paper's net: conv64 - conv256 - conv256 - conv256 - conv256 - full4096 - full4096 - full1000.

  The paper fixes only the widths (Sect. 1 of PAPER.md). The choices it leaves open follow
  Zeiler & Fergus (2013), the net the authors' layout mirrors:
    conv1  7x7 stride 2, 64 filters, ReLU, max-pool 3x3 stride 2
    conv2  5x5 stride 2, 256 filters, ReLU, max-pool 3x3 stride 2
    conv3-5  3x3 stride 1, 256 filters, ReLU; max-pool 3x3 stride 2 after conv5
    full6, full7  4096 units, ReLU, dropout 0.5; full8 num_classes units (the class scores).
  All convolutions and pools use 'SAME' padding, so the last feature map is ceil(size / 32)
  squared (7x7 at 224 px). No local response normalisation: it was dropped by later nets
  (VGG found it did not help) and it would add a non-ReLU non-linearity to the Sect. 4 analysis.
  """

  def __init__(self, num_classes: int = 1000, *, input_size: int = 224, in_channels: int = 3,
               dropout: float = 0.5, rngs: nnx.Rngs):
    self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, (input_size, input_size)
    self.conv1 = nnx.Conv(in_channels, 64, (7, 7), strides=2, padding='SAME', rngs=rngs)
    self.conv2 = nnx.Conv(64, 256, (5, 5), strides=2, padding='SAME', rngs=rngs)
    self.conv3 = nnx.Conv(256, 256, (3, 3), padding='SAME', rngs=rngs)
    self.conv4 = nnx.Conv(256, 256, (3, 3), padding='SAME', rngs=rngs)
    self.conv5 = nnx.Conv(256, 256, (3, 3), padding='SAME', rngs=rngs)
    side = -(-input_size // 32)
    self.full6 = nnx.Linear(side * side * 256, 4096, rngs=rngs)
    self.full7 = nnx.Linear(4096, 4096, rngs=rngs)
    self.full8 = nnx.Linear(4096, num_classes, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, deterministic=True, rngs=rngs)

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    pool = lambda h: layers.max_pool(h, 3, 2, 'SAME')
    x = pool(relu(self.conv1(x)))
    x = pool(relu(self.conv2(x)))
    x = relu(self.conv3(x))
    x = relu(self.conv4(x))
    x = pool(relu(self.conv5(x)))
    x = x.reshape(x.shape[0], -1)
    x = self.dropout(relu(self.full6(x)))
    x = self.dropout(relu(self.full7(x)))
    return self.full8(x)


class SmallConvNet(nnx.Module):
  """A VGG-style net for CPU: stages of 3x3 convs + ReLU, each stage ending in a 2x2 max-pool.

  Then global average pooling (so any input size works, and CAM applies), optional hidden dense
  layers with ReLU and dropout, and a linear classifier. With the defaults (16-32-64-128
  channels, one conv per stage, optional BatchNorm off) it trains at 64-96 px on 2 CPU cores in
  minutes.
  """

  def __init__(self, num_classes: int = 10, *,
               stages: Sequence[Sequence[int]] = ((16,), (32,), (64,), (128,)),
               hidden: Sequence[int] = (), in_channels: int = 3, batch_norm: bool = False,
               dropout: float = 0.0, rngs: nnx.Rngs):
    self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, None
    self.stage_sizes = tuple(len(s) for s in stages)
    convs, norms, c = [], [], in_channels
    for stage in stages:
      for width in stage:
        convs.append(nnx.Conv(c, width, (3, 3), padding='SAME', use_bias=not batch_norm, rngs=rngs))
        norms.append(nnx.BatchNorm(width, use_running_average=True, rngs=rngs) if batch_norm else None)
        c = width
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    dense = []
    for width in hidden:
      dense.append(nnx.Linear(c, width, rngs=rngs))
      c = width
    self.hidden = nnx.List(dense)
    self.dropout = nnx.Dropout(dropout, deterministic=True, rngs=rngs)
    self.classifier = nnx.Linear(c, num_classes, rngs=rngs)

  def features(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The last conv stage's ReLU output before its pool [B, h, w, C] (for CAM / Grad-CAM)."""
    i = 0
    for s, n in enumerate(self.stage_sizes):
      if s > 0:
        x = layers.max_pool(x, 2, 2, 'SAME')
      for _ in range(n):
        x = self.convs[i](x)
        if self.norms[i] is not None:
          x = self.norms[i](x)
        x = relu(x)
        i += 1
    return x

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    x = layers.max_pool(self.features(x, relu=relu), 2, 2, 'SAME')
    x = jnp.mean(x, axis=(1, 2))
    for dense in self.hidden:
      x = self.dropout(relu(dense(x)))
    return self.classifier(self.dropout(x))


# torchvision's VGG16 `cfg 'D'`: output channels of each conv, 'M' a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')


class VGG16(nnx.Module):
  """VGG16 in torchvision's layout: `features` (13 convs, 5 pools), `avgpool` to 7x7, `classifier`.

  `features[i]` holds the conv at torchvision's `features.{i}` index (ReLU and pool indices are
  None), and `classifier` the Linear layers at torchvision's indices 0, 3 and 6, so that state
  dict keys map one-to-one. The first classifier layer takes the 7x7x512 map flattened in NHWC
  order; `weights.load_torchvision_vgg16` permutes PyTorch's NCHW-order weights accordingly.
  Built for 224 px; other sizes (>= 32 px) work through the adaptive average pooling, as in torchvision.
  """

  def __init__(self, num_classes: int = 1000, *, in_channels: int = 3, dropout: float = 0.5,
               rngs: nnx.Rngs):
    self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, None
    features, c = [], in_channels
    for v in VGG16_LAYOUT:
      if v == 'M':
        features.append(None)
      else:
        features.extend([nnx.Conv(c, v, (3, 3), padding=_torch_padding(3), rngs=rngs), None])
        c = v
    self.features = nnx.List(features)
    self.classifier = nnx.List([
        nnx.Linear(512 * 7 * 7, 4096, rngs=rngs), None, None,
        nnx.Linear(4096, 4096, rngs=rngs), None, None,
        nnx.Linear(4096, num_classes, rngs=rngs)])
    self.dropout = nnx.Dropout(dropout, deterministic=True, rngs=rngs)

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    i = 0
    for v in VGG16_LAYOUT:
      if v == 'M':
        x = layers.max_pool(x, 2, 2)
        i += 1
      else:
        x = relu(self.features[i](x))
        i += 2
    x = layers.adaptive_avg_pool(x, 7).reshape(x.shape[0], -1)
    x = self.dropout(relu(self.classifier[0](x)))
    x = self.dropout(relu(self.classifier[3](x)))
    return self.classifier[6](x)


class BasicBlock(nnx.Module):
  """CIFAR ResNet block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

  Shortcut "option A" (He et al. 2015, CIFAR): where the shape changes, the input is subsampled
  (every 2nd pixel) and zero-padded in channels, planes // 4 on each side; no parameters.
  """

  def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
    self.stride, self.pad_channels = stride, (planes // 4 if (stride != 1 or in_planes != planes) else 0)
    self.conv1 = nnx.Conv(in_planes, planes, (3, 3), strides=stride, padding=_torch_padding(3),
                          use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(planes, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.conv2 = nnx.Conv(planes, planes, (3, 3), padding=_torch_padding(3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(planes, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    out = relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x
    if self.pad_channels:
      p = self.pad_channels
      shortcut = jnp.pad(x[:, ::self.stride, ::self.stride], ((0, 0), (0, 0), (0, 0), (p, p)))
    return relu(out + shortcut)


class CifarResNet(nnx.Module):
  """ResNet-{20, 32, 44, 56} for 32x32 CIFAR images (He et al. 2015, Sect. 4.2), akamaster layout.

  conv3x3(16)-BN-ReLU, three stages of n = (depth - 2) / 6 BasicBlocks with 16, 32, 64 channels
  (stride 2 at the first block of stages 2 and 3), global average pooling, Linear(64, classes).
  Attribute names follow the PyTorch state dict (`conv1`, `bn1`, `layer1[0].conv1`, `linear`).
  """

  def __init__(self, depth: int = 20, num_classes: int = 10, *, in_channels: int = 3, rngs: nnx.Rngs):
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f'CifarResNet depth must be 6n + 2 (20, 32, 44, 56, ...), got {depth}')
    n = (depth - 2) // 6
    self.depth, self.num_classes, self.in_channels, self.input_size = depth, num_classes, in_channels, None
    self.conv1 = nnx.Conv(in_channels, 16, (3, 3), padding=_torch_padding(3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)
    planes_in = 16
    for s, planes in enumerate((16, 32, 64)):
      blocks = []
      for b in range(n):
        blocks.append(BasicBlock(planes_in, planes, 2 if (s > 0 and b == 0) else 1, rngs=rngs))
        planes_in = planes
      setattr(self, f'layer{s + 1}', nnx.List(blocks))
    self.linear = nnx.Linear(64, num_classes, rngs=rngs)

  def features(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The last stage's output [B, h, w, 64] (for CAM / Grad-CAM)."""
    x = relu(self.bn1(self.conv1(x)))
    for stage in (self.layer1, self.layer2, self.layer3):
      for block in stage:
        x = block(x, relu=relu)
    return x

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    return self.linear(jnp.mean(self.features(x, relu=relu), axis=(1, 2)))
