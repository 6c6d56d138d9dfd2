"""PyTorch twins of the models, for cross-checks and benchmarks (needs the `torch` extra).

Written from the architectures' descriptions (akamaster's CIFAR ResNet, torchvision's VGG16
layout), independently of the NNX code; `weights` loads their state dicts into the NNX models,
so a twin with any weights gives the reference the JAX model must match.

Like the NNX models, every twin takes `forward(x, relu=F.relu)`: the ReLU backward rules of
`deconvnet` have PyTorch counterparts here (`DeconvNetReLU`, `GuidedReLU`, written as
`torch.autograd.Function`s), an independent reference for the DeconvNet and guided maps.
"""

import torch
import torch.nn.functional as F
from torch import nn

from saliency_jax import models


class DeconvNetReLU(torch.autograd.Function):
  """relu forward; backward g * 1(g > 0) (Zeiler & Fergus)."""

  @staticmethod
  def forward(ctx, x):
    """relu(x).

    Args:
      ctx: the autograd context.
      x: the input.

    Returns:
      x clamped at 0.
    """
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    """The DeconvNet's backward rule: the signal rectified, g * 1(g > 0).

    Args:
      ctx: the autograd context.
      g: the signal coming back.

    Returns:
      g clamped at 0.
    """
    return g.clamp(min=0)


class GuidedReLU(torch.autograd.Function):
  """relu forward; backward g * 1(x > 0) * 1(g > 0) (guided backpropagation)."""

  @staticmethod
  def forward(ctx, x):
    """relu(x), saving x for the backward pass.

    Args:
      ctx: the autograd context.
      x: the input.

    Returns:
      x clamped at 0.
    """
    ctx.save_for_backward(x)
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    """Guided backpropagation's backward rule: g * 1(x > 0) * 1(g > 0).

    Args:
      ctx: the autograd context (holds x).
      g: the signal coming back.

    Returns:
      The gated signal.
    """
    (x,) = ctx.saved_tensors
    return g * ((x > 0) & (g > 0)).to(g.dtype)


RELUS = {'gradient': F.relu, 'deconvnet': DeconvNetReLU.apply, 'guided': GuidedReLU.apply}


class TorchBasicBlock(nn.Module):
  """The CIFAR ResNet block in PyTorch: conv3x3-BN-ReLU-conv3x3-BN, the option-A shortcut, then ReLU.

  Args:
    in_planes: input channels.
    planes: output channels.
    stride: the first convolution's stride.
  """
  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

  def forward(self, x, relu=F.relu):
    """The block: conv-BN-ReLU-conv-BN plus the option-A shortcut, then ReLU.

    Args:
      x: NCHW float images.
      relu: the ReLU function (a `torch.autograd.Function`'s apply for a backward rule).

    Returns:
      The block's output, NCHW.
    """
    out = relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
    return relu(out + shortcut)


class TorchCifarResNet(nn.Module):
  """akamaster's CIFAR ResNet in PyTorch, the twin of `models.CifarResNet` (the same state dict keys).

  Args:
    depth: 20, 32, 44 or 56.
    num_classes: K.
  """
  def __init__(self, depth: int = 20, num_classes: int = 10):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    in_planes = 16
    for s, planes in enumerate((16, 32, 64)):
      blocks = []
      for b in range(n):
        blocks.append(TorchBasicBlock(in_planes, planes, 2 if (s > 0 and b == 0) else 1))
        in_planes = planes
      setattr(self, f'layer{s + 1}', nn.Sequential(*blocks))
    self.linear = nn.Linear(64, num_classes)

  def forward(self, x, relu=F.relu):
    """The CIFAR ResNet forward pass.

    Args:
      x: NCHW float images.
      relu: the ReLU function (a `torch.autograd.Function`'s apply for a backward rule).

    Returns:
      The scores [B, K].
    """
    out = relu(self.bn1(self.conv1(x)))
    for block in (*self.layer1, *self.layer2, *self.layer3):
      out = block(out, relu)
    out = F.avg_pool2d(out, out.size()[3])
    return self.linear(out.flatten(1))


class TorchVGG16(nn.Module):
  """torchvision's vgg16 layout: features / avgpool / classifier, same state-dict keys."""

  def __init__(self, num_classes: int = 1000):
    super().__init__()
    layers, c = [], 3
    for v in models.VGG16_LAYOUT:
      if v == 'M':
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
        c = v
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, num_classes))

  def forward(self, x, relu=F.relu):
    """Torchvision's VGG16 forward pass.

    Args:
      x: NCHW float images.
      relu: the ReLU function (a `torch.autograd.Function`'s apply for a backward rule).

    Returns:
      The scores [B, K].
    """
    def run(layer, h):
      return relu(h) if isinstance(layer, nn.ReLU) else layer(h)
    for layer in self.features:
      x = run(layer, x)
    x = torch.flatten(self.avgpool(x), 1)
    for layer in self.classifier:
      x = run(layer, x)
    return x


class TorchSmallConvNet(nn.Module):
  """SmallConvNet's architecture (no BatchNorm, no hidden layers); keys as `weights.small_convnet_entries`.

  Args:
    num_classes: K.
    stages: the convolutions' widths, stage by stage.
    pool_modules: max-pooling as `nn.MaxPool2d` modules, which Captum's LRP gives the original
      activations (with functional max-pooling its second, modified forward pass picks other winners);
      False: functional, which Captum's DeepLift propagates by the gradient, as the package does.
  """

  def __init__(self, num_classes: int = 10, stages=((16,), (32,), (64,), (128,)), pool_modules: bool = False):
    super().__init__()
    self.stage_sizes = [len(s) for s in stages]
    convs, c = [], 3
    for stage in stages:
      for width in stage:
        convs.append(nn.Conv2d(c, width, 3, padding=1))
        c = width
    self.convs = nn.ModuleList(convs)
    # ReLUs and the average as modules (no weights: the state dict is unchanged), one per use, so that
    # Captum's DeepLift / LRP and Zennit, which act on modules only, see them; the max-pooling stays
    # functional (Captum's DeepLift gives an nn.MaxPool2d a rule of its own)
    self.relus = nn.ModuleList(nn.ReLU() for _ in convs)
    self.pools = nn.ModuleList(nn.MaxPool2d(2, 2, ceil_mode=True) for _ in stages) if pool_modules else None
    self.average = nn.AdaptiveAvgPool2d(1)
    self.classifier = nn.Linear(c, num_classes)

  def forward(self, x, relu=F.relu):
    """The SmallConvNet forward pass (PyTorch's layout of the same weights).

    Args:
      x: NCHW float images.
      relu: the ReLU function (a `torch.autograd.Function`'s apply for a backward rule).

    Returns:
      The scores [B, K].
    """
    def pool(x, s):
      return self.pools[s](x) if self.pools is not None else F.max_pool2d(x, 2, 2, ceil_mode=True)
    i = 0
    for s, n in enumerate(self.stage_sizes):
      if s > 0:
        x = pool(x, s - 1)
      for _ in range(n):
        x = self.convs[i](x)
        x = self.relus[i](x) if relu is F.relu else relu(x)
        i += 1
    x = pool(x, len(self.stage_sizes) - 1)
    return self.classifier(self.average(x).flatten(1))


def _tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
  """TensorFlow's 'same' padding of one axis: total padding split with the extra pixel after."""
  effective = (kernel - 1) * dilation + 1
  total = max((-(-size // stride) - 1) * stride + effective - size, 0)
  return total // 2, total - total // 2


class TorchKerasChain(nn.Module):
  """A chain of Keras layers (a TensorFlow.js layers model's config) run in PyTorch, NCHW.

  Built from the raw layer list and weight arrays (`weights.read_tfjs_layers_model`); a final softmax is
  dropped.

  Written from Keras' definitions of the layers (TensorFlow 'same' padding, depthwise kernels
  [kh, kw, C, m], channels-last Reshape / Flatten), independently of `models.KerasNet`.
  `forward(x, relu=F.relu)` takes NCHW input and returns pre-softmax scores; with `stop` (a Keras
  layer name) it returns that layer's output instead, and with `start` it takes the output of that
  layer and runs the layers after it (for layer methods such as Grad-CAM).
  """

  def __init__(self, keras_layers, arrays):
    super().__init__()
    self.layers = [(e['class_name'], e['config']) for e in keras_layers if e['class_name'] != 'InputLayer']
    def t(a):
      return torch.from_numpy(a.copy())
    self.params = nn.ParameterDict()
    for kind, c in self.layers:
      name = c['name']
      if kind == 'Conv2D':
        self.params[f'{name}:w'] = nn.Parameter(t(arrays[f'{name}/kernel'].transpose(3, 2, 0, 1)))
      elif kind == 'DepthwiseConv2D':
        kh, kw, ch, m = arrays[f'{name}/depthwise_kernel'].shape
        w = arrays[f'{name}/depthwise_kernel'].transpose(2, 3, 0, 1).reshape(ch * m, 1, kh, kw)
        self.params[f'{name}:w'] = nn.Parameter(t(w))
      elif kind == 'Dense':
        self.params[f'{name}:w'] = nn.Parameter(t(arrays[f'{name}/kernel']))
      elif kind == 'BatchNormalization':
        for key in ('gamma', 'beta', 'moving_mean', 'moving_variance'):
          if f'{name}/{key}' in arrays:
            self.params[f'{name}:{key}'] = nn.Parameter(t(arrays[f'{name}/{key}']), requires_grad=False)
      if kind in ('Conv2D', 'DepthwiseConv2D', 'Dense') and c.get('use_bias', True):
        self.params[f'{name}:b'] = nn.Parameter(t(arrays[f'{name}/bias']))

  def _activation(self, name, x, relu):
    if name in ('linear', 'softmax'):  # the final softmax: dropped
      return x
    if name == 'relu':
      return relu(x)
    if name == 'relu6':
      return torch.clamp(relu(x), max=6.0)
    raise ValueError(f'activation {name!r}')

  def _conv(self, x, c, weight, bias, groups):
    kh, kw = weight.shape[2:]
    sh, sw = (c.get('strides') or (1, 1))
    dh, dw = (c.get('dilation_rate') or (1, 1))
    if c.get('padding', 'valid') == 'same':
      top, bottom = _tf_same_padding(x.shape[2], kh, sh, dh)
      left, right = _tf_same_padding(x.shape[3], kw, sw, dw)
      x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, bias, stride=(sh, sw), dilation=(dh, dw), groups=groups)

  def forward(self, x, relu=F.relu, *, start=None, stop=None):
    """The Keras layers run in PyTorch, from `start` to `stop`.

    Args:
      x: NCHW input (or, with `start`, that layer's output).
      relu: the ReLU function of the rectifications (relu6's clip keeps its own derivative).
      start: run the layers after this Keras layer's name (None: from the input).
      stop: return this Keras layer's output (None: the pre-softmax scores).

    Returns:
      The scores [B, K], or the `stop` layer's output.

    Raises:
      ValueError: a layer class the chain does not support.
    """
    p = self.params
    names = [c['name'] for _, c in self.layers]
    first = 0 if start is None else names.index(start) + 1
    last = len(names) if stop is None else names.index(stop) + 1
    for kind, c in self.layers[first:last]:
      name, b = c['name'], self.params[f'{c["name"]}:b'] if f'{c["name"]}:b' in self.params else None
      if kind == 'Conv2D':
        x = self._activation(c.get('activation', 'linear'), self._conv(x, c, p[f'{name}:w'], b, 1), relu)
      elif kind == 'DepthwiseConv2D':
        x = self._activation(c.get('activation', 'linear'), self._conv(x, c, p[f'{name}:w'], b, x.shape[1]),
                             relu)
      elif kind == 'Dense':
        x = self._activation(c.get('activation', 'linear'), x @ p[f'{name}:w'] + (0 if b is None else b),
                             relu)
      elif kind == 'BatchNormalization':
        mean, var, gamma, beta = (p[f'{name}:{key}'] if f'{name}:{key}' in p else None
                                  for key in ('moving_mean', 'moving_variance', 'gamma', 'beta'))
        x = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=c.get('epsilon', 1e-3))
      elif kind == 'Activation':
        x = self._activation(c['activation'], x, relu)
      elif kind == 'ReLU':
        x = relu(x) if c.get('max_value') is None else torch.clamp(relu(x), max=float(c['max_value']))
      elif kind == 'ZeroPadding2D':
        (top, bottom), (left, right) = c['padding']
        x = F.pad(x, (left, right, top, bottom))
      elif kind == 'MaxPooling2D':
        kh, kw = c['pool_size']
        sh, sw = c.get('strides') or c['pool_size']
        if c.get('padding', 'valid') == 'same':
          top, bottom = _tf_same_padding(x.shape[2], kh, sh)
          left, right = _tf_same_padding(x.shape[3], kw, sw)
          x = F.pad(x, (left, right, top, bottom), value=float('-inf'))
        x = F.max_pool2d(x, (kh, kw), (sh, sw))
      elif kind == 'GlobalAveragePooling2D':
        x = x.mean(dim=(2, 3))
      elif kind in ('Reshape', 'Flatten'):  # channels-last semantics
        if x.dim() == 4:
          x = x.permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], *c['target_shape']) if kind == 'Reshape' else x.reshape(x.shape[0], -1)
        if x.dim() == 4:
          x = x.permute(0, 3, 1, 2)
      elif kind != 'Dropout':
        raise ValueError(f'unsupported layer {kind}')
    return x


# ----------------------------------------------------------------------------- CAM family and RISE twins


def cam_family_maps(features, head, x, labels, method: str):
  """A CAM of pytorch-grad-cam 1.5's family by its formulas, on PyTorch callables, before upsampling.

  Written from pytorch-grad-cam's definitions (`grad_cam_plusplus.py`, `xgrad_cam.py`, `layer_cam.py`,
  `hirescam.py`, `eigen_cam.py` with `svd_on_activations.py`, `score_cam.py`, `ablation_cam.py`; Grad-CAM
  and CAM's weights too), NCHW, independently of `attribution.cam_family`. Eigen-CAM's sign follows the
  package's convention (positive correlation with the channel-mean map); Ablation-CAM sets a channel to 0
  (a ReLU layer) or to the image's minimum less 1e7.

  Args:
    features: x [B, C, H, W] -> the layer's activations [B, K, h, w].
    head: activations -> scores [B, classes].
    x: a float tensor [B, C, H, W].
    labels: int [B].
    method: 'grad_cam', a name of `attribution.CAM_FAMILY`, or 'score_cam' / 'ablation_cam'.

  Returns:
    NumPy [B, h, w], after the ReLU.

  Raises:
    ValueError: an unknown method.
  """
  import numpy as np
  labels = np.asarray(labels)
  a = features(x).detach().requires_grad_(True)
  scores = head(a)
  (g,) = torch.autograd.grad(scores[torch.arange(len(labels)), torch.as_tensor(labels)].sum(), a)
  acts, grads = a.detach().numpy(), g.numpy()

  def weighted(w):
    return np.maximum((w[:, :, None, None] * acts).sum(axis=1), 0)

  summed = acts.sum(axis=(2, 3))
  if method == 'grad_cam':
    return weighted(grads.mean(axis=(2, 3)))
  if method == 'grad_cam_plus_plus':
    g2, g3 = grads ** 2, grads ** 3
    aij = np.where(grads != 0, g2 / (2 * g2 + summed[:, :, None, None] * g3 + 1e-6), 0)
    return weighted((np.maximum(grads, 0) * aij).sum(axis=(2, 3)))
  if method == 'xgrad_cam':
    return weighted((grads * acts / (summed[:, :, None, None] + 1e-7)).sum(axis=(2, 3)))
  if method == 'layer_cam':
    return np.maximum((np.maximum(grads, 0) * acts).sum(axis=1), 0)
  if method == 'hires_cam':
    return np.maximum((grads * acts).sum(axis=1), 0)
  if method == 'eigen_cam':
    projections = []
    for act in acts:
      rows = act.reshape(act.shape[0], -1).T
      rows = rows - rows.mean(axis=0)
      _, _, vt = np.linalg.svd(rows, full_matrices=True)
      projection = rows @ vt[0]
      if np.sum(projection * act.mean(axis=0).reshape(-1)) < 0:
        projection = -projection
      projections.append(projection.reshape(act.shape[1:]))
    return np.maximum(np.stack(projections), 0)
  with torch.no_grad():
    if method == 'score_cam':
      up = F.interpolate(torch.from_numpy(acts), size=tuple(x.shape[2:]), mode='bilinear', align_corners=True)
      flat = up.reshape(*up.shape[:2], -1)
      low, high = flat.min(-1)[0][:, :, None, None], flat.max(-1)[0][:, :, None, None]
      up = (up - low) / (high - low + 1e-8)
      model = lambda z: head(features(z))  # noqa: E731
      score = np.stack([model(x[i:i + 1] * up[i][:, None])[:, labels[i]].numpy() for i in range(len(labels))])
      return weighted(torch.softmax(torch.from_numpy(score), dim=-1).numpy())
    if method == 'ablation_cam':
      original = head(torch.from_numpy(acts))[torch.arange(len(labels)), torch.as_tensor(labels)].numpy()
      drops = []
      for i in range(len(labels)):
        value = 0.0 if acts[i].min() == 0 else float(acts[i].min()) - 1e7
        batch = torch.from_numpy(acts[i]).repeat(acts.shape[1], 1, 1, 1)
        batch[torch.arange(acts.shape[1]), torch.arange(acts.shape[1])] = value
        drops.append((original[i] - head(batch)[:, labels[i]].numpy()) / original[i])
      return weighted(np.stack(drops))
  raise ValueError(f'unknown CAM {method!r}')


def rise_maps(model, x, labels, masks):
  """RISE as TorchRay sums it (`torchray.attribution.rise`), with given masks.

  Args:
    model: a PyTorch model, x [B, C, H, W] -> scores.
    x: a float tensor [B, C, H, W].
    labels: int [B].
    masks: a float tensor [N, H, W].

  Returns:
    NumPy [B, H, W]: the mean over masks of sigmoid(the label's score of x x mask) x mask.
  """
  with torch.no_grad():
    return torch.stack([(torch.sigmoid(model(x[i:i + 1] * masks[:, None]))[:, int(labels[i]), None, None]
                         * masks).sum(0) / len(masks) for i in range(len(x))]).numpy()
