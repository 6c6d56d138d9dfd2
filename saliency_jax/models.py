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

from saliency_jax import graph
from saliency_jax.graph import Step

Relu = Callable[[jax.Array], jax.Array]


def cast(model, dtype):
  """A copy of a model with its floating-point arrays in `dtype` (e.g. float64 for exact checks).

  Args:
    model: an NNX model (or any pytree).
    dtype: the floating-point dtype.

  Returns:
    The copy.
  """
  def as_dtype(a):
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
  return jax.tree.map(as_dtype, model)


def reinitialised(model, seed: int):
  """A copy of a model with fresh weights from `seed`.

  Every convolution and dense kernel drawn anew (LeCun normal, Flax's default), biases 0, BatchNorm
  scales 1 and offsets 0 (running statistics kept).

  Args:
    model: an NNX model.
    seed: the initialisation's seed.

  Returns:
    The copy.
  """
  model, rngs = nnx.clone(model), nnx.Rngs(seed)
  init = nnx.initializers.lecun_normal()
  for _, module in nnx.iter_modules(model):
    if isinstance(module, (nnx.Conv, nnx.Linear)):
      module.kernel[...] = init(rngs.params(), module.kernel.shape, module.kernel.dtype)
    if isinstance(module, (nnx.Conv, nnx.Linear, nnx.BatchNorm)) and module.bias is not None:
      module.bias[...] = jnp.zeros_like(module.bias[...])
    if isinstance(module, nnx.BatchNorm) and module.scale is not None:
      module.scale[...] = jnp.ones_like(module.scale[...])
  return model


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

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    out = []
    for i in range(1, 6):
      out += [Step(f'conv{i}', 'conv', getattr(self, f'conv{i}')), Step(f'relu{i}', 'relu')]
      if i in (1, 2, 5):
        out.append(graph.max_pool(f'pool{i}', 3, 2, 'SAME'))
    drop = self.dropout
    return out + [Step('flatten', 'flatten'),
                  Step('full6', 'dense', self.full6), Step('relu6', 'relu'), Step('drop6', 'dropout', drop),
                  Step('full7', 'dense', self.full7), Step('relu7', 'relu'), Step('drop7', 'dropout', drop),
                  Step('full8', 'dense', self.full8)]

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images, every rectification through `relu`.

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: the ReLU (or a backward rule of `saliency_jax.deconvnet`).

    Returns:
      Unnormalised scores [B, K].
    """
    return graph.run(self.steps(), x, relu=relu)

  def fresh(self, seed: int) -> 'PaperConvNet':
    """The same architecture, initialised from `seed`, in inference mode.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    return PaperConvNet(self.num_classes, input_size=self.input_size[0], in_channels=self.in_channels,
                        dropout=self.dropout.rate, rngs=nnx.Rngs(seed))


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

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    out, i = [], 0
    for s, n in enumerate(self.stage_sizes):
      if s > 0:
        out.append(graph.max_pool(f'pool{s}', 2, 2, 'SAME'))
      for _ in range(n):
        out.append(Step(f'conv{i + 1}', 'conv', self.convs[i]))
        if self.norms[i] is not None:
          out.append(Step(f'bn{i + 1}', 'batch_norm', self.norms[i]))
        out.append(Step(f'relu{i + 1}', 'relu'))
        i += 1
    out += [graph.max_pool(f'pool{len(self.stage_sizes)}', 2, 2, 'SAME'), Step('mean', 'mean')]
    for j, dense in enumerate(self.hidden):
      out += [Step(f'hidden{j + 1}', 'dense', dense), Step(f'hidden{j + 1}_relu', 'relu'),
              Step(f'hidden{j + 1}_dropout', 'dropout', self.dropout)]
    return out + [Step('dropout', 'dropout', self.dropout), Step('classifier', 'dense', self.classifier)]

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images, every rectification through `relu`.

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: the ReLU (or a backward rule of `saliency_jax.deconvnet`).

    Returns:
      Unnormalised scores [B, K].
    """
    return graph.run(self.steps(), x, relu=relu)

  def fresh(self, seed: int) -> 'SmallConvNet':
    """The same architecture, initialised from `seed`, in inference mode.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    widths, stages, i = [conv.out_features for conv in self.convs], [], 0
    for n in self.stage_sizes:
      stages.append(tuple(widths[i:i + n]))
      i += n
    return SmallConvNet(self.num_classes, stages=tuple(stages), hidden=[d.out_features for d in self.hidden],
                        in_channels=self.in_channels, batch_norm=self.norms[0] is not None,
                        dropout=self.dropout.rate, rngs=nnx.Rngs(seed))


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

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    out, i = [], 0
    for v in VGG16_LAYOUT:
      if v == 'M':
        out.append(graph.max_pool(f'features.{i}', 2, 2))
        i += 1
      else:
        out += [Step(f'features.{i}', 'conv', self.features[i]), Step(f'features.{i + 1}', 'relu')]
        i += 2
    c = self.classifier
    return out + [Step('avgpool', 'adaptive_avg_pool', options={'size': (7, 7)}), Step('flatten', 'flatten'),
                  Step('classifier.0', 'dense', c[0]), Step('classifier.1', 'relu'),
                  Step('classifier.2', 'dropout', self.dropout),
                  Step('classifier.3', 'dense', c[3]), Step('classifier.4', 'relu'),
                  Step('classifier.5', 'dropout', self.dropout),
                  Step('classifier.6', 'dense', c[6])]

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images, every rectification through `relu`.

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: the ReLU (or a backward rule of `saliency_jax.deconvnet`).

    Returns:
      Unnormalised scores [B, K].
    """
    return graph.run(self.steps(), x, relu=relu)

  def fresh(self, seed: int) -> 'VGG16':
    """The same architecture, initialised from `seed`, in inference mode.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    return VGG16(self.num_classes, in_channels=self.in_channels, dropout=self.dropout.rate,
                 rngs=nnx.Rngs(seed))


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

  def step(self, name: str) -> Step:
    """The block as one 'block' step; its last inner step, the ReLU after the sum, is `{name}.relu`.

    Args:
      name: the step's name.

    Returns:
      The `graph.Step`.
    """
    inner = (Step(f'{name}.conv1', 'conv', self.conv1), Step(f'{name}.bn1', 'batch_norm', self.bn1),
             Step(f'{name}.relu1', 'relu'), Step(f'{name}.conv2', 'conv', self.conv2),
             Step(f'{name}.bn2', 'batch_norm', self.bn2), Step(f'{name}.relu', 'relu'))
    return Step(name, 'block', self, {'stride': self.stride, 'pad_channels': self.pad_channels}, inner)

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The block's output: the inner steps plus the shortcut, then the ReLU.

    Args:
      x: [B, H, W, C].
      relu: the ReLU (rule).

    Returns:
      [B, H / stride, W / stride, planes].
    """
    return graph.residual(self.step('block'), x, relu)


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

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    out = [Step('conv1', 'conv', self.conv1), Step('bn1', 'batch_norm', self.bn1), Step('relu1', 'relu')]
    for s in (1, 2, 3):
      out += [block.step(f'layer{s}.{b}') for b, block in enumerate(getattr(self, f'layer{s}'))]
    return out + [Step('mean', 'mean'), Step('linear', 'dense', self.linear)]

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images, every rectification through `relu`.

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: the ReLU (or a backward rule of `saliency_jax.deconvnet`).

    Returns:
      Unnormalised scores [B, K].
    """
    return graph.run(self.steps(), x, relu=relu)

  def fresh(self, seed: int) -> 'CifarResNet':
    """The same architecture, initialised from `seed`, in inference mode.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    return CifarResNet(self.depth, self.num_classes, in_channels=self.in_channels, rngs=nnx.Rngs(seed))


# ----------------------------------------------------------------------------- Vision Transformer


class Tokens(nnx.Module):
  """A ViT's token embedding: patches by a strided convolution, a class token first, position embeddings.

  Args:
    in_channels: C of the images.
    dim: the tokens' width D.
    patch_size: the patches' side in pixels.
    num_patches: h x w, the patch grid's size.
    rngs: the NNX random streams.
  """

  def __init__(self, in_channels: int, dim: int, patch_size: int, num_patches: int, *, rngs: nnx.Rngs):
    self.patches = nnx.Conv(in_channels, dim, (patch_size, patch_size), strides=patch_size, padding='VALID',
                            rngs=rngs)
    self.cls = nnx.Param(jnp.zeros((1, 1, dim)))
    self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, num_patches + 1, dim)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """The tokens of images.

    Args:
      x: [B, H, W, C].

    Returns:
      [B, 1 + h w, D]: the class token, then the patches row by row.
    """
    p = self.patches(x)
    p = p.reshape(p.shape[0], -1, p.shape[-1])
    cls = jnp.broadcast_to(self.cls[...], (p.shape[0], 1, p.shape[-1]))
    return jnp.concatenate([cls, p], axis=1) + self.position[...]


class EncoderBlock(nnx.Module):
  """A pre-norm transformer encoder block: x + attention(LN(x)), then + MLP(LN(x)) with GELU.

  Args:
    dim: the tokens' width D.
    heads: attention heads.
    mlp_dim: the MLP's hidden width.
    rngs: the NNX random streams.
  """

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.norm1, self.norm2 = nnx.LayerNorm(dim, rngs=rngs), nnx.LayerNorm(dim, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
    self.mlp1, self.mlp2 = nnx.Linear(dim, mlp_dim, rngs=rngs), nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """The block's output.

    Args:
      x: [B, T, D] tokens.

    Returns:
      [B, T, D].
    """
    x = x + self.attention(self.norm1(x))
    return x + self.mlp2(jax.nn.gelu(self.mlp1(self.norm2(x))))


class ViT(nnx.Module):
  """A Vision Transformer (Dosovitskiy et al. 2021): patch tokens and a class token, encoder blocks, a head.

  Its layers (`steps`): 'tokens', 'block1' ... 'block<depth>' (each [B, 1 + h w, D]), 'norm', 'cls' (the
  class token) and 'head'. The layer methods (Grad-CAM and the CAM family) read a block's tokens as a
  [B, h, w, D] map: `token_grid` tells them to drop the class token and lay the patches on their grid,
  so no reshape function is needed. It has no rectification (GELU): a ReLU rule on it is refused.

  Args:
    num_classes: K.
    image_size: the images' side H = W.
    patch_size: the patches' side.
    dim: the tokens' width.
    depth: encoder blocks.
    heads: attention heads.
    mlp_dim: the MLPs' hidden width.
    in_channels: C of the images.
    rngs: the NNX random streams.
  """

  def __init__(self, num_classes: int, *, image_size: int = 32, patch_size: int = 4, dim: int = 64,
               depth: int = 4, heads: int = 4, mlp_dim: int = 128, in_channels: int = 3, rngs: nnx.Rngs):
    if image_size % patch_size:
      raise ValueError(f'image_size {image_size} is not a multiple of patch_size {patch_size}')
    self.num_classes, self.in_channels = num_classes, in_channels
    self.input_size = (image_size, image_size)
    self.config = dict(image_size=image_size, patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                       mlp_dim=mlp_dim, in_channels=in_channels)
    side = image_size // patch_size
    self.token_grid = (1, side, side)  # (prefix tokens, h, w)
    self.tokens = Tokens(in_channels, dim, patch_size, side * side, rngs=rngs)
    self.blocks = nnx.List([EncoderBlock(dim, heads, mlp_dim, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    return ([Step('tokens', 'module', self.tokens)]
            + [Step(f'block{i + 1}', 'module', b) for i, b in enumerate(self.blocks)]
            + [Step('norm', 'layer_norm', self.norm), Step('cls', 'token', options={'index': 0}),
               Step('head', 'dense', self.head)])

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images (no rectification: `relu` is never called).

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: accepted for the common signature; a ViT has no ReLU.

    Returns:
      Unnormalised scores [B, K].
    """
    return graph.run(self.steps(), x, relu=relu)

  def fresh(self, seed: int) -> 'ViT':
    """The same architecture, initialised from `seed`, in inference mode.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    return ViT(self.num_classes, **self.config, rngs=nnx.Rngs(seed))


# ----------------------------------------------------------------------------- Keras layer chains


class KerasNet(nnx.Module):
  """A chain of Keras layers, as a Keras / TensorFlow.js layers model lists them (e.g. MobileNet v1).

  Built by `weights.load_tfjs_layers_model`, which translates the Keras layer list
  (`weights.keras_layout`) into `layout` (per step: layer name, step name, kind, options, module
  index) and `modules` (per Keras layer its nnx module or None); `input_shape` is (H, W, C).

  Its layer graph (`steps`) has one step per Keras layer, named as in Keras, except that a layer
  with an activation becomes its linear part (`{name}/linear`) and the activation, and relu6 is a
  rectification (`{name}/relu`) followed by a clip at 6 (`{name}`): the Keras name is always the
  layer's output. A backward rule (DeconvNet, guided) replaces the derivative of the rectification
  at 0, while the clip at 6 keeps its ordinary derivative (0 above 6) under every rule. Keras
  'same' padding is XLA's 'SAME' (the extra pixel after, at stride 2).
  """

  def __init__(self, layout: tuple, modules: Sequence, input_shape: Sequence[int]):
    mods = list(modules)
    self.layout = tuple(layout)
    self.blocks = nnx.List(mods)
    h, w, self.in_channels = (int(d) for d in input_shape)
    # Global pooling makes any input size work; a Flatten ties the net to the size it was built for.
    self.input_size = (h, w) if any(entry[2] == 'flatten' for entry in layout) else None
    last = [m for m in mods if isinstance(m, (nnx.Conv, nnx.Linear))][-1]
    self.num_classes = int(last.out_features)

  def steps(self) -> list[Step]:
    """The layers `__call__` runs, in forward order (`saliency_jax.graph`).

    Returns:
      The list of `graph.Step`s; the last gives the scores.
    """
    return [Step(step_name, kind, self.blocks[i] if i >= 0 else None, dict(options) or None)
            for _, step_name, kind, options, i in self.layout]

  def fresh(self, seed: int) -> 'KerasNet':
    """The same layers with fresh weights (`reinitialised`), from `seed`.

    Args:
      seed: the initialisation's seed.

    Returns:
      The fresh model.
    """
    return reinitialised(self, seed)

  def check(self, image_shape: Sequence[int]) -> None:
    """Traces one image through the layers (shapes only), refusing weights that do not fit.

    Args:
      image_shape: (H, W, C) of one image.

    Raises:
      ValueError: naming a layer whose weights do not fit what reaches it, or layers that do not end in one
        axis of class scores.
    """
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    for (name, *_), step in zip(self.layout, self.steps()):
      module = step.module
      if module is not None:
        width = module.num_features if isinstance(module, nnx.BatchNorm) else module.in_features
        got = x.shape[-1]
        if got != width:
          raise ValueError(f'layer {name!r}: its weights expect {width} input features, the layers before '
                           f'it give {got} (shape {x.shape[1:]})')
      try:
        x = jax.eval_shape(lambda v, s=step: graph.apply(s, v, jax.nn.relu), x)
      except (TypeError, ValueError) as e:
        raise ValueError(f'layer {name!r} cannot take an input of shape {x.shape[1:]}: {e}') from e
    if len(x.shape) != 2:
      raise ValueError(f'the layers end in shape {x.shape[1:]} per image; class scores need one axis')

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    """The class scores of images, every rectification through `relu`.

    Args:
      x: float [B, H, W, C], preprocessed as the model expects.
      relu: the ReLU (or a backward rule of `saliency_jax.deconvnet`).

    Returns:
      Unnormalised scores [B, K].

    Raises:
      ValueError: layers that do not end in one axis of class scores.
    """
    x = graph.run(self.steps(), x, relu=relu)
    if x.ndim != 2:
      raise ValueError(f'the layers end in shape {x.shape[1:]} per image; class scores need one axis')
    return x
