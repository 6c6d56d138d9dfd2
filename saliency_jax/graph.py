"""The layer graph: a model as a list of steps in forward order, which its `__call__` runs.

Every model of `saliency_jax.models` declares its layers once, in `model.steps()`, and its
`__call__` is `graph.run(model.steps(), x, relu=relu)`. Everything that needs to know the layers
reads the same list: the explicit DeconvNet (`deconvnet`), the split of Grad-CAM and CAM
(`attribution.split`), the layer names (`names`), and the randomisation groups of the sanity check
(`faithfulness.randomisation_groups`). A new model needs only its steps.

Step kinds (`KINDS`):
  conv            an `nnx.Conv` (a 1x1, stride-1 one is run as a matrix product over channels, a
                  plain strided one on CPU by `layers.strided_conv`)
  depthwise_conv  an `nnx.Conv` with one group per input channel (`layers.depthwise_conv`)
  dense           an `nnx.Linear`
  batch_norm      an `nnx.BatchNorm`
  relu            the rectification: the injected `relu` (a backward rule goes here)
  clip            min(x, options['max']) (relu6 is a relu step followed by a clip at 6)
  max_pool        `layers.max_pool` with options 'window', 'strides', 'padding'
  adaptive_avg_pool  `layers.adaptive_avg_pool` to options['size']
  mean            global average pooling over H and W
  flatten         [B, ...] -> [B, n]
  reshape         [B, ...] -> [B, *options['shape']]
  pad             zero padding of H and W by options['padding'] ((top, bottom), (left, right))
  dropout         an `nnx.Dropout` (the identity in inference mode)
  identity        a layer with no effect in inference (e.g. Keras' Dropout, a linear Activation)
  block           a residual block: `inner` steps on the branch, the last of them (the block's
                  ReLU) applied to branch + shortcut; options 'stride' and 'pad_channels' give the
                  option-A shortcut (subsampling and zero channels), `module` the block's weights.
  module          any NNX module applied as it is, `module(x)` (a Vision Transformer's token embedding
                  and encoder blocks: no rectification in it, no DeconvNet transpose)
  token           [B, T, D] -> [B, D]: the token options['index'] (a ViT's class token)
  layer_norm      an `nnx.LayerNorm`
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import layers

KINDS = ('conv', 'depthwise_conv', 'dense', 'batch_norm', 'relu', 'clip', 'max_pool', 'adaptive_avg_pool',
         'mean', 'flatten', 'reshape', 'pad', 'dropout', 'identity', 'block', 'module', 'token', 'layer_norm')
# the layers the randomisation check replaces
WEIGHTED = ('conv', 'depthwise_conv', 'dense', 'block', 'module')


class Step(NamedTuple):
  """One layer of a model, in forward order (see the module docstring for the kinds).

  Attributes:
    name: the layer's name (what `deconvnet.layer_names` lists).
    kind: one of `KINDS`.
    module: the NNX module holding its weights, or None.
    options: the kind's options (a pool's window, a clip's bound, ...), or None.
    inner: a residual block's steps (kind 'block'), its ReLU last.
  """
  name: str
  kind: str
  module: Any = None
  options: dict | None = None
  inner: tuple['Step', ...] = ()


def max_pool(name: str, window, strides, padding='VALID') -> Step:
  """A max-pooling step.

  Args:
    name: the step's name.
    window: an int or an (h, w) pair.
    strides: an int or an (h, w) pair.
    padding: 'VALID', 'SAME' or explicit pairs.

  Returns:
    The `Step`.
  """
  return Step(name, 'max_pool', options={'window': window, 'strides': strides, 'padding': padding})


def is_pointwise(conv: nnx.Conv) -> bool:
  """Whether a convolution is a matrix product over channels: 1x1, stride 1, ungrouped, unpadded.

  Args:
    conv: the NNX convolution.

  Returns:
    A bool.
  """
  padding = conv.padding
  unpadded = isinstance(padding, str) or all(p == (0, 0) for p in map(tuple, padding))
  return (tuple(conv.kernel_size) == (1, 1) and layers.pair(conv.strides or 1) == (1, 1)
          and conv.feature_group_count == 1 and unpadded)


def is_strided(conv: nnx.Conv) -> bool:
  """Whether a convolution takes `layers.strided_conv`'s path.

  A plain convolution with strides: no groups, no dilation, no mask, float32, padding 'SAME', 'VALID' or
  explicit pairs.

  Args:
    conv: the NNX convolution.

  Returns:
    A bool.
  """
  padding = conv.padding
  plain_padding = (padding in ('SAME', 'VALID') if isinstance(padding, str)
                   else isinstance(padding, Sequence) and len(padding) == 2
                   and all(isinstance(p, Sequence) and len(p) == 2 for p in padding))
  dilated = any(layers.pair(d or 1) != (1, 1) for d in (conv.input_dilation, conv.kernel_dilation))
  return (layers.pair(conv.strides or 1) != (1, 1) and len(conv.kernel_size) == 2
          and conv.feature_group_count == 1 and not dilated and plain_padding and conv.mask is None
          and conv.dtype in (None, jnp.float32) and conv.precision is None)


def shortcut(step: Step, x: jax.Array) -> jax.Array:
  """A residual block's option-A shortcut: every `stride`-th pixel, `pad_channels` zeros each side.

  Args:
    step: the block's step.
    x: [B, H, W, C], the block's input.

  Returns:
    [B, H / stride, W / stride, C + 2 pad_channels].
  """
  p, s = step.options['pad_channels'], step.options['stride']
  if not p:
    return x
  return jnp.pad(x[:, ::s, ::s], ((0, 0), (0, 0), (0, 0), (p, p)))


def apply(step: Step, x: jax.Array, relu: Callable, record: dict | None = None) -> jax.Array:
  """One step forward.

  Args:
    step: the step.
    x: its input.
    relu: the ReLU (rule) rectifications run with.
    record: a dict that receives each step's input by name (and each max-pool's switches), what the
      explicit DeconvNet needs to go back down; or None.

  Returns:
    The step's output.

  Raises:
    ValueError: a step of an unknown kind.
  """
  kind, module, o = step.kind, step.module, step.options
  if record is not None:
    record[step.name] = {'input': x}
  if kind == 'conv':
    if is_pointwise(module):
      y = jnp.einsum('bhwc,cd->bhwd', x, module.kernel[0, 0])
    elif is_strided(module) and jax.default_backend() == 'cpu':
      y = layers.strided_conv(x, module.kernel[...], module.strides, module.padding)
    else:
      return module(x)
    return y if module.bias is None else y + module.bias[...]
  if kind == 'depthwise_conv':
    y = layers.depthwise_conv(x, module.kernel[...], module.strides, module.padding, module.kernel_dilation)
    return y if module.bias is None else y + module.bias[...]
  if kind in ('dense', 'batch_norm', 'dropout', 'module', 'layer_norm'):
    return module(x)
  if kind == 'token':
    return x[:, o['index']]
  if kind == 'relu':
    return relu(x)
  if kind == 'clip':
    return jnp.minimum(x, o['max'])
  if kind == 'max_pool':
    if record is not None:
      y, switches = layers.max_pool_switches(x, o['window'], o['strides'], o['padding'])
      record[step.name]['switches'] = switches
      return y
    return layers.max_pool(x, o['window'], o['strides'], o['padding'])
  if kind == 'adaptive_avg_pool':
    return layers.adaptive_avg_pool(x, o['size'])
  if kind == 'mean':
    return jnp.mean(x, axis=(1, 2))
  if kind == 'flatten':
    return x.reshape(x.shape[0], -1)
  if kind == 'reshape':
    return x.reshape(x.shape[0], *o['shape'])
  if kind == 'pad':
    return jnp.pad(x, ((0, 0), *o['padding'], (0, 0)))
  if kind == 'identity':
    return x
  if kind == 'block':
    if record is None and step.module is not None:  # the block's own __call__ runs `residual`
      return step.module(x, relu=relu)
    return residual(step, x, relu, record)
  raise ValueError(f'step {step.name!r}: unknown kind {kind!r}; expected one of {KINDS}')


def residual(step: Step, x: jax.Array, relu: Callable, record: dict | None = None) -> jax.Array:
  """A 'block' step: its inner steps on x, the last one (the ReLU) on their output plus the shortcut.

  Args:
    step: the block's step.
    x: its input.
    relu: the ReLU (rule).
    record: as `apply` takes it.

  Returns:
    The block's output.
  """
  h = x
  for inner in step.inner[:-1]:
    h = apply(inner, h, relu, record)
  return apply(step.inner[-1], h + shortcut(step, x), relu, record)


def index(steps: Sequence[Step], layer: str) -> int:
  """The position of a layer in a list of steps.

  Args:
    steps: the steps.
    layer: a step's name, or 'scores' for the last step (the class scores).

  Returns:
    Its index.

  Raises:
    ValueError: an unknown layer, naming the known ones.
  """
  names = [s.name for s in steps]
  if layer == 'scores':
    return len(names) - 1
  if layer not in names:
    raise ValueError(f'unknown layer {layer!r}; expected one of {names + ["scores"]}')
  return names.index(layer)


def run(steps: Sequence[Step], x: jax.Array, *, relu: Callable = jax.nn.relu, start: int = 0,
        stop: int | None = None, record: dict | None = None) -> jax.Array:
  """Runs steps[start:stop + 1] (all by default) on x.

  Args:
    steps: the model's steps.
    x: the first step's input.
    relu: the ReLU (rule) rectifications run with.
    start: the first step's index.
    stop: the last step's index (None: the last).
    record: as `apply` takes it.

  Returns:
    The last step's output.
  """
  for step in steps[start:None if stop is None else stop + 1]:
    x = apply(step, x, relu, record)
  return x


def flat(steps: Sequence[Step]) -> list[Step]:
  """The steps with every residual block replaced by its inner steps (the block's ReLU last).

  Args:
    steps: the steps.

  Returns:
    The flat list.
  """
  return [s for step in steps for s in (step.inner if step.kind == 'block' else (step,))]


def steps_of(model) -> list[Step]:
  """A model's layer graph, `model.steps()`.

  Args:
    model: the model.

  Returns:
    Its steps.

  Raises:
    TypeError: the model declares no layer graph.
  """
  declare = getattr(model, 'steps', None)
  if not callable(declare):
    raise TypeError(f'{type(model).__name__} declares no layer graph (a `steps()` method listing its '
                    'layers, see saliency_jax.graph); the explicit DeconvNet, Grad-CAM, CAM and the '
                    'randomisation check need one')
  return list(declare())


def names(model) -> list[str]:
  """The names a layer method can start from or split at, in forward order, then 'scores'.

  Args:
    model: a model with a layer graph.

  Returns:
    The names.
  """
  return [s.name for s in steps_of(model)] + ['scores']
