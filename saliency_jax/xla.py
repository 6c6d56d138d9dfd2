"""How the package's programs are compiled: XLA's options, and convolutions in XLA:CPU's fast layout.

`COMPILER_OPTIONS` / `SEQUENTIAL_OPTIONS`: fields of XLA's DebugOptions, passed as
`jax.jit(..., compiler_options=...)`; backends other than XLA:CPU ignore them.

`jit`: the programs whose time is their backward pass to the input (the gradient, gradient x input,
guided backprop, SmoothGrad, the IG family, GradientSHAP, DeepLift, LRP, the saliency maps, DeconvNet's
reconstructions) add to their options those named by `backward_options()`, chosen with `use`
(`BACKWARD_OPTIONS`: by default YNNPACK's convolutions off, faster on these passes; `'ynn_convolutions'`
adds nothing: the options every result kept before that default was made under, bit for bit, which the
experiment configs that made them name).

`canonical_convolutions`: a function whose convolutions all take XLA:CPU's canonical layout. XLA:CPU
puts a convolution into that layout (batch, spatial, feature; kernel spatial, in, out) only in a
program's entry computation; inside a loop body (`lax.scan`, `fori_loop`, `while_loop`, `lax.map`) one
in another layout, such as the transposed convolution of every backward pass, runs on a generic
emitter: measured here, a SmallConvNet's gradient of 8 images at 64 px took 22 ms inside a
`fori_loop` and 5 ms unrolled. The methods that take gradients in a loop (SmoothGrad, Integrated
Gradients, Blur IG, Guided IG) run them through it.
"""

import contextlib
import functools

import jax
import numpy as np

from saliency_jax import rules
from saliency_jax.errors import UserError

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
# with its own kernels: faster on the backward pass (whose transposed convolutions YNNPACK runs slowly),
# slower on the forward pass of large batches (`configs/benchmark_methods.py` measures both).
NO_YNN_CONVOLUTIONS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}

# What the programs of `jit` (their time is the backward pass to the input) add to their options, by name:
# the default, and nothing (XLA's choice, YNNPACK's convolutions on: every kept result before the default).
BACKWARD_OPTIONS = {
    'no_ynn_convolutions': NO_YNN_CONVOLUTIONS,
    'ynn_convolutions': {},
}
DEFAULT_BACKWARD_OPTIONS = 'no_ynn_convolutions'
_backward = [DEFAULT_BACKWARD_OPTIONS]  # the name in use (`use`)


def backward_options() -> str:
  """The name of the `BACKWARD_OPTIONS` the programs of `jit` now take.

  Returns:
    A key of `BACKWARD_OPTIONS`.
  """
  return _backward[0]


@contextlib.contextmanager
def use(name: str):
  """Within the block, the programs of `jit` add `BACKWARD_OPTIONS[name]` to theirs (for the whole process).

  The maps change at float round-off between the two (where a ReLU's input lies within round-off of its
  kink, the map at the pixels behind it can change more). An experiment config's `backward_options`
  names the set its results were made under (`under_config`).

  Args:
    name: a key of `BACKWARD_OPTIONS`.

  Yields:
    None.

  Raises:
    UserError: an unknown name.
  """
  if name not in BACKWARD_OPTIONS:
    raise UserError(f'backward_options must be one of {sorted(BACKWARD_OPTIONS)}, got {name!r}')
  before = _backward[0]
  _backward[0] = name
  try:
    yield
  finally:
    _backward[0] = before


def compiler_options(name: str, options: dict = COMPILER_OPTIONS) -> dict:
  """The options a program of `jit` with its own `options` compiles with under `BACKWARD_OPTIONS[name]`.

  Args:
    name: a key of `BACKWARD_OPTIONS`.
    options: the program's own options.

  Returns:
    A dict of XLA's DebugOptions fields.
  """
  return {**options, **BACKWARD_OPTIONS[name]}


def under_config(run):
  """A job's `run(config, ...)` under its config's `backward_options` (`use`; none named: those in use).

  However the job is called (an entry point, a test, a notebook), its backward passes take the options its
  config names.

  Args:
    run: the job's `run(config, *args, **kwargs)`.

  Returns:
    The wrapped function.
  """
  @functools.wraps(run)
  def wrapped(config, *args, **kwargs):
    with use(config.get('backward_options', backward_options())):
      return run(config, *args, **kwargs)

  return wrapped


class Program:
  """A function jitted once per set of `BACKWARD_OPTIONS` (added to its options), run with the set in use."""

  def __init__(self, fn, options: dict, **jit_kwargs):
    functools.update_wrapper(self, fn)
    self._compiled = {name: jax.jit(fn, compiler_options=compiler_options(name, options), **jit_kwargs)
                      for name in BACKWARD_OPTIONS}

  def __call__(self, *args, **kwargs):
    """The jitted function under the options in use.

    Args:
      *args: its arguments.
      **kwargs: its keyword arguments.

    Returns:
      Its outputs.
    """
    return self._compiled[_backward[0]](*args, **kwargs)

  def lower(self, *args, **kwargs):
    """`jax.jit(...).lower` under the options in use (for `.compile().memory_analysis()`).

    Args:
      *args: the call's arguments.
      **kwargs: its keyword arguments.

    Returns:
      The lowered program.
    """
    return self._compiled[_backward[0]].lower(*args, **kwargs)


def jit(fn=None, *, options: dict = COMPILER_OPTIONS, **jit_kwargs):
  """`jax.jit` for a program whose time is its backward pass to the input: `options` and those of `use`.

  As a decorator (`@xla.jit`, `@functools.partial(xla.jit, static_argnames=...)`) or a call.

  Args:
    fn: the function.
    options: its own compiler options (the package's, `COMPILER_OPTIONS`, by default).
    **jit_kwargs: `jax.jit`'s other arguments (static_argnames, ...).

  Returns:
    A `Program`.
  """
  if fn is None:
    return functools.partial(jit, options=options, **jit_kwargs)
  return Program(fn, options, **jit_kwargs)


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
