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


# ----------------------------------------------------------------------------- Keras layer chains

KERAS_LAYERS = ('Activation', 'BatchNormalization', 'Conv2D', 'Dense', 'DepthwiseConv2D', 'Dropout',
                'Flatten', 'GlobalAveragePooling2D', 'InputLayer', 'MaxPooling2D', 'ReLU', 'Reshape',
                'ZeroPadding2D')
_SHAPE_ONLY = ('Dropout', 'Flatten', 'Reshape')  # may follow the final softmax


def _activation(name: str, relu: Relu, x: jax.Array) -> jax.Array:
  if name == 'linear':
    return x
  if name == 'relu':
    return relu(x)
  if name == 'relu6':  # the rule replaces the rectification at 0; the clip at 6 keeps its own derivative
    return jnp.minimum(relu(x), 6.0)
  raise ValueError(f'activation {name!r}')  # the constructor lets no other one through


class KerasNet(nnx.Module):
  """A chain of Keras layers, as a Keras / TensorFlow.js layers model lists them (e.g. MobileNet v1).

  Built by `weights.load_tfjs_layers_model`; `keras_layers` is the model config's layer list in order
  (each {'class_name', 'config', ...}), `shapes` {weight name: shape} the arrays it will receive
  (they give every layer's input and output widths), `input_shape` (H, W, C). Supported: the
  classes of `KERAS_LAYERS` with activations linear, relu, relu6 and a final softmax, which is
  dropped (the model returns the pre-softmax scores S_c, like every model here). Any other layer,
  activation or setting is refused with an error that names it.

  relu6 is `min(relu(x), 6)` with `relu` the injected rule: a backward rule (DeconvNet, guided)
  replaces the derivative of the rectification at 0, while the clip at 6 keeps its ordinary
  derivative (0 above 6) under every rule. Keras 'same' padding is XLA's 'SAME' (the extra pixel
  after, at stride 2).
  """

  def __init__(self, keras_layers: Sequence[dict], shapes: dict[str, tuple[int, ...]],
               input_shape: Sequence[int], *, rngs: nnx.Rngs):
    ops, mods = [], []
    keras_layers = [e for e in keras_layers if e['class_name'] != 'InputLayer']
    if not any(e['class_name'] in ('Conv2D', 'DepthwiseConv2D', 'Dense') for e in keras_layers):
      raise ValueError('the model has no Conv2D, DepthwiseConv2D or Dense layer: no class scores')
    softmax_at = None
    for layer in keras_layers:
      kind, c, name = layer['class_name'], layer.get('config', {}), layer.get('config', {}).get('name', '?')
      where = f'layer {name!r} ({kind})'
      if kind not in KERAS_LAYERS:
        raise ValueError(f'{where}: unsupported layer class {kind!r}; supported: {", ".join(KERAS_LAYERS)}')
      if c.get('data_format', 'channels_last') != 'channels_last':
        raise ValueError(f'{where}: data_format {c["data_format"]!r}; only channels_last is supported')
      if softmax_at is not None and kind not in _SHAPE_ONLY:
        raise ValueError(f'{where} follows the softmax of layer {softmax_at!r}: '
                         'only a final softmax is supported')
      act = (c.get('activation', 'linear') if kind in ('Activation', 'Conv2D', 'DepthwiseConv2D', 'Dense')
             else 'linear')
      if act == 'softmax':
        softmax_at, act = name, 'linear'  # dropped: the model returns the pre-softmax scores
      elif act not in ('linear', 'relu', 'relu6'):
        raise ValueError(f'{where}: unsupported activation {act!r} (linear, relu, relu6, or a final softmax)')
      module = None
      if kind in ('Conv2D', 'DepthwiseConv2D'):
        if c.get('padding', 'valid') not in ('same', 'valid'):
          raise ValueError(f'{where}: padding {c.get("padding")!r}')
        depthwise = kind == 'DepthwiseConv2D'
        kh, kw, cin, cout = shapes[f'{name}/depthwise_kernel' if depthwise else f'{name}/kernel']
        module = nnx.Conv(cin, cin * cout if depthwise else cout, (kh, kw),
                          strides=layers._pair(c.get('strides', 1)),
                          padding=c.get('padding', 'valid').upper(),
                          kernel_dilation=layers._pair(c.get('dilation_rate', 1)),
                          feature_group_count=cin if depthwise else 1, use_bias=bool(c.get('use_bias', True)),
                          rngs=rngs)
        ops.append(('depthwise' if depthwise else 'conv', act))
      elif kind == 'Dense':
        cin, cout = shapes[f'{name}/kernel']
        module = nnx.Linear(cin, cout, use_bias=bool(c.get('use_bias', True)), rngs=rngs)
        ops.append(('dense', act))
      elif kind == 'BatchNormalization':
        if c.get('axis', -1) not in (-1, 3, [3], [-1]):
          raise ValueError(f'{where}: axis {c.get("axis")}; only the channel axis (-1) is supported')
        width = shapes[f'{name}/moving_mean'][0]
        module = nnx.BatchNorm(width, epsilon=float(c.get('epsilon', 1e-3)),
                               use_scale=bool(c.get('scale', True)), use_bias=bool(c.get('center', True)),
                               use_running_average=True, rngs=rngs)
        ops.append(('batch_norm', None))
      elif kind == 'Activation':
        ops.append(('activation', act))
      elif kind == 'ReLU':
        if float(c.get('negative_slope') or 0) != 0 or float(c.get('threshold') or 0) != 0:
          raise ValueError(f'{where}: negative_slope / threshold other than 0 are not supported')
        ops.append(('relu', None if c.get('max_value') is None else float(c['max_value'])))
      elif kind == 'ZeroPadding2D':
        p = c.get('padding', 1)
        p = ((p, p), (p, p)) if isinstance(p, int) else tuple(layers._pair(q) for q in p)
        ops.append(('pad', p))
      elif kind == 'MaxPooling2D':
        window = layers._pair(c.get('pool_size', 2))
        ops.append(('max_pool', (window, layers._pair(c.get('strides') or window),
                                 c.get('padding', 'valid').upper())))
      elif kind == 'GlobalAveragePooling2D':
        ops.append(('global_average', None))
      elif kind == 'Reshape':
        ops.append(('reshape', tuple(int(d) for d in c['target_shape'])))
      elif kind == 'Flatten':
        ops.append(('flatten', None))
      elif kind == 'Dropout':  # inference: the identity
        ops.append(('identity', None))
      mods.append(module)
    self.ops = tuple(ops)
    self.names = tuple(layer.get('config', {}).get('name', '?') for layer in keras_layers)
    self.blocks = nnx.List(mods)
    h, w, self.in_channels = (int(d) for d in input_shape)
    # Global pooling makes any input size work; a Flatten ties the net to the size it was built for.
    self.input_size = (h, w) if any(op[0] == 'flatten' for op in ops) else None
    last = [m for m in mods if isinstance(m, (nnx.Conv, nnx.Linear))][-1]
    self.num_classes = int(last.out_features)

  def check(self, image_shape: Sequence[int]) -> None:
    """Traces one [H, W, C] image through the layers (shapes only); a layer whose weights do not fit
    what reaches it is a ValueError naming it."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    for name, op, module in zip(self.names, self.ops, self.blocks):
      if module is not None:
        width = module.num_features if isinstance(module, nnx.BatchNorm) else module.in_features
        got = x.shape[-1]
        if got != width:
          raise ValueError(f'layer {name!r}: its weights expect {width} input features, the layers before '
                           f'it give {got} (shape {x.shape[1:]})')
      try:
        x = jax.eval_shape(lambda v, o=op, m=module: self._apply(o, m, v, jax.nn.relu), x)
      except (TypeError, ValueError) as e:
        raise ValueError(f'layer {name!r} cannot take an input of shape {x.shape[1:]}: {e}') from e
    if len(x.shape) != 2:
      raise ValueError(f'the layers end in shape {x.shape[1:]} per image; class scores need one axis')

  def __call__(self, x: jax.Array, *, relu: Relu = jax.nn.relu) -> jax.Array:
    for op, module in zip(self.ops, self.blocks):
      x = self._apply(op, module, x, relu)
    if x.ndim != 2:
      raise ValueError(f'the layers end in shape {x.shape[1:]} per image; class scores need one axis')
    return x

  @staticmethod
  def _apply(op, module, x: jax.Array, relu: Relu) -> jax.Array:
    kind, arg = op
    if kind == 'conv' and module.kernel_size == (1, 1) and layers._pair(module.strides) == (1, 1):
      # a 1x1 convolution is a matrix product over channels: as einsum, faster on XLA:CPU
      y = jnp.einsum('bhwc,cd->bhwd', x, module.kernel[0, 0])
      x = _activation(arg, relu, y if module.bias is None else y + module.bias[...])
    elif kind in ('conv', 'dense'):
      x = _activation(arg, relu, module(x))
    elif kind == 'depthwise':  # the same function as module(x), faster (`layers.depthwise_conv`)
      y = layers.depthwise_conv(x, module.kernel[...], module.strides, module.padding, module.kernel_dilation)
      x = _activation(arg, relu, y if module.bias is None else y + module.bias[...])
    elif kind == 'batch_norm':
      x = module(x)
    elif kind == 'activation':
      x = _activation(arg, relu, x)
    elif kind == 'relu':
      x = relu(x) if arg is None else jnp.minimum(relu(x), arg)
    elif kind == 'pad':
      x = jnp.pad(x, ((0, 0), *arg, (0, 0)))
    elif kind == 'max_pool':
      x = layers.max_pool(x, *arg)
    elif kind == 'global_average':
      x = jnp.mean(x, axis=(1, 2))
    elif kind == 'reshape':
      x = x.reshape(x.shape[0], *arg)
    elif kind == 'flatten':
      x = x.reshape(x.shape[0], -1)
    return x
