"""Layers shared by the models: max-pooling with explicit switches, adaptive pooling.

Max-pooling here records, for every output, which element of its window won (the
"switch" of Zeiler & Fergus' DeconvNet). Its derivative routes the incoming signal to that
element only, which is exactly the gradient of max-pooling on inputs without ties (paper
Sect. 4: the switch IS the argmax of the gradient). It is written with strided slices and
interior padding instead of `lax.reduce_window`, for the cost of the backward pass on XLA:CPU
(what each costs: docs/results/imagenet.md).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


def pair(v: int | Sequence[int]) -> tuple[int, int]:
  """An int or a pair of ints as a pair.

  Args:
    v: an int, or a sequence of two ints.

  Returns:
    (v, v) for an int, else the two ints.

  Raises:
    ValueError: anything else.
  """
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(a) for a in v)
  if len(v) != 2:
    raise ValueError(f'expected an int or a pair of ints, got {v}')
  return v


def pool_padding(
    in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Padding
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit (lo, hi) padding of H and W for a pooling window.

  Args:
    in_hw: (H, W) of the input.
    window: (h, w) of the window.
    strides: (h, w) of the strides.
    padding: 'VALID', 'SAME' (TensorFlow's) or ((lo, hi), (lo, hi)).

  Returns:
    ((lo, hi), (lo, hi)).

  Raises:
    ValueError: any other padding.
  """
  if isinstance(padding, str):
    if padding.upper() == 'VALID':
      return ((0, 0), (0, 0))
    if padding.upper() == 'SAME':
      pads = []
      for n, k, s in zip(in_hw, window, strides):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))  # the extra pixel goes after, as in TF
      return tuple(pads)
    raise ValueError(f"padding must be 'VALID', 'SAME' or ((lo, hi), (lo, hi)), got {padding!r}")
  pads = tuple(pair(p) for p in padding)
  if len(pads) != 2:
    raise ValueError(f'padding needs two (lo, hi) pairs (H and W), got {padding!r}')
  return pads


def _geometry(shape, window, strides, padding):
  window, strides = pair(window), pair(strides)
  pads = pool_padding(shape[1:3], window, strides, padding)
  padded = [n + lo + hi for n, (lo, hi) in zip(shape[1:3], pads)]
  out = [(p - k) // s + 1 for p, k, s in zip(padded, window, strides)]
  if min(out) < 1:
    raise ValueError(f'pooling window {window} does not fit input of spatial size {shape[1:3]}')
  return window, strides, pads, padded, out


def _window_slices(xp, window, strides, out):
  """Yields (k, [B, Ho, Wo, C]) for the k-th element (row-major) of every window of xp."""
  b, _, _, c = xp.shape
  k = 0
  for i in range(window[0]):
    for j in range(window[1]):
      end = (b, i + strides[0] * (out[0] - 1) + 1, j + strides[1] * (out[1] - 1) + 1, c)
      yield k, lax.slice(xp, (0, i, j, 0), end, (1, strides[0], strides[1], 1))
      k += 1


def max_pool_switches(
    x: jax.Array, window=(2, 2), strides=None, padding: Padding = 'VALID'
) -> tuple[jax.Array, jax.Array]:
  """Max-pooling that also returns its switches.

  Args:
    x: [B, H, W, C] float.
    window: an int or a pair.
    strides: an int or a pair (None: the window).
    padding: 'VALID', 'SAME' or ((lo, hi), (lo, hi)); padded cells never win.

  Returns:
    (y [B, Ho, Wo, C], switches [B, Ho, Wo, C] int32): the row-major position inside its window of the
    element each output took (the first one on ties).
  """
  strides = window if strides is None else strides
  window, strides, pads, _, out = _geometry(x.shape, window, strides, padding)
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  # A running comparison over the window's elements: elementwise ops on strided slices, which
  # XLA fuses into one loop (a stacked argmax is a slow variadic reduce on CPU).
  y, switches = None, None
  for k, v in _window_slices(xp, window, strides, out):
    if y is None:
      y, switches = v, jnp.zeros(v.shape, jnp.int32)
    else:
      better = v > y
      y, switches = jnp.where(better, v, y), jnp.where(better, k, switches)
  return y, switches


def unpool(
    y: jax.Array, switches: jax.Array, input_shape: Sequence[int], window=(2, 2), strides=None,
    padding: Padding = 'VALID',
) -> jax.Array:
  """DeconvNet unpooling: puts each value of `y` back where its switch points.

  Overlapping windows add up. Written out by hand (pads with interior dilation), independently of
  autodiff, so that it can serve as the explicit DeconvNet of Sect. 4.

  Args:
    y: [B, Ho, Wo, C].
    switches: [B, Ho, Wo, C] int32, from `max_pool_switches`.
    input_shape: the pooling's input shape [B, H, W, C].
    window: an int or a pair.
    strides: an int or a pair (None: the window).
    padding: as the pooling took it.

  Returns:
    [B, H, W, C].

  Raises:
    ValueError: y and switches that do not match a pooling of `input_shape`.
  """
  strides = window if strides is None else strides
  window, strides, pads, padded, out = _geometry(tuple(input_shape), window, strides, padding)
  if y.shape[1:3] != tuple(out) or switches.shape != y.shape:
    raise ValueError(f'unpool: y {y.shape} / switches {switches.shape} do not match a pooled {input_shape}')
  total = jnp.zeros((y.shape[0], *padded, y.shape[3]), y.dtype)
  k = 0
  for i in range(window[0]):
    for j in range(window[1]):
      part = jnp.where(switches == k, y, 0)
      cfg = [(0, 0, 0),
             (i, padded[0] - i - strides[0] * (out[0] - 1) - 1, strides[0] - 1),
             (j, padded[1] - j - strides[1] * (out[1] - 1) - 1, strides[1] - 1),
             (0, 0, 0)]
      total = total + lax.pad(part, jnp.zeros((), y.dtype), cfg)
      k += 1
  (hlo, _), (wlo, _) = pads
  return total[:, hlo:hlo + input_shape[1], wlo:wlo + input_shape[2]]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  pads = pool_padding(x.shape[1:3], window, strides, padding)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


@_max_pool.defjvp
def _max_pool_jvp(window, strides, padding, primals, tangents):
  (x,), (x_dot,) = primals, tangents
  y, switches = max_pool_switches(x, window, strides, padding)
  window2, strides2, pads, _, out = _geometry(x.shape, window, strides, padding)
  # The tangent is linear in x_dot (strided slices, a fixed selection), so JAX transposes it
  # into interior pads: the reverse pass routes each cotangent to its switch, as a DeconvNet.
  x_dot = jnp.pad(x_dot, ((0, 0), *pads, (0, 0)))
  y_dot = sum(jnp.where(switches == k, v, 0) for k, v in _window_slices(x_dot, window2, strides2, out))
  return y, y_dot


def max_pool(x: jax.Array, window=(2, 2), strides=None, padding: Padding = 'VALID') -> jax.Array:
  """Max-pooling with a switch-routing derivative.

  Forward and reverse mode both work; the derivative sends everything to each window's argmax (the first
  maximum on ties, where `reduce_window` would too), and costs about a forward pass on XLA:CPU.

  Args:
    x: [B, H, W, C].
    window: an int or a pair.
    strides: an int or a pair (None: the window).
    padding: 'VALID', 'SAME' or ((lo, hi), (lo, hi)).

  Returns:
    [B, Ho, Wo, C].
  """
  strides = window if strides is None else strides
  padding = padding.upper() if isinstance(padding, str) else tuple(pair(p) for p in padding)
  _geometry(x.shape, window, strides, padding)  # checks the window fits, before tracing
  return _max_pool(x, pair(window), pair(strides), padding)


def adaptive_avg_pool(x: jax.Array, output_size) -> jax.Array:
  """PyTorch's AdaptiveAvgPool2d: bin i spans [floor(i H / n), ceil((i + 1) H / n)).

  Args:
    x: [B, H, W, C].
    output_size: an int or (h, w).

  Returns:
    [B, h, w, C].
  """
  oh, ow = pair(output_size)
  h, w = x.shape[1:3]
  if h % oh == 0 and w % ow == 0:
    return jnp.mean(x.reshape(x.shape[0], oh, h // oh, ow, w // ow, x.shape[3]), axis=(2, 4))
  rows = []
  for i in range(oh):
    r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, r0:r1, c0:c1], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding: Padding = 'SAME',
                   dilation=(1, 1)) -> jax.Array:
  """Depthwise convolution as a sum over the kernel's taps.

  The same function as `lax.conv_general_dilated(..., feature_group_count=C)`, written as kh * kw
  shifted, strided slices times per-channel weights: on XLA:CPU the grouped convolution is several times
  slower, forward and backward, than this, and MobileNets are mostly depthwise layers.

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, 1, C * m] (grouped-conv layout: output channel c * m + j reads input channel c).
    strides: an int or a pair.
    padding: 'SAME', 'VALID' or explicit pairs.
    dilation: an int or a pair.

  Returns:
    [B, Ho, Wo, C * m].
  """
  kh, kw, _, cm = kernel.shape
  m = cm // x.shape[-1]
  if m > 1:
    x = jnp.repeat(x, m, axis=-1)
  (sh, sw), (dh, dw) = pair(strides), pair(dilation)
  eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1  # the dilated kernel's extent
  pads = (padding if not isinstance(padding, str)
          else lax.padtype_to_pads(x.shape[1:3], (eh, ew), (sh, sw), padding))
  x = jnp.pad(x, ((0, 0), *[tuple(p) for p in pads], (0, 0)))
  ho, wo = (x.shape[1] - eh) // sh + 1, (x.shape[2] - ew) // sw + 1
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      top, left = i * dh, j * dw
      out = out + x[:, top:top + (ho - 1) * sh + 1:sh, left:left + (wo - 1) * sw + 1:sw, :] * kernel[i, j, 0]
  return out


def _conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


_strided_conv = jax.custom_jvp(_conv, nondiff_argnums=(2, 3))  # the convolution, with the JVP below


def _strided_conv_jvp(strides, pads, primals, tangents):
  (x, kernel), (x_dot, kernel_dot) = primals, tangents
  y = _conv(x, kernel, strides, pads)
  terms = []
  if not isinstance(x_dot, jax.custom_derivatives.SymbolicZero):
    # every output pixel's receptive field [B, Ho, Wo, kh * kw * C] times the kernel as a matrix: JAX
    # transposes the strided slices into interior pads and the product into one matrix product
    kh, kw, c, o = kernel.shape
    xp = jnp.pad(x_dot, ((0, 0), *pads, (0, 0)))
    fields = jnp.concatenate([s for _, s in _window_slices(xp, (kh, kw), strides, y.shape[1:3])], axis=-1)
    terms.append(jnp.einsum('bhwk,ko->bhwo', fields, kernel.reshape(kh * kw * c, o)))
  if not isinstance(kernel_dot, jax.custom_derivatives.SymbolicZero):
    terms.append(_conv(x, kernel_dot, strides, pads))
  return y, sum(terms) if terms else jnp.zeros_like(y)


_strided_conv.defjvp(_strided_conv_jvp, symbolic_zeros=True)


def strided_conv(x: jax.Array, kernel: jax.Array, strides, padding: Padding = 'SAME') -> jax.Array:
  """Convolution with strides whose derivative in the input is strided slices and one matrix product.

  The forward pass is `lax.conv_general_dilated`'s (what `nnx.Conv` computes, to the bit); the
  derivative in x is the same linear map written as strided slices of the input times the kernel as a
  matrix, so the backward pass is one matrix product and interior pads. On XLA:CPU the convolution's own
  transpose (an input-dilated convolution) is several times slower than that inside the sequential
  saliency kernels. The derivative in the kernel is the convolution's own. `graph.apply` uses it on CPU
  only (the matrix of receptive fields takes kh * kw times the input's memory).

  Args:
    x: [B, H, W, C].
    kernel: [kh, kw, C, O] (no groups, no dilation).
    strides: an int or a pair.
    padding: 'SAME', 'VALID' or explicit pairs.

  Returns:
    [B, Ho, Wo, O].
  """
  window, strides = pair(kernel.shape[:2]), pair(strides)
  pads = pool_padding(x.shape[1:3], window, strides, padding)
  return _strided_conv(x, kernel, strides, pads)
