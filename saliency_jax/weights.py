"""Import of real pretrained checkpoints into the NNX models.

PyTorch files are read with `torch.load(weights_only=True)` (no code from the file runs);
torch is an optional extra: `pip install 'saliency-jax[torch]'` (torch==2.13.0, CPU build).
Every import checks the state dict against the model: unknown keys, missing keys and shape
mismatches are reported together, in one error, before any weight is written.

Layouts: PyTorch convolutions are [O, I, kh, kw] and become [kh, kw, I, O]; linear layers
[O, I] become [I, O]; a linear layer reading a flattened NCHW map is permuted to read the
NHWC flattening the NNX models use. The models then compute what the PyTorch ones do on the
same normalised input, in NHWC instead of NCHW.
"""

import json
import os
import pathlib
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import layers, models

# akamaster/pytorch_resnet_cifar10 normalises CIFAR inputs in [0, 1] with ImageNet's statistics.
CIFAR10_MEAN = (0.485, 0.456, 0.406)
CIFAR10_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck')
# torchvision's ImageNet models: RGB in [0, 1], then these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCH_EXTRA = "pip install 'saliency-jax[torch]'  (or: pip install torch==2.13.0, the CPU build)"


def _torch_error(error: Exception) -> str:
  """torch.load's error in one line, without its advice to retry with weights_only=False.

  That advice unpickles arbitrary objects, i.e. runs code from the file.
  """
  text = str(error)
  if 'WeightsUnpickler error:' in text:
    text = text.split('WeightsUnpickler error:', 1)[1]
    text = text.split('Please use', 1)[0].split('Check the documentation', 1)[0]
  text = ' '.join(text.split())
  if 'weights_only' in text:
    text = 'it holds objects other than tensors and plain containers'
  return text


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A PyTorch checkpoint as float32 arrays: `state_dict` unwrapped, `module.` prefixes dropped.

  Args:
    path: the checkpoint file.

  Returns:
    {key: float32 array}.

  Raises:
    ImportError: torch is not installed (the `torch` extra).
    FileNotFoundError: no file at path.
    ValueError: not a readable PyTorch checkpoint, or one holding no state dict.
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError(f'reading the PyTorch checkpoint {path} needs torch: {TORCH_EXTRA}') from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no checkpoint file at {path}')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises several types for corrupt or foreign files
    raise ValueError(f'{path} is not a readable PyTorch checkpoint (read with weights_only=True, which runs '
                     f'no code from the file): {_torch_error(e)}') from None
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict) or not all(hasattr(v, 'shape') for v in obj.values()):
    raise ValueError(f'{path} holds no state dict (a mapping of names to tensors)')
  out = {}
  for key, value in obj.items():
    key = key.removeprefix('module.')
    if key.endswith('num_batches_tracked'):
      continue
    out[key] = value.detach().cpu().float().numpy()
  return out


# ----------------------------------------------------------------------------- assignment


def empty(make: Callable[[], nnx.Module]) -> nnx.Module:
  """The module `make()` builds, with zeros instead of a random initialisation.

  A checkpoint overwrites every weight, so sampling VGG16's 138M random weights first would be wasted:
  shapes come from `nnx.eval_shape`, values are zeros.

  Args:
    make: a function of no argument that builds the module.

  Returns:
    The module.
  """
  graphdef, state = nnx.split(nnx.eval_shape(make))

  def fill(x):
    if not isinstance(x, jax.ShapeDtypeStruct):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    return jnp.zeros(x.shape, x.dtype)

  return nnx.merge(graphdef, jax.tree.map(fill, state))


Convert = Callable[[np.ndarray], np.ndarray]
def conv_weight(w):
  """A PyTorch convolution kernel [O, I, kh, kw] in Flax's layout [kh, kw, I, O].

  Args:
    w: a PyTorch tensor's array.

  Returns:
    The array in Flax's layout.
  """
  return w.transpose(2, 3, 1, 0)
def linear_weight(w):
  """A PyTorch Linear weight [O, I] in Flax's layout [I, O].

  Args:
    w: a PyTorch tensor's array.

  Returns:
    The array in Flax's layout.
  """
  return w.T
def identity(w):
  """A tensor that needs no conversion (biases, BatchNorm parameters).

  Args:
    w: a PyTorch tensor's array.

  Returns:
    The array in Flax's layout.
  """
  return w


def _conv_entries(prefix: str, conv: nnx.Conv) -> dict:
  entries = {f'{prefix}.weight': (conv.kernel, conv_weight)}
  if conv.bias is not None:
    entries[f'{prefix}.bias'] = (conv.bias, identity)
  return entries


def _linear_entries(prefix: str, linear: nnx.Linear, weight: Convert = linear_weight) -> dict:
  return {f'{prefix}.weight': (linear.kernel, weight), f'{prefix}.bias': (linear.bias, identity)}


def _bn_entries(prefix: str, bn: nnx.BatchNorm) -> dict:
  return {f'{prefix}.weight': (bn.scale, identity), f'{prefix}.bias': (bn.bias, identity),
          f'{prefix}.running_mean': (bn.mean, identity), f'{prefix}.running_var': (bn.var, identity)}


def assign(entries: dict, state: dict[str, np.ndarray], source: str) -> None:
  """Writes a state dict into a model's variables, after checking everything.

  Nothing is written unless all keys match and every value is finite.

  Args:
    entries: {key: (variable, convert)}.
    state: {key: array}.
    source: what the state came from, for the error.

  Raises:
    ValueError: listing unknown keys, missing keys, shape mismatches and tensors holding NaN or inf.
  """
  unknown = sorted(set(state) - set(entries))
  missing = sorted(set(entries) - set(state))
  converted, mismatched, non_finite = {}, [], []
  for key in sorted(set(state) & set(entries)):
    var, convert = entries[key]
    value = convert(state[key])
    if value.shape != var.shape:
      mismatched.append(f'{key}: checkpoint {state[key].shape} -> {value.shape}, model {var.shape}')
    if not np.all(np.isfinite(value)):
      non_finite.append(f'{key} ({int(np.sum(~np.isfinite(value)))} of {value.size})')
    converted[key] = value
  problems = []
  if unknown:
    problems.append(f'unknown keys ({len(unknown)}): {", ".join(unknown)}')
  if missing:
    problems.append(f'missing keys ({len(missing)}): {", ".join(missing)}')
  if mismatched:
    problems.append(f'shape mismatches ({len(mismatched)}): {"; ".join(mismatched)}')
  if non_finite:
    problems.append(f'NaN or infinite values ({len(non_finite)} tensors): {", ".join(non_finite)}')
  if problems:
    raise ValueError(f'{source} does not match the model:\n  ' + '\n  '.join(problems))
  for key, value in converted.items():
    var = entries[key][0]
    var[...] = jnp.asarray(value, var.dtype)


# ----------------------------------------------------------------------------- CIFAR ResNets


def cifar_resnet_entries(model: models.CifarResNet) -> dict:
  """State-dict key -> (variable, convert) for akamaster's CIFAR ResNets.

  Args:
    model: the CifarResNet.

  Returns:
    {key: (variable, convert)}.
  """
  entries = {**_conv_entries('conv1', model.conv1), **_bn_entries('bn1', model.bn1)}
  for s, stage in enumerate((model.layer1, model.layer2, model.layer3)):
    for b, block in enumerate(stage):
      p = f'layer{s + 1}.{b}'
      entries.update(_conv_entries(f'{p}.conv1', block.conv1))
      entries.update(_bn_entries(f'{p}.bn1', block.bn1))
      entries.update(_conv_entries(f'{p}.conv2', block.conv2))
      entries.update(_bn_entries(f'{p}.bn2', block.bn2))
  entries.update(_linear_entries('linear', model.linear))
  return entries


def cifar_resnet_from_state_dict(state: dict[str, np.ndarray],
                                 source: str = 'state dict') -> models.CifarResNet:
  """The CifarResNet a state dict describes: depth from its blocks, classes from `linear`.

  Args:
    state: {key: array}.
    source: what the state came from, for the errors.

  Returns:
    The CifarResNet, in inference mode.

  Raises:
    ValueError: not a CIFAR ResNet state dict, or one that does not match the model (`assign`).
  """
  blocks = {int(m.group(1)) for k in state if (m := re.match(r'layer1\.(\d+)\.', k))}
  if not blocks:
    raise ValueError(f'{source} is not a CIFAR ResNet state dict (no layer1.* keys)')
  if 'linear.weight' not in state:  # it gives the number of classes: the model cannot be built without it
    raise ValueError(f'{source} has layer1.* keys but no linear.weight (the classifier, which gives the '
                     'number of classes): an incomplete CIFAR ResNet state dict')
  depth = 6 * (max(blocks) + 1) + 2
  in_channels = state['conv1.weight'].shape[1] if 'conv1.weight' in state else 3
  model = empty(lambda: models.CifarResNet(depth, num_classes=state['linear.weight'].shape[0],
                                           in_channels=in_channels, rngs=nnx.Rngs(0)))
  assign(cifar_resnet_entries(model), state, source)
  return model


def load_cifar_resnet(path: str | os.PathLike) -> models.CifarResNet:
  """An akamaster-format checkpoint (pytorch_resnet_cifar10 `*.th`) as a CifarResNet, in inference mode.

  Inputs: RGB in [0, 1] normalised with CIFAR10_MEAN / CIFAR10_STD (`transforms.normalise`), NHWC.

  Args:
    path: the checkpoint file.

  Returns:
    The CifarResNet.
  """
  return cifar_resnet_from_state_dict(read_torch_state_dict(path), str(path))


# ----------------------------------------------------------------------------- SmallConvNet


def small_convnet_entries(model: models.SmallConvNet) -> dict:
  """State-dict key -> (variable, convert) for a SmallConvNet: convs.{i}, norms.{i}, hidden.{j}, classifier.

  Args:
    model: the SmallConvNet.

  Returns:
    {key: (variable, convert)}.
  """
  entries = {}
  for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
    entries.update(_conv_entries(f'convs.{i}', conv))
    if norm is not None:
      entries.update(_bn_entries(f'norms.{i}', norm))
  for j, dense in enumerate(model.hidden):
    entries.update(_linear_entries(f'hidden.{j}', dense))
  entries.update(_linear_entries('classifier', model.classifier))
  return entries


# ----------------------------------------------------------------------------- VGG16


def _nchw_flat_to_nhwc(channels: int, side: int) -> Convert:
  """A Linear weight [O, C*H*W] reading an NCHW flattening -> [H*W*C, O] reading NHWC's."""
  def convert(w):
    return w.reshape(w.shape[0], channels, side, side).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
  return convert


def vgg16_entries(model: models.VGG16) -> dict:
  """State-dict key -> (variable, convert) for torchvision's VGG16.

  Args:
    model: the VGG16.

  Returns:
    {key: (variable, convert)}.
  """
  entries = {}
  for i, layer in enumerate(model.features):
    if layer is not None:
      entries.update(_conv_entries(f'features.{i}', layer))
  entries.update(_linear_entries('classifier.0', model.classifier[0], _nchw_flat_to_nhwc(512, 7)))
  entries.update(_linear_entries('classifier.3', model.classifier[3]))
  entries.update(_linear_entries('classifier.6', model.classifier[6]))
  return entries


def vgg16_from_state_dict(state: dict[str, np.ndarray], source: str = 'state dict') -> models.VGG16:
  """The VGG16 a torchvision state dict describes (classes from `classifier.6`).

  Args:
    state: {key: array}.
    source: what the state came from, for the errors.

  Returns:
    The VGG16, in inference mode.

  Raises:
    ValueError: not a torchvision VGG16 state dict, or one that does not match the model (`assign`).
  """
  if 'classifier.6.weight' not in state:
    raise ValueError(f'{source} is not a torchvision VGG16 state dict (no classifier.6.weight)')
  model = empty(lambda: models.VGG16(num_classes=state['classifier.6.weight'].shape[0], rngs=nnx.Rngs(0)))
  assign(vgg16_entries(model), state, source)
  return model


def load_torchvision_vgg16(path: str | os.PathLike) -> models.VGG16:
  """A torchvision `vgg16` state_dict file (e.g. vgg16-397923af.pth) as a VGG16, in inference mode.

  Inputs: RGB in [0, 1] normalised with IMAGENET_MEAN / IMAGENET_STD, NHWC, 224 x 224.

  Args:
    path: the checkpoint file.

  Returns:
    The VGG16.
  """
  return vgg16_from_state_dict(read_torch_state_dict(path), str(path))


# ----------------------------------------------------------------------------- TensorFlow.js layers models

_TFJS_PARAMS = {  # Keras weight name suffix -> (the NNX variable's attribute, convert)
    'Conv2D': {'kernel': ('kernel', identity), 'bias': ('bias', identity)},
    'Dense': {'kernel': ('kernel', identity), 'bias': ('bias', identity)},
    'BatchNormalization': {'gamma': ('scale', identity), 'beta': ('bias', identity),
                           'moving_mean': ('mean', identity), 'moving_variance': ('var', identity)},
}


def _depthwise(w: np.ndarray) -> np.ndarray:
  """Keras depthwise kernel [kh, kw, C, m] -> grouped-conv kernel [kh, kw, 1, C * m] (output c * m + j)."""
  kh, kw, c, m = w.shape
  return w.reshape(kh, kw, 1, c * m)


def read_tfjs_layers_model(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
  """A TensorFlow.js layers model's Keras config and weights; TensorFlow is not needed.

  The weight shards are read raw (little-endian, concatenated in manifest order).

  Args:
    path: the folder holding model.json, or the file.

  Returns:
    (the Keras model config, {weight name: float32 array}).

  Raises:
    FileNotFoundError: no model.json there, or weight shards its manifest lists are missing.
    ValueError: not a TensorFlow.js layers model, a weight that is not float32 (or quantized), or shards
      that end inside a weight or hold bytes left over.
  """
  path = pathlib.Path(path)
  path = path / 'model.json' if path.is_dir() else path
  if not path.is_file():
    raise FileNotFoundError(f'no TensorFlow.js model at {path} (expected a model.json)')
  try:
    spec = json.loads(path.read_text(encoding='utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a binary file (a PyTorch .th), or cut off
    raise ValueError(f'{path} is not a TensorFlow.js model.json: not JSON ({e}); truncated, or another '
                     'format?') from None
  if not isinstance(spec, dict) or 'modelTopology' not in spec or 'weightsManifest' not in spec:
    raise ValueError(f'{path} is not a TensorFlow.js layers model: it needs modelTopology and '
                     'weightsManifest')
  topology = spec['modelTopology']
  model_config = topology.get('model_config', topology)
  arrays = {}
  for group in spec['weightsManifest']:
    shards = [path.parent / name for name in group['paths']]
    absent = [str(shard) for shard in shards if not shard.is_file()]
    if absent:
      raise FileNotFoundError(f'{path}: weight shards listed in its manifest are missing: '
                              f'{", ".join(absent)}')
    data = b''.join(shard.read_bytes() for shard in shards)
    offset = 0
    for w in group['weights']:
      name, shape, dtype = w['name'].split(':')[0], tuple(w['shape']), w.get('dtype', 'float32')
      if dtype != 'float32' or 'quantization' in w:
        raise ValueError(f'{path}: weight {name} is {dtype}{" quantized" if "quantization" in w else ""}; '
                         'only float32 weights are supported')
      size = int(np.prod(shape)) * 4
      if offset + size > len(data):
        raise ValueError(f'{path}: the shards of group {group["paths"]} end inside weight {name}')
      arrays[name] = np.frombuffer(data, '<f4', count=size // 4, offset=offset).reshape(shape).copy()
      offset += size
    if offset != len(data):
      raise ValueError(f'{path}: {len(data) - offset} bytes left over after the weights of group '
                       f'{group["paths"]}')
  return model_config, arrays


# ----------------------------------------------------------------------------- Keras layer translation

KERAS_LAYERS = ('Activation', 'BatchNormalization', 'Conv2D', 'Dense', 'DepthwiseConv2D', 'Dropout',
                'Flatten', 'GlobalAveragePooling2D', 'InputLayer', 'MaxPooling2D', 'ReLU', 'Reshape',
                'ZeroPadding2D')
_SHAPE_ONLY = ('Dropout', 'Flatten', 'Reshape')  # may follow the final softmax


def _activation_steps(act: str) -> list[tuple[str, dict | None]]:
  """The steps of a Keras activation: linear none, relu a rectification, relu6 one and a clip at 6."""
  return {'linear': [], 'relu': [('relu', None)], 'relu6': [('relu', None), ('clip', {'max': 6.0})]}[act]


def keras_layout(keras_layers, shapes: dict[str, tuple[int, ...]], *, rngs: nnx.Rngs) -> tuple[tuple, list]:
  """A Keras / TensorFlow.js layer list translated into `models.KerasNet`'s layout and modules.

  Supported: the classes of `KERAS_LAYERS` with activations linear, relu, relu6 and a final softmax,
  which is dropped (the net returns the pre-softmax scores S_c). A layer with an activation becomes its
  linear part (`{name}/linear`) and the activation; relu6 is a rectification (`{name}/relu`) and a clip
  at 6 (`{name}`): the Keras name is always the layer's output.

  Args:
    keras_layers: the model config's layer list in order (each {'class_name', 'config', ...}).
    shapes: {weight name: shape} of the arrays the model will receive (they give every layer's widths).
    rngs: the NNX random streams the modules are built with.

  Returns:
    (layout: per step (layer name, step name, kind, options as sorted items, module index or -1),
    modules: per Keras layer its NNX module or None).

  Raises:
    ValueError: any other layer, activation or setting, naming it.
  """
  layout, mods = [], []
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
    module, parts = None, []  # parts: (kind, options) of the layer's steps, in order
    if kind in ('Conv2D', 'DepthwiseConv2D'):
      if c.get('padding', 'valid') not in ('same', 'valid'):
        raise ValueError(f'{where}: padding {c.get("padding")!r}')
      depthwise = kind == 'DepthwiseConv2D'
      kh, kw, cin, cout = shapes[f'{name}/depthwise_kernel' if depthwise else f'{name}/kernel']
      module = nnx.Conv(cin, cin * cout if depthwise else cout, (kh, kw),
                        strides=layers.pair(c.get('strides', 1)),
                        padding=c.get('padding', 'valid').upper(),
                        kernel_dilation=layers.pair(c.get('dilation_rate', 1)),
                        feature_group_count=cin if depthwise else 1, use_bias=bool(c.get('use_bias', True)),
                        rngs=rngs)
      parts = [('depthwise_conv' if depthwise else 'conv', None), *_activation_steps(act)]
    elif kind == 'Dense':
      cin, cout = shapes[f'{name}/kernel']
      module = nnx.Linear(cin, cout, use_bias=bool(c.get('use_bias', True)), rngs=rngs)
      parts = [('dense', None), *_activation_steps(act)]
    elif kind == 'BatchNormalization':
      if c.get('axis', -1) not in (-1, 3, [3], [-1]):
        raise ValueError(f'{where}: axis {c.get("axis")}; only the channel axis (-1) is supported')
      width = shapes[f'{name}/moving_mean'][0]
      module = nnx.BatchNorm(width, epsilon=float(c.get('epsilon', 1e-3)),
                             use_scale=bool(c.get('scale', True)), use_bias=bool(c.get('center', True)),
                             use_running_average=True, rngs=rngs)
      parts = [('batch_norm', None)]
    elif kind == 'Activation':
      parts = _activation_steps(act) or [('identity', None)]
    elif kind == 'ReLU':
      if float(c.get('negative_slope') or 0) != 0 or float(c.get('threshold') or 0) != 0:
        raise ValueError(f'{where}: negative_slope / threshold other than 0 are not supported')
      top = c.get('max_value')
      parts = [('relu', None)] + ([] if top is None else [('clip', {'max': float(top)})])
    elif kind == 'ZeroPadding2D':
      p = c.get('padding', 1)
      p = ((p, p), (p, p)) if isinstance(p, int) else tuple(layers.pair(q) for q in p)
      parts = [('pad', {'padding': p})]
    elif kind == 'MaxPooling2D':
      window = layers.pair(c.get('pool_size', 2))
      parts = [('max_pool', {'window': window, 'strides': layers.pair(c.get('strides') or window),
                             'padding': c.get('padding', 'valid').upper()})]
    elif kind == 'GlobalAveragePooling2D':
      parts = [('mean', None)]
    elif kind == 'Reshape':
      parts = [('reshape', {'shape': tuple(int(d) for d in c['target_shape'])})]
    elif kind == 'Flatten':
      parts = [('flatten', None)]
    elif kind == 'Dropout':  # inference: the identity
      parts = [('identity', None)]
    index = len(mods)
    mods.append(module)
    for j, (step_kind, options) in enumerate(parts):
      last = j == len(parts) - 1
      step_name = name if last else f'{name}/{"relu" if step_kind == "relu" else "linear"}'
      # options as sorted items: static, hashable attributes of the module
      layout.append((name, step_name, step_kind, tuple(sorted((options or {}).items())),
                     index if step_kind in ('conv', 'depthwise_conv', 'dense', 'batch_norm') else -1))
  return tuple(layout), mods


def load_tfjs_layers_model(path: str | os.PathLike) -> models.KerasNet:
  """A TensorFlow.js / Keras layers model (e.g. ../shared/data/imagenet-mobilenet) as a `models.KerasNet`.

  Called like every model: `model(x, relu=...)` on NHWC input preprocessed as the original expects
  (MobileNet: RGB `x / 127.5 - 1`), returning pre-softmax scores.

  Args:
    path: the folder holding model.json, or the file.

  Returns:
    The KerasNet, in inference mode.

  Raises:
    ValueError: layers that do not form a chain, a layer of another class, a non-float32 weight, a missing
      or unused weight, or a shape mismatch, naming it.
  """
  model_config, arrays = read_tfjs_layers_model(path)
  config = model_config.get('config', {})
  layer_list = config['layers'] if isinstance(config, dict) else config  # Model / Sequential configs
  previous = None
  for layer in layer_list:
    inbound = layer.get('inbound_nodes')
    if inbound:  # functional models: each layer must read the one before it
      sources = [node[0] for nodes in inbound for node in nodes]
      if len(sources) != 1 or sources[0] != previous:
        raise ValueError(f'layer {layer["config"]["name"]!r} reads {sources}: '
                         'only chains of layers are supported')
    previous = layer.get('name', layer['config'].get('name'))
  input_shape = next((e['config'].get('batch_input_shape') for e in layer_list
                      if 'batch_input_shape' in e['config']), None)
  if not input_shape or len(input_shape) != 4 or input_shape[3] is None:
    raise ValueError(f'{path}: no [None, H, W, C] batch_input_shape in the first layer')
  shapes = {name: a.shape for name, a in arrays.items()}
  image_shape = (input_shape[1] or 224, input_shape[2] or 224, input_shape[3])  # any size: check at 224
  try:
    model = empty(lambda: models.KerasNet(*keras_layout(layer_list, shapes, rngs=nnx.Rngs(0)),
                                          image_shape))
  except KeyError as e:
    raise ValueError(f'{path}: no weight {e} for its layer') from e
  model.check(image_shape)
  entries = {}
  for layer, module in zip([e for e in layer_list if e['class_name'] != 'InputLayer'], model.blocks):
    if module is None:
      continue
    kind, name = layer['class_name'], layer['config']['name']
    if kind == 'DepthwiseConv2D':
      entries[f'{name}/depthwise_kernel'] = (module.kernel, _depthwise)
      if module.bias is not None:
        entries[f'{name}/bias'] = (module.bias, identity)
      continue
    for suffix, (attr, convert) in _TFJS_PARAMS[kind].items():
      if getattr(module, attr, None) is not None:
        entries[f'{name}/{suffix}'] = (getattr(module, attr), convert)
  assign(entries, arrays, str(path))
  model.eval()
  return model
