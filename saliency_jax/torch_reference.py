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
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    return g.clamp(min=0)


class GuidedReLU(torch.autograd.Function):
  """relu forward; backward g * 1(x > 0) * 1(g > 0) (guided backpropagation)."""

  @staticmethod
  def forward(ctx, x):
    ctx.save_for_backward(x)
    return x.clamp(min=0)

  @staticmethod
  def backward(ctx, g):
    (x,) = ctx.saved_tensors
    return g * ((x > 0) & (g > 0)).to(g.dtype)


RELUS = {'gradient': F.relu, 'deconvnet': DeconvNetReLU.apply, 'guided': GuidedReLU.apply}


class TorchBasicBlock(nn.Module):

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

  def forward(self, x, relu=F.relu):
    out = relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
    return relu(out + shortcut)


class TorchCifarResNet(nn.Module):

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
    run = lambda layer, h: relu(h) if isinstance(layer, nn.ReLU) else layer(h)
    for layer in self.features:
      x = run(layer, x)
    x = torch.flatten(self.avgpool(x), 1)
    for layer in self.classifier:
      x = run(layer, x)
    return x


class TorchSmallConvNet(nn.Module):
  """SmallConvNet's architecture (no BatchNorm, no hidden layers); keys as `weights.small_convnet_entries`."""

  def __init__(self, num_classes: int = 10, stages=((16,), (32,), (64,), (128,))):
    super().__init__()
    self.stage_sizes = [len(s) for s in stages]
    convs, c = [], 3
    for stage in stages:
      for width in stage:
        convs.append(nn.Conv2d(c, width, 3, padding=1))
        c = width
    self.convs = nn.ModuleList(convs)
    self.classifier = nn.Linear(c, num_classes)

  def forward(self, x, relu=F.relu):
    i = 0
    for s, n in enumerate(self.stage_sizes):
      if s > 0:
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
      for _ in range(n):
        x = relu(self.convs[i](x))
        i += 1
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    return self.classifier(x.mean(dim=(2, 3)))
