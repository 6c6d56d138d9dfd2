"""How the package's programs are compiled: XLA's options, and convolutions in XLA:CPU's fast layout.

`COMPILER_OPTIONS` / `SEQUENTIAL_OPTIONS`: fields of XLA's DebugOptions, passed as
`jax.jit(..., compiler_options=...)`; backends other than XLA:CPU ignore them.

`canonical_convolutions`: a function whose convolutions all take XLA:CPU's canonical layout. XLA:CPU
puts a convolution into that layout (batch, spatial, feature; kernel spatial, in, out) only in a
program's entry computation; inside a loop body (`lax.scan`, `fori_loop`, `while_loop`, `lax.map`) one
in another layout, such as the transposed convolution of every backward pass, runs on a generic
emitter: measured here, a SmallConvNet's gradient of 8 images at 64 px took 22 ms inside a
`fori_loop` and 5 ms unrolled. The methods that take gradients in a loop (SmoothGrad, Integrated
Gradients, Blur IG, Guided IG) run them through it.
"""

import jax
import numpy as np

from saliency_jax import rules

# XLA:CPU's newer fusion emitters turn the backward pass of a MobileNet (depthwise layers written as
# taps, relu6) into code several times slower than the older emitters; on the other models the older
# ones are as fast or slightly faster. The colour models of the GraphCut pipeline: the same costs, bit
# for bit on the ILSVRC config's maps, compiled in 2.3 s instead of 3.9 and computed 8% faster.
COMPILER_OPTIONS = {'xla_cpu_use_fusion_emitters': False}

# The sequential kernels (`saliency.each`) also turn off XLA:CPU's YNNPACK fusions, which slow these
# one-image programs down (measured by hand on a MobileNet's 10 crops x 5 classes at 224 px).
# Other kernels, other float round-off: where a ReLU's (or relu6's) input lies within round-off of its
# kink, its gate, and so the map at the pixels behind it, can differ from the vmapped kernel's.
SEQUENTIAL_OPTIONS = {**COMPILER_OPTIONS, 'xla_cpu_experimental_ynn_fusion_type': ''}

# XLA's default options with YNNPACK's convolutions off (its dots kept): XLA:CPU then runs every convolution
# with its own kernels. Not used by the package's programs; the methods benchmark measures it: faster on the
# backward pass of small batches, slower on the forward pass of large ones (`configs/benchmark_methods.py`).
NO_YNN_CONVOLUTIONS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}


def _canonical_conv(eqn, lhs, rhs):
  """A `conv_general_dilated` equation run in the canonical layout; the same values.

  Operands and result transposed: lhs [N, spatial..., C], kernel [spatial..., I, O], out [N, spatial..., C].
  """
  p = dict(eqn.params)
  lhs_spec, rhs_spec, out_spec = p.pop('dimension_numbers')
  n = len(lhs_spec) - 2
  canonical = jax.lax.ConvDimensionNumbers((0, n + 1, *range(1, n + 1)), (n + 1, n, *range(n)),
                                           (0, n + 1, *range(1, n + 1)))
  lhs = jax.lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  rhs = jax.lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
  out = jax.lax.conv_general_dilated_p.bind(lhs, rhs, dimension_numbers=canonical, **p)
  return jax.lax.transpose(out, tuple(np.argsort((out_spec[0], *out_spec[2:], out_spec[1]))))


def _run(jaxpr, consts, args) -> list:
  """Runs a jaxpr with its convolutions canonical; calls (jit, closed_call, remat) inlined, the rest as is."""
  def step(_, eqn, invals):
    called = rules.called_jaxpr(eqn)
    if eqn.primitive is jax.lax.conv_general_dilated_p:
      with eqn.ctx.manager:
        return [_canonical_conv(eqn, *invals)]
    if called is not None and eqn.primitive.name in rules.PLAIN_CALLS:
      sub, sub_consts = called
      return _run(sub, sub_consts, invals[len(invals) - len(sub.invars):])
    return rules.bind(eqn, invals)

  return rules.run(jaxpr, consts, args, step)


def canonical_convolutions(fn):
  """fn, with every convolution of its program in XLA:CPU's canonical layout (the same values).

  For a function run inside a loop body (module docstring). Traced at each call's shapes; nested jit
  calls are inlined, custom-derivative functions and control flow run as they are (their convolutions
  keep their layout), so apply it to a function that is not differentiated further: a gradient.

  Args:
    fn: a function of arrays returning a pytree of arrays.

  Returns:
    A function with fn's signature and outputs.
  """
  def canonical(*args):
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _run(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(shape), outs)

  return canonical
