"""PyTorch twins of the models, for cross-checks and benchmarks (needs the `torch` extra).

Written from the architectures' descriptions (akamaster's CIFAR ResNet, torchvision's VGG16
layout), independently of the NNX code; `weights` loads their state dicts into the NNX models,
so a twin with any weights gives the reference the JAX model must match.
"""

import torch
import torch.nn.functional as F
from torch import nn

from saliency_jax import models


class TorchBasicBlock(nn.Module):

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
    return F.relu(out + shortcut)


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

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer3(self.layer2(self.layer1(out)))
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

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


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

  def forward(self, x):
    i = 0
    for s, n in enumerate(self.stage_sizes):
      if s > 0:
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
      for _ in range(n):
        x = F.relu(self.convs[i](x))
        i += 1
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    return self.classifier(x.mean(dim=(2, 3)))
