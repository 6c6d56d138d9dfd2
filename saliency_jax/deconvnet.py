"""Gradient vs DeconvNet (paper Sect. 4): ReLU backward rules and an explicit Zeiler-Fergus DeconvNet.

Backward rules. `gradient_relu`, `deconvnet_relu` and `guided_relu` all compute relu(x) forward;
backward, given the incoming signal g, they return
  gradient   g * 1(x > 0)               the true subgradient (the gate of the forward input);
  deconvnet  g * 1(g > 0)               Zeiler & Fergus' rectified reconstruction;
  guided     g * 1(x > 0) * 1(g > 0)    guided backpropagation (Springenberg et al. 2015).
Passed as `relu=` to any model (or to the functions of `saliency`), one VJP computes the gradient,
the DeconvNet reconstruction or the guided-backprop map.

An explicit DeconvNet. `reconstruct` runs Zeiler & Fergus' procedure written out, with no autodiff:
the forward pass records every max-pool's switches and every ReLU's input; the reconstruction then
goes down from a neuron of any layer (or a class score) to the input by unpooling through the
switches (`layers.unpool`), rectifying at every ReLU, convolving with the flipped, transposed
filters, and multiplying by the transposed weights of dense layers. Two layer kinds that Zeiler &
Fergus' chain nets did not have:
  - BatchNorm (inference mode) is a fixed per-channel affine map x -> a x + b; the reconstruction
    goes through its linear part (times a), as it goes through a convolution without its bias.
  - A residual block's output is the sum of its branch and its shortcut. The transpose of a sum is
    a copy: the reconstruction at the block's output goes down both the branch and the shortcut
    (option A: subsampling and zero channels, transposed: zero-filling and dropping channels) and
    the two add at the block's input, where the forward pass had copied its input to both. That is
    what backpropagation does, and the only way to keep the DeconvNet linear in its signal on a
    network that is not a chain.
The other linear layers (global average pooling, adaptive average pooling, flattening) are
transposed the same way. With `rule='gradient'` the same procedure is backpropagation written out.
Its rectifications are written apart from the backward rules' gates, so that comparing the two
compares two implementations.

The Sect. 4 comparison. `compare` runs both on one model and measures, at every ReLU, where the
VJPs of that ReLU under the gradient and the DeconvNet rules differ on the signal that reaches it,
against where the forward gate 1(x > 0) and the backward gate 1(g > 0) disagree
(`gate_statistics`); the rules under test are an argument, so that a wrong one shows.

`layer_names(model)` lists the layers a reconstruction can start from (torchvision-style names for
VGG16; 'scores' is the class-score layer of every model).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from saliency_jax import graph, layers, saliency, xla
from saliency_jax.graph import Step

# ----------------------------------------------------------------------------- backward rules


def _relu_fwd(x):
  return jnp.maximum(x, 0), x


@jax.custom_vjp
def gradient_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass is the gradient: g * 1(x > 0), `jax.nn.relu`'s subgradient (0 at 0).

  Args:
    x: any array.

  Returns:
    relu(x), x's shape and dtype.
  """
  return jnp.maximum(x, 0)


@jax.custom_vjp
def deconvnet_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass is the DeconvNet's: g * 1(g > 0), Zeiler & Fergus' rectification.

  Args:
    x: any array.

  Returns:
    relu(x), x's shape and dtype.
  """
  return jnp.maximum(x, 0)


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass is guided backpropagation's: g * 1(x > 0) * 1(g > 0).

  Args:
    x: any array.

  Returns:
    relu(x), x's shape and dtype.
  """
  return jnp.maximum(x, 0)


def gradient_gate(x: jax.Array, g: jax.Array) -> jax.Array:
  """The gradient's gate: g where x > 0 (the same select as `jax.nn.relu`'s derivative, bit for bit).

  Args:
    x: the ReLU's forward input.
    g: the signal coming back, x's shape.

  Returns:
    The signal passed on, x's shape.
  """
  return jnp.where(x > 0, g, jnp.zeros_like(g))


def deconvnet_gate(x: jax.Array, g: jax.Array) -> jax.Array:
  """The DeconvNet's gate: g where g > 0, whatever x.

  Args:
    x: the ReLU's forward input.
    g: the signal coming back, x's shape.

  Returns:
    The signal passed on, x's shape.
  """
  del x
  return jnp.where(g > 0, g, jnp.zeros_like(g))


def guided_gate(x: jax.Array, g: jax.Array) -> jax.Array:
  """Guided backpropagation's gate: g where x > 0 and g > 0.

  Args:
    x: the ReLU's forward input.
    g: the signal coming back, x's shape.

  Returns:
    The signal passed on, x's shape.
  """
  return jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g))


gradient_relu.defvjp(_relu_fwd, lambda x, g: (gradient_gate(x, g),))
deconvnet_relu.defvjp(_relu_fwd, lambda x, g: (deconvnet_gate(x, g),))
guided_relu.defvjp(_relu_fwd, lambda x, g: (guided_gate(x, g),))

RULES = {'gradient': gradient_relu, 'deconvnet': deconvnet_relu, 'guided': guided_relu}
GATES = {'gradient': gradient_gate, 'deconvnet': deconvnet_gate, 'guided': guided_gate}


def _check_rules(rules) -> None:
  missing = {'gradient', 'deconvnet'} - set(rules)
  if missing:
    raise ValueError(f'rules must map gradient and deconvnet to backward rules; missing {sorted(missing)}')


# ----------------------------------------------------------------------------- the network as steps


def steps(model) -> list[Step]:
  """The model's layer graph (`model.steps()`, see `saliency_jax.graph`).

  Args:
    model: a model with a layer graph.

  Returns:
    Its steps in forward order; the last gives the scores.
  """
  return graph.steps_of(model)


def layer_names(model) -> list[str]:
  """The layers a reconstruction can start from, in forward order.

  Args:
    model: a model with a layer graph.

  Returns:
    Their names; 'scores' is an alias of the last.
  """
  return graph.names(model)


def _conv_padding(conv: nnx.Conv, in_hw) -> tuple[tuple[int, int], tuple[int, int]]:
  for attr in ('input_dilation', 'kernel_dilation'):
    if layers.pair(getattr(conv, attr) or 1) != (1, 1):
      raise ValueError(f'the explicit DeconvNet supports undilated convolutions only ({attr} is set)')
  if conv.feature_group_count not in (1, conv.in_features):
    raise ValueError('the explicit DeconvNet supports ungrouped and depthwise convolutions only')
  padding = conv.padding
  if isinstance(padding, str) and padding.upper() not in ('SAME', 'VALID'):
    raise ValueError(f'unsupported convolution padding {padding!r}')
  return layers.pool_padding(in_hw, conv.kernel_size, layers.pair(conv.strides or 1), padding)


def _batch_norm_scale(bn: nnx.BatchNorm) -> jax.Array:
  """The linear part a of inference-mode BatchNorm y = a x + b: scale / sqrt(var + eps)."""
  if not bn.use_running_average:
    raise ValueError(f'BatchNorm must be in inference mode (call model.eval()); got {bn}')
  scale = bn.scale[...] if bn.scale is not None else 1.0
  return scale * lax.rsqrt(bn.var[...] + bn.epsilon)


def forward(model, images: jax.Array, *, layer: str = 'scores', relu: Callable = jax.nn.relu,
            record: dict | None = None) -> jax.Array:
  """The model's forward pass step by step, up to and including `layer`.

  Equals `model(images, relu=relu)` for layer='scores'. The ReLUs go through `relu` (so a VJP of this
  function with a backward rule reconstructs from any layer).

  Args:
    model: a model with a layer graph.
    images: float [B, H, W, C].
    layer: the last layer to run (`layer_names(model)`).
    relu: the ReLU (rule) the model's rectifications run with.
    record: a dict in which the max-pools record their switches, or None.

  Returns:
    The layer's output [B, ...].
  """
  model_steps = steps(model)
  return graph.run(model_steps, images, relu=relu, stop=graph.index(model_steps, layer), record=record)


# ----------------------------------------------------------------------------- the explicit reconstruction

# The ReLU steps of the explicit reconstruction, written apart from the backward rules' gates above:
# comparing the two (the Sect. 4 report) then compares two implementations, not one with itself.
_RECTIFICATIONS = {
    'gradient': lambda x, g: g * (x > 0),
    'deconvnet': lambda x, g: jnp.maximum(g, 0),
    'guided': lambda x, g: jnp.maximum(g * (x > 0), 0),
}


def _rectification(rule: str) -> Callable:
  if rule not in _RECTIFICATIONS:
    raise ValueError(f'rule must be one of {sorted(_RECTIFICATIONS)}, got {rule!r}')
  return _RECTIFICATIONS[rule]


def transposed_conv(conv: nnx.Conv, g: jax.Array, in_hw) -> jax.Array:
  """Zeiler & Fergus' deconvolution of a convolution's output signal, written out.

  The signal is dilated by the stride (zeros between its pixels) and convolved with the filters flipped
  in both spatial directions and with their input and output channels swapped; the padding puts every
  output pixel back over the input pixels that fed it. No bias. A depthwise convolution (one group per
  input channel, m outputs each) is transposed group by group: each input channel gathers back from its
  own m output channels.

  Args:
    conv: the NNX convolution.
    g: [B, Ho, Wo, O], the signal at its output.
    in_hw: (H, W) of its input.

  Returns:
    [B, H, W, I].
  """
  (kh, kw), (sh, sw) = conv.kernel_size, layers.pair(conv.strides or 1)
  (plo_h, _), (plo_w, _) = _conv_padding(conv, in_hw)
  ho, wo = g.shape[1:3]
  kernel = conv.kernel[...][::-1, ::-1]
  groups = conv.feature_group_count
  if groups == 1:
    flipped = jnp.swapaxes(kernel, 2, 3)  # [kh, kw, O, I]
  else:  # [kh, kw, 1, C * m], output channel c * m + j reads input c -> [kh, kw, m, C]
    flipped = jnp.swapaxes(kernel.reshape(kh, kw, groups, -1), 2, 3)
  pads = ((kh - 1 - plo_h, in_hw[0] + plo_h - (ho - 1) * sh - 1),
          (kw - 1 - plo_w, in_hw[1] + plo_w - (wo - 1) * sw - 1))
  return lax.conv_general_dilated(g, flipped.astype(g.dtype), (1, 1), pads, lhs_dilation=(sh, sw),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def _transposed_adaptive_avg_pool(g: jax.Array, in_hw, size) -> jax.Array:
  """Each output bin's signal, divided by the bin's area, spread over the bin (bins may overlap)."""
  (h, w), (oh, ow) = in_hw, layers.pair(size)
  out = jnp.zeros((g.shape[0], h, w, g.shape[3]), g.dtype)
  for i in range(oh):
    r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    for j in range(ow):
      c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      share = g[:, i, j] / ((r1 - r0) * (c1 - c0))
      out = out.at[:, r0:r1, c0:c1].add(share[:, None, None, :])
  return out


def _transposed_shortcut(step: Step, g: jax.Array, in_shape) -> jax.Array:
  p, s = step.options['pad_channels'], step.options['stride']
  if not p:
    return g
  return jnp.zeros(in_shape, g.dtype).at[:, ::s, ::s].set(g[..., p:g.shape[3] - p])


def _transposed_clip(x: jax.Array, g: jax.Array, top: float) -> jax.Array:
  """The derivative of min(x, top): the signal where x < top, half of it at x == top.

  As `lax.min`'s derivative shares a tie.
  """
  return jnp.where(x < top, g, jnp.where(x == top, g / 2, jnp.zeros_like(g)))


def _backward_step(step: Step, g: jax.Array, record: dict, rule: str, signals: dict | None) -> jax.Array:
  """The signal g at the step's output -> the signal at its input, written out (no autodiff)."""
  x = record[step.name]['input']
  if signals is not None:
    signals[step.name] = g
  if step.kind in ('conv', 'depthwise_conv'):
    return transposed_conv(step.module, g, x.shape[1:3])
  if step.kind == 'batch_norm':
    return g * _batch_norm_scale(step.module).astype(g.dtype)
  if step.kind == 'dense':
    return g @ step.module.kernel[...].T.astype(g.dtype)
  if step.kind == 'relu':
    return _rectification(rule)(x, g)
  if step.kind == 'clip':
    return _transposed_clip(x, g, step.options['max'])
  if step.kind == 'max_pool':
    o = step.options
    return layers.unpool(g, record[step.name]['switches'], x.shape, o['window'], o['strides'], o['padding'])
  if step.kind == 'adaptive_avg_pool':
    return _transposed_adaptive_avg_pool(g, x.shape[1:3], step.options['size'])
  if step.kind == 'mean':
    return jnp.broadcast_to(g[:, None, None, :] / (x.shape[1] * x.shape[2]), x.shape)
  if step.kind in ('flatten', 'reshape'):
    return g.reshape(x.shape)
  if step.kind == 'pad':
    (top, _), (left, _) = step.options['padding']
    return g[:, top:top + x.shape[1], left:left + x.shape[2]]
  if step.kind in ('dropout', 'identity'):  # inference mode: the identity
    return g
  if step.kind == 'block':
    g = _backward_step(step.inner[-1], g, record, rule, signals)  # the output ReLU, after the sum
    branch = g
    for inner in reversed(step.inner[:-1]):
      branch = _backward_step(inner, branch, record, rule, signals)
    return branch + _transposed_shortcut(step, g, x.shape)
  raise ValueError(f'step {step.name!r}: unknown kind {step.kind!r}')


def _one_hot_signal(out: jax.Array, neurons) -> jax.Array:
  """[B, ...] zeros with a 1 at each image's neuron (a flat index into one image's layer output)."""
  b, size = out.shape[0], out[0].size
  neurons = jnp.broadcast_to(jnp.asarray(neurons), (b,))
  return jax.nn.one_hot(neurons, size, dtype=out.dtype).reshape(out.shape)


def _check(model, images, layer, neurons, signal):
  images = saliency.check_images(model, images)
  saliency.check_input_size(model, images.shape[1:3])
  graph.index(steps(model), layer)
  saliency.check_eval_mode(model)
  if (neurons is None) == (signal is None):
    raise ValueError('give exactly one of neurons (a flat index per image) and signal '
                     '([B, ...] at the layer)')
  out = jax.eval_shape(functools.partial(forward, layer=layer), model, images)
  if neurons is not None:
    neurons = jnp.asarray(neurons)
    if not jnp.issubdtype(neurons.dtype, jnp.integer) or neurons.ndim > 1 or (
        neurons.ndim == 1 and neurons.shape[0] != images.shape[0]):
      raise ValueError(f'neurons must be an int or [B] ints (flat indices into one image\'s {layer} output '
                       f'{out.shape[1:]}), got {neurons.dtype} {neurons.shape}')
    size = 1
    for d in out.shape[1:]:
      size *= d
    if neurons.size and (int(neurons.min()) < 0 or int(neurons.max()) >= size):
      raise ValueError(f'neurons must lie in [0, {size}) for layer {layer} {out.shape[1:]}')
  elif tuple(jnp.shape(signal)) != tuple(out.shape):
    raise ValueError(f'signal has shape {jnp.shape(signal)}; layer {layer} outputs {out.shape}')
  return images, neurons


@functools.partial(xla.jit, options={}, static_argnames=('layer', 'rule'))
def _reconstruct(model, images, neurons, signal, *, layer, rule):
  model_steps = steps(model)
  last = graph.index(model_steps, layer)
  record = {}
  out = forward(model, images, layer=layer, record=record)
  g = _one_hot_signal(out, neurons) if signal is None else signal.astype(out.dtype)
  for step in reversed(model_steps[:last + 1]):
    g = _backward_step(step, g, record, rule, None)
  return g


def reconstruct(model, images, *, layer: str = 'scores', neurons=None, signal=None,
                rule: str = 'deconvnet') -> jax.Array:
  """Zeiler & Fergus' DeconvNet reconstruction at the input, written out without autodiff.

  Args:
    model: PaperConvNet, SmallConvNet, VGG16, CifarResNet or a Keras net, in inference mode.
    images: float [B, H, W, C], preprocessed as the model expects.
    layer: where the reconstruction starts (`layer_names(model)`; 'scores' = the class scores).
    neurons: int or [B] ints, the neuron of each image: a flat index into one image's output of
      `layer` (the class for 'scores'); the reconstruction starts from a unit signal there.
      Zeiler & Fergus start from the neuron's activation instead: a positive factor, which
      changes no rectification and scales the result.
    signal: instead of neurons, any [B, ...] signal at the layer's output.
    rule: 'deconvnet' (rectify the reconstruction), 'gradient' (gate by the forward input: this
      is backpropagation written out) or 'guided' (both).

  Returns:
    [B, H, W, C].
  """
  _rectification(rule)
  images, neurons = _check(model, images, layer, neurons, signal)
  return _reconstruct(model, images, neurons, None if signal is None else jnp.asarray(signal),
                      layer=layer, rule=rule)


def vjp_reconstruction(model, images, *, layer: str = 'scores', neurons=None, signal=None,
                       relu: Callable = deconvnet_relu) -> jax.Array:
  """The same reconstruction by autodiff: the VJP of the layer's output with ReLU rule `relu`.

  For layer='scores' this is `saliency.input_gradients(model, images, neurons, relu=relu)`, the model's
  own forward pass; for other layers, the VJP of `forward(..., layer=layer)`.

  Args:
    model: a model with a layer graph (any model for layer='scores').
    images: float [B, H, W, C].
    layer: where the reconstruction starts.
    neurons: int or [B] ints, as `reconstruct` takes them.
    signal: instead of neurons, any [B, ...] signal at the layer's output.
    relu: the backward rule.

  Returns:
    [B, H, W, C].
  """
  images, neurons = _check(model, images, layer, neurons, signal)
  if layer == 'scores' and signal is None:
    return saliency.input_gradients(model, images, jnp.broadcast_to(neurons, images.shape[:1]), relu=relu)
  return _vjp(model, images, neurons, None if signal is None else jnp.asarray(signal), layer=layer, relu=relu)


@functools.partial(xla.jit, options={}, static_argnames=('layer', 'relu'))
def _vjp(model, images, neurons, signal, *, layer, relu):
  saliency.check_relu(model, images, relu)
  out, vjp = jax.vjp(lambda x: forward(model, x, layer=layer, relu=relu), images)
  g = _one_hot_signal(out, neurons) if signal is None else signal.astype(out.dtype)
  return vjp(g)[0]


# ----------------------------------------------------------------------------- the step-by-step comparison


def _step_vjp(step: Step, x: jax.Array, g: jax.Array, relu: Callable) -> jax.Array:
  return jax.vjp(lambda h: graph.apply(step, h, relu), x)[1](g)[0]


def _gate_counts(x: jax.Array, g: jax.Array, gradient_out: jax.Array, deconvnet_out: jax.Array) -> dict:
  """Counts at one ReLU as arrays (computable under jit); see `gate_statistics`."""
  # The prediction reads only the forward input and the signal; the measurement only the rules' outputs.
  disagree = (g != 0) & ((x > 0) != (g > 0))
  differ = gradient_out != deconvnet_out
  return {'units': jnp.asarray(x.size), 'signal_nonzero': jnp.sum(g != 0), 'disagree': jnp.sum(disagree),
          'differ': jnp.sum(differ), 'same_set': jnp.all(disagree == differ)}


def _to_python(counts: dict) -> dict:
  return {k: bool(v) if k == 'same_set' else int(v) for k, v in counts.items()}


@functools.partial(xla.jit, options={}, static_argnames=('layer', 'gradient_rule', 'deconvnet_rule'))
def _trace(model, images, neurons, *, layer, gradient_rule, deconvnet_rule):
  """Runs the explicit DeconvNet, checking every step on the signal that reaches it.

  Returns per-step arrays: for every non-ReLU step, max |explicit - autodiff VJP of that step| on
  the same incoming signal; for every ReLU, `_gate_counts` of the two rules' VJPs of that ReLU step
  on the same incoming signal; and the final reconstruction.
  """
  model_steps = steps(model)
  last = graph.index(model_steps, layer)
  record = {}
  out = forward(model, images, layer=layer, record=record)
  g = _one_hot_signal(out, neurons)
  signals = {}
  for step in reversed(model_steps[:last + 1]):
    g = _backward_step(step, g, record, 'deconvnet', signals)
  report = {}
  for step in graph.flat(model_steps[:last + 1]):
    x, sig = record[step.name]['input'], signals[step.name]
    if step.kind == 'relu':
      report[step.name] = _gate_counts(x, sig, _step_vjp(step, x, sig, gradient_rule),
                                       _step_vjp(step, x, sig, deconvnet_rule))
    else:
      explicit = _backward_step(step, sig, record, 'deconvnet', None)
      auto = _step_vjp(step, x, sig, jax.nn.relu)
      report[step.name] = {'max_abs_diff': jnp.max(jnp.abs(explicit - auto)),
                           'max_abs': jnp.max(jnp.abs(auto))}
  return report, g


def rule_maps(model, images, labels, progress=None) -> dict[str, np.ndarray]:
  """Each ReLU rule's map, max_c |VJP| of the labels' scores.

  Args:
    model: the model.
    images: float [B, H, W, C].
    labels: int [B].
    progress: called with no argument as each rule's maps are done, or None.

  Returns:
    {'gradient', 'deconvnet', 'guided'}: NumPy float32 [B, H, W] each.
  """
  maps = {}
  for name, rule in RULES.items():
    maps[name] = np.asarray(saliency.saliency_maps(model, images, labels, relu=rule))
    if progress is not None:
      progress()
  return maps


def gate_statistics(x: jax.Array, g: jax.Array, *, rules=RULES) -> dict:
  """Where the gradient and DeconvNet backward rules differ at one ReLU, measured on signal g.

  Sect. 4 predicts that the two rules differ exactly at the units where the signal is nonzero and the
  forward gate 1(x > 0) and the backward gate 1(g > 0) disagree. This pushes g through the rules
  themselves (`jax.vjp` of `rules['gradient']` and `rules['deconvnet']` at x) and compares where their
  outputs differ with that prediction, made from x and g alone.

  Args:
    x: the ReLU's forward input, any shape.
    g: the incoming signal, x's shape.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test (default `RULES`).

  Returns:
    {'units', 'signal_nonzero': units with g != 0, 'disagree': predicted units, 'differ': units where
    the rules' outputs differ, 'same_set': whether the two sets are equal}.

  Raises:
    ValueError: x and g of different shapes.
  """
  _check_rules(rules)
  if jnp.shape(x) != jnp.shape(g):
    raise ValueError(f'x and g must have the same shape, got {jnp.shape(x)} and {jnp.shape(g)}')
  outputs = [jax.vjp(rules[name], x)[1](g)[0] for name in ('gradient', 'deconvnet')]
  return _to_python(_gate_counts(x, g, *outputs))


def compare(model, images, *, layer: str = 'scores', neurons, rules=RULES) -> dict:
  """The Sect. 4 comparison on one model, from one layer's neurons down to the input.

  The explicit reconstruction and `jax.grad` (through `jax.nn.relu`) are the references for the rules
  under test.

  Args:
    model: a model with a layer graph.
    images: float [B, H, W, C].
    layer: where the reconstructions start.
    neurons: int or [B] ints, as `reconstruct` takes them.
    rules: {'gradient': rule, 'deconvnet': rule}, the backward rules under test (default `RULES`).

  Returns:
    A dict: deconvnet_explicit_vs_vjp: max |explicit DeconvNet - VJP with rules['deconvnet']| (and
    relative); gradient_explicit_vs_grad: max |explicit with the gradient rule - jax.grad|;
    grad_vs_gradient_relu: max |jax.grad - VJP with rules['gradient']| (expected exactly 0);
    gradient_vs_deconvnet: max |jax.grad - DeconvNet| relative (how much they differ overall);
    steps: per non-ReLU step, max |explicit transpose - autodiff VJP| on the same signal;
    relus: per ReLU, `gate_statistics` of the model's ReLU step under the two rules, on the signal the
    DeconvNet brings there.
  """
  _check_rules(rules)
  images, neurons = _check(model, images, layer, neurons, None)
  explicit = reconstruct(model, images, layer=layer, neurons=neurons)
  explicit_grad = reconstruct(model, images, layer=layer, neurons=neurons, rule='gradient')
  vjp_deconv = vjp_reconstruction(model, images, layer=layer, neurons=neurons, relu=rules['deconvnet'])
  vjp_grad_rule = vjp_reconstruction(model, images, layer=layer, neurons=neurons, relu=rules['gradient'])
  grad = vjp_reconstruction(model, images, layer=layer, neurons=neurons, relu=jax.nn.relu)
  report, _ = _trace(model, images, neurons, layer=layer, gradient_rule=rules['gradient'],
                     deconvnet_rule=rules['deconvnet'])

  def diff(a, b):
    m = float(jnp.max(jnp.abs(a - b)))
    return {'max_abs': m, 'relative': m / max(float(jnp.max(jnp.abs(b))), 1e-300)}

  out = {
      'deconvnet_explicit_vs_vjp': diff(explicit, vjp_deconv),
      'gradient_explicit_vs_grad': diff(explicit_grad, grad),
      'grad_vs_gradient_relu': diff(vjp_grad_rule, grad),
      'gradient_vs_deconvnet': diff(vjp_deconv, grad),
      'steps': {}, 'relus': {},
  }
  model_steps = steps(model)
  for step in graph.flat(model_steps[:graph.index(model_steps, layer) + 1]):
    r = report[step.name]
    if step.kind == 'relu':
      out['relus'][step.name] = _to_python(r)
    else:
      out['steps'][step.name] = {'kind': step.kind, 'max_abs_diff': float(r['max_abs_diff']),
                                 'max_abs': float(r['max_abs'])}
  return out
