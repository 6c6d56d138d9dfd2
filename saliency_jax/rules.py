"""ReLU backward rules on any JAX model, by transforming its program: no hooks, no model edits.

The package's own networks take the rule as an argument (`model(x, relu=rule)`). Any other model, a
plain function `f(x [B, H, W, C]) -> scores [B, K]`, a `functools.partial(linen_module.apply, params)`
or an NNX module whose `__call__` takes no `relu`, is traced to a jaxpr, and every rectification
found in it is replaced by the rule (`with_relu`). `as_model` wraps such a callable so that every
function of the package can call it as `model(x, relu=rule)`.

A rectification is recognised by its form and by what it is applied to (counted by `count`):
  * forms: `jax.nn.relu` (flax's `nn.relu` / `nnx.relu`: its custom-JVP call); `max(x, 0)` in either
    order (`jnp.maximum(x, 0.)`, against a zero literal, broadcast zeros, or a zero passed into a
    function: `jnp.clip(x, 0)` and `jnp.clip(x, 0, 6)`, whose upper bound stays as it is);
    `jax.nn.relu6` as a clipped ReLU, min(rule(x), 6);
  * inside nested jit, custom_jvp / custom_vjp functions, remat, scan, while and cond;
  * but never a clamp that is part of something else: one inside a nonlinearity of its own
    (`OTHER_NONLINEARITIES`: `jax.nn.hard_sigmoid` / `hard_swish`'s relu6(x + 3), softplus's
    logaddexp), and never one whose result goes into a square root by element-wise arithmetic alone:
    the variance clamp max(0, E[x^2] - E[x]^2) of LayerNorm, GroupNorm and BatchNorm on batch
    statistics (flax linen / NNX, Equinox). An activation reaches a square root only through a
    reduction (the next normalisation's mean), so no ReLU of a network is taken for one.
Leaky ReLU, ELU, GELU, SiLU, softplus, hard swish, tanh and sigmoid are not rectifiers and are left
alone; a rule other than the gradient's on a program with no rectification is an error that names the
nonlinearities it has (a GELU + LayerNorm net, a ViT, is refused). Forms not recognised: a ReLU
written as x * (x > 0) or with `jnp.where`, and a hard swish written by hand, x * relu6(x + 3) / 6
(its relu6 is taken for a rectification).
"""

import functools
import inspect

import flax.errors
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from flax import nnx

RECTIFIERS = ('relu', 'relu6')
# Calls of a program: plain ones, and those with derivative rules of their own.
PLAIN_CALLS = ('pjit', 'jit', 'closed_call', 'core_call', 'remat', 'remat2', 'checkpoint')
CALLS = PLAIN_CALLS + ('custom_jvp_call', 'custom_vjp_call', 'custom_vjp_call_jaxpr', 'custom_lin')
# Nonlinearities of their own, by primitive or by the name of the function that computes them: a
# max(x, 0) or relu6 inside one of these functions (softplus's logaddexp(x, 0), hard_swish's
# relu6(x + 3)) is part of it, never a ReLU of the network.
OTHER_NONLINEARITIES = ('tanh', 'logistic', 'erf', 'erfc', 'exp', 'expm1', 'log1p', 'leaky_relu', 'elu',
                        'gelu', 'silu', 'swish', 'softplus', 'celu', 'selu', 'logaddexp', 'log_sigmoid',
                        'hard_sigmoid', 'hard_silu', 'hard_swish', 'hard_tanh', 'mish', 'squareplus',
                        'sparse_plus', 'glu')
# A clamp whose result goes, by element-wise arithmetic and reshapes alone, into a square root is a
# normalisation's statistic (LayerNorm's, GroupNorm's, BatchNorm's variance max(0, E[x^2] - E[x]^2)),
# never a ReLU of the network: an activation reaches a square root only through a reduction.
ROOTS = ('rsqrt', 'sqrt', 'pow')
ELEMENTWISE = ('add', 'sub', 'mul', 'div', 'neg', 'max', 'min', 'broadcast_in_dim', 'reshape', 'squeeze',
               'expand_dims', 'convert_element_type', 'transpose', 'copy')


def _is_literal_zero(v) -> bool:
  return isinstance(v, jex.core.Literal) and np.ndim(v.val) == 0 and float(v.val) == 0.0


def called_jaxpr(eqn):
  """The program a call-like equation runs (jit, custom_jvp / custom_vjp, remat).

  Args:
    eqn: a jaxpr equation.

  Returns:
    (jaxpr, consts), or None for an equation that calls no program.
  """
  for key in ('jaxpr', 'call_jaxpr', 'fun_jaxpr'):
    sub = eqn.params.get(key)
    if isinstance(sub, jex.core.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, jex.core.Jaxpr):
      return sub, ()
  return None


def _name(eqn) -> str:
  """A call's function name (jit, custom_jvp), else the primitive's name."""
  name = eqn.params.get('name') if eqn.primitive.name in CALLS else None
  return name if isinstance(name, str) else eqn.primitive.name


class Analysis:
  """The rectifications of one jaxpr (its own equations, not its sub-jaxprs').

  `sites` {equation index: 'relu' | 'relu6'}, and for each call equation what its sub-jaxpr inherits
  (`inner`).

  Args:
    jaxpr: the program.
    zeros: the variables known to hold 0 (literal zeros, broadcast or converted, and a call's arguments
      that are: `jnp.clip(x, 0)` passes its 0 into a function).
    rooted: the outputs that feed a square root (`ROOTS`; for a sub-jaxpr, those of the call's outputs
      that do).
  """

  def __init__(self, jaxpr, zeros=frozenset(), rooted=frozenset()):
    self.zeros = set(zeros)
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ('broadcast_in_dim', 'convert_element_type', 'reshape') and self.zero(
          eqn.invars[0]):
        self.zeros.add(eqn.outvars[0])
    self.rooted = set(rooted)
    for eqn in reversed(jaxpr.eqns):
      name = eqn.primitive.name
      if name in ROOTS or (name in ELEMENTWISE and any(v in self.rooted for v in eqn.outvars)):
        self.rooted.update(v for v in eqn.invars if not isinstance(v, jex.core.Literal))
    self.sites = {}
    for i, eqn in enumerate(jaxpr.eqns):
      kind = self._rectifier(eqn)
      if kind and not any(v in self.rooted for v in eqn.outvars):
        self.sites[i] = kind

  def zero(self, v) -> bool:
    """Whether a variable or literal is known to hold 0.

    Args:
      v: a jaxpr variable or literal.

    Returns:
      A bool.
    """
    return _is_literal_zero(v) if isinstance(v, jex.core.Literal) else v in self.zeros

  def _rectifier(self, eqn) -> str | None:
    name = eqn.primitive.name
    if name == 'custom_jvp_call':  # jax.nn.relu / relu6: a custom-JVP call of one jit named so
      inner = eqn.params['call_jaxpr'].jaxpr.eqns
      one_jit = len(inner) == 1 and inner[0].primitive.name in ('pjit', 'jit')
      called = inner[0].params.get('name') if one_jit else None
      return called if called in RECTIFIERS else None
    if name == 'max' and len(eqn.invars) == 2 and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
      a, b = eqn.invars
      if self.zero(a) != self.zero(b):
        return 'relu'
    return None

  def rectified(self, eqn, invals):
    """A site's input: the operand of max that is not the zero, broadcast to the output (relu: its own).

    Args:
      eqn: the site's equation.
      invals: its input values.

    Returns:
      The array the rule is applied to.
    """
    if eqn.primitive.name != 'max':
      return invals[0]
    x = invals[1] if self.zero(eqn.invars[0]) else invals[0]
    return jnp.broadcast_to(x, eqn.outvars[0].aval.shape).astype(eqn.outvars[0].aval.dtype)

  def inner(self, eqn):
    """What the sub-jaxpr of a call equation inherits, unless the call is a nonlinearity of its own.

    Args:
      eqn: a call equation.

    Returns:
      (jaxpr, consts, zeros, rooted), or None.
    """
    found = called_jaxpr(eqn)
    if eqn.primitive.name not in CALLS or found is None or _name(eqn) in OTHER_NONLINEARITIES:
      return None
    sub, consts = found
    args = eqn.invars[len(eqn.invars) - len(sub.invars):]
    zeros = {v for v, a in zip(sub.invars, args) if self.zero(a)}
    rooted = {v for v, o in zip(sub.outvars, eqn.outvars) if o in self.rooted}
    return sub, consts, zeros, rooted


def _scan_jaxpr(jaxpr, found: dict, zeros=frozenset(), rooted=frozenset(), count: bool = True) -> None:
  """Counts rectifications by kind and other nonlinearities in a jaxpr and all its sub-jaxprs.

  Inside a nonlinearity of its own, the other nonlinearities only (`count` False).
  """
  analysis = Analysis(jaxpr, zeros, rooted) if count else None
  for i, eqn in enumerate(jaxpr.eqns):
    if count and i in analysis.sites:
      found[analysis.sites[i]] = found.get(analysis.sites[i], 0) + 1
      continue
    name = _name(eqn)
    if name in OTHER_NONLINEARITIES:
      found.setdefault('other', set()).add(name)
    called = analysis.inner(eqn) if count else None
    if called is not None:
      _scan_jaxpr(called[0], found, called[2], called[3])
      continue
    inside = count and not (eqn.primitive.name in CALLS and name in OTHER_NONLINEARITIES)
    for sub in sub_jaxprs(eqn):
      _scan_jaxpr(sub, found, count=inside)


def sub_jaxprs(eqn):
  """Every program an equation holds among its parameters.

  A call's, a loop's body and condition, a conditional's branches.

  Args:
    eqn: a jaxpr equation.

  Yields:
    Each `Jaxpr`.
  """
  for value in eqn.params.values():
    for v in value if isinstance(value, tuple | list) else (value,):
      if isinstance(v, jex.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex.core.Jaxpr):
        yield v


def _has_rectifier(jaxpr, zeros=frozenset(), rooted=frozenset()) -> bool:
  found = {}
  _scan_jaxpr(jaxpr, found, zeros, rooted)
  return any(found.get(k) for k in RECTIFIERS)


def _closed_parts(closed):
  return (closed.jaxpr, closed.consts) if isinstance(closed, jex.core.ClosedJaxpr) else (closed, ())


def bind(eqn, invals) -> list:
  """Runs one equation as it is on the given inputs.

  Args:
    eqn: a jaxpr equation.
    invals: its input values.

  Returns:
    Its outputs, a list.
  """
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns, params = params if isinstance(params, tuple) else ((), params)
  with eqn.ctx.manager:
    out = eqn.primitive.bind(*subfuns, *invals, **params)
  return out if eqn.primitive.multiple_results else [out]


def run(jaxpr, consts, args, step) -> list:
  """Runs a jaxpr one equation at a time, each through `step`.

  Args:
    jaxpr: the program.
    consts: its constants.
    args: its arguments.
    step: step(i, eqn, invals) -> the outputs of equation i, a list (`bind` runs it as it is).

  Returns:
    The program's outputs.
  """
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.core.Literal) else env[v]

  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x in zip(jaxpr.invars, args):
    env[v] = x
  for i, eqn in enumerate(jaxpr.eqns):
    for v, x in zip(eqn.outvars, step(i, eqn, [read(v) for v in eqn.invars])):
      if type(v).__name__ != 'DropVar':
        env[v] = x
  return [read(v) for v in jaxpr.outvars]


def evaluate(jaxpr, consts, args, relu, counter=None, zeros=frozenset(), rooted=frozenset()) -> list:
  """Runs a jaxpr with every rectification replaced by `relu` (relu6 by min(relu(x), 6)).

  Args:
    jaxpr: the program.
    consts: its constants.
    args: its arguments.
    relu: the ReLU (rule).
    counter: a list that gets one entry per replaced site, in program order (a site inside a loop counts
      once), or None.
    zeros: what a sub-jaxpr inherits from its call (`Analysis`).
    rooted: what a sub-jaxpr inherits from its call (`Analysis`).

  Returns:
    The program's outputs.
  """
  analysis = Analysis(jaxpr, zeros, rooted)

  def step(i, eqn, invals):
    kind = analysis.sites.get(i)
    name = eqn.primitive.name
    called = None if kind else analysis.inner(eqn)
    if kind:
      if counter is not None:
        counter.append(kind)
      out = relu(analysis.rectified(eqn, invals))
      return [jnp.minimum(out, 6.0).astype(out.dtype) if kind == 'relu6' else out]
    if called is not None and _has_rectifier(called[0], called[2], called[3]):
      sub, sub_consts, sub_zeros, sub_rooted = called
      n = len(sub.invars)
      return evaluate(sub, sub_consts, invals[len(invals) - n:], relu, counter, sub_zeros, sub_rooted)
    if name == 'scan' and _has_rectifier(eqn.params['jaxpr'].jaxpr):
      return _scan(eqn, invals, relu, counter)
    if name == 'while' and (_has_rectifier(eqn.params['body_jaxpr'].jaxpr)
                            or _has_rectifier(eqn.params['cond_jaxpr'].jaxpr)):
      return _while(eqn, invals, relu, counter)
    if name == 'cond' and any(_has_rectifier(b.jaxpr) for b in eqn.params['branches']):
      return _cond(eqn, invals, relu, counter)
    return bind(eqn, invals)

  return run(jaxpr, consts, args, step)


def _scan(eqn, invals, relu, counter):
  p = eqn.params
  body, body_consts = _closed_parts(p['jaxpr'])
  nc, ncarry = p['num_consts'], p['num_carry']
  consts, carry, xs = invals[:nc], invals[nc:nc + ncarry], invals[nc + ncarry:]
  sites = []

  def step(c, x):
    outs = evaluate(body, body_consts, [*consts, *c, *x], relu, sites)
    return outs[:ncarry], outs[ncarry:]

  carry, ys = jax.lax.scan(step, carry, xs, length=p['length'], reverse=p['reverse'], unroll=p['unroll'])
  if counter is not None:
    counter.extend(sites)
  return [*carry, *ys]


def _while(eqn, invals, relu, counter):
  p = eqn.params
  cond, cond_consts = _closed_parts(p['cond_jaxpr'])
  body, body_consts = _closed_parts(p['body_jaxpr'])
  nc, nb = p['cond_nconsts'], p['body_nconsts']
  cc, bc, init = invals[:nc], invals[nc:nc + nb], invals[nc + nb:]
  sites = []

  def cond_fn(c):
    return evaluate(cond, cond_consts, [*cc, *c], relu, sites)[0]

  def body_fn(c):
    return evaluate(body, body_consts, [*bc, *c], relu, sites)

  out = jax.lax.while_loop(cond_fn, body_fn, list(init))
  if counter is not None:
    counter.extend(sites)
  return out


def _cond(eqn, invals, relu, counter):
  index, ops = invals[0], invals[1:]
  sites = []

  def branch(closed, *args):
    return evaluate(*_closed_parts(closed), list(args), relu, sites)

  out = jax.lax.switch(index, [functools.partial(branch, b) for b in eqn.params['branches']], *ops)
  if counter is not None:
    counter.extend(sites)
  return out


# ----------------------------------------------------------------------------- public API


def count(fn, x) -> dict:
  """The rectifications of a function's program at an input (traced, not run).

  Args:
    fn: a JAX function.
    x: an input array (or `jax.ShapeDtypeStruct`).

  Returns:
    {'relu': n, 'relu6': n, 'other': sorted names of the other nonlinearities found (tanh, gelu, ...)}.
  """
  return count_jaxpr(jax.make_jaxpr(fn)(x).jaxpr)


def count_jaxpr(jaxpr) -> dict:
  """`count` of a traced program.

  Args:
    jaxpr: the program.

  Returns:
    As `count`.
  """
  found = {}
  _scan_jaxpr(jaxpr, found)
  return {'relu': found.get('relu', 0), 'relu6': found.get('relu6', 0),
          'other': sorted(found.get('other', ()))}


def with_relu(fn, relu):
  """Fn with every rectification of its program replaced by `relu`; fn itself for `jax.nn.relu`.

  The program is traced at each call (under jit: once per input shape).

  Args:
    fn: a JAX function of one array.
    relu: a ReLU with a custom backward rule, e.g. `deconvnet.deconvnet_relu`.

  Returns:
    The transformed function.

  Raises:
    ValueError: (when called) a rule other than jax.nn.relu on a program with no rectification, naming
      the nonlinearities it has.
  """
  if relu is jax.nn.relu:
    return fn

  @functools.wraps(fn)
  def transformed(x):
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(x)
    sites = []
    out = evaluate(closed.jaxpr, closed.consts, [x], relu, sites)
    if not sites:
      found = {}
      _scan_jaxpr(closed.jaxpr, found)
      other = ', '.join(sorted(found.get('other', ()))) or 'none recognised'
      name = getattr(relu, '__name__', repr(relu))
      raise ValueError(f'relu={name} asks for a ReLU backward rule, but the model has no ReLUs: its program '
                       f'has no rectification (jax.nn.relu, max(x, 0), relu6); its nonlinearities: {other}. '
                       'The rule would change nothing (leaky ReLU, GELU, SiLU, tanh are not rectifiers)')
    return jax.tree.unflatten(jax.tree.structure(shape), out)

  return transformed


def accepts_relu(model) -> bool:
  """Whether `model(x, relu=...)` is the model's own way to take a ReLU rule.

  An explicit `relu` parameter, as every network of this package has.

  Args:
    model: any callable.

  Returns:
    A bool.
  """
  if isinstance(model, nnx.Module):  # a module's signature is its class's: read once per class
    return _call_takes_relu(type(model).__call__)
  return _takes_relu(model)


@functools.lru_cache(maxsize=256)
def _call_takes_relu(call) -> bool:
  return _takes_relu(call)


def _takes_relu(fn) -> bool:
  try:
    parameters = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return 'relu' in parameters and parameters['relu'].kind in (inspect.Parameter.KEYWORD_ONLY,
                                                               inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _call(x, fn):
  return fn(x)


@jax.tree_util.register_pytree_node_class
class Function:
  """Any JAX callable as a model of this package; `Function(...)(x, relu=rule)` applies the rule.

  A pytree whose leaves are the callable's weights, so that jitted functions take them as arguments,
  never as constants. Build it with `as_model`.

  Args:
    fn: the callable, `fn(x, *consts)`.
    consts: arrays passed to fn after x.
    hoisted: the arrays a closure closes over, matched by identity in each trace of `fn(x)` and replaced
      by the leaves.
    ids: the ids of `hoisted`, as found when the closure was first traced.
  """

  def __init__(self, fn, consts=(), hoisted=(), ids=()):
    self.fn, self.consts, self.hoisted, self.ids = fn, tuple(consts), tuple(hoisted), tuple(ids)

  def __call__(self, x, *, relu=jax.nn.relu):
    """The callable's output, its rectifications replaced by `relu` (`with_relu`).

    Args:
      x: the input.
      relu: the ReLU (rule).

    Returns:
      The callable's output (scores [B, K] for a model).
    """
    return with_relu(self.apply, relu)(x)

  def eval(self):
    """Inference mode for the NNX modules it holds (as `nnx.Module.eval`).

    Returns:
      self.
    """
    for inner in self.consts:
      if isinstance(inner, nnx.Module):
        inner.eval()
    return self

  def apply(self, x):
    """The callable itself: fn(x, *consts), its closed-over weights read from the leaves.

    Args:
      x: the input.

    Returns:
      The callable's output.
    """
    if not self.ids:
      return self.fn(x, *self.consts)
    closed, shape = jax.make_jaxpr(self.fn, return_shape=True)(x)
    where = {i: n for n, i in enumerate(self.ids)}
    consts = [self.hoisted[where[id(c)]] if id(c) in where else c for c in closed.consts]
    out = jex.core.jaxpr_as_fun(jex.core.ClosedJaxpr(closed.jaxpr, consts))(x)
    return jax.tree.unflatten(jax.tree.structure(shape), out)

  def tree_flatten(self):
    """The pytree's children (the weights) and static data (the callable and the ids).

    Returns:
      ((consts, hoisted), (fn, ids)).
    """
    return (self.consts, self.hoisted), (self.fn, self.ids)

  @classmethod
  def tree_unflatten(cls, aux, children):
    """A `Function` from `tree_flatten`'s output.

    Args:
      aux: (fn, ids).
      children: (consts, hoisted).

    Returns:
      The `Function`.
    """
    return cls(aux[0], children[0], children[1], aux[1])

  def __repr__(self):
    inner = self.consts[0] if self.fn is _call else self.fn
    return f'Function({getattr(inner, "__name__", type(inner).__name__)})'


def _is_array(x) -> bool:
  return isinstance(x, jax.Array | np.ndarray | np.generic)


def check_array(x, what: str = 'images [B, H, W, C]') -> None:
  """Raises unless x is a NumPy or JAX array (or a list or tuple, read as one).

  Args:
    x: the value.
    what: what the error calls it.

  Raises:
    TypeError: anything else; a PyTorch tensor is named, with how to convert it.
  """
  if _is_array(x) or isinstance(x, jax.ShapeDtypeStruct):
    return
  kind = f'{type(x).__module__}.{type(x).__name__}'
  if kind.startswith('torch.'):
    raise TypeError(f'{what} must be a NumPy or JAX array, got a PyTorch tensor {tuple(x.shape)}: convert '
                    'it with x.detach().cpu().numpy() (and from NCHW to NHWC: x.permute(0, 2, 3, 1))')
  if not isinstance(x, list | tuple):
    raise TypeError(f'{what} must be a NumPy or JAX array, got {kind}')


def as_model(model, example=None):
  """A model as this package calls models, `model(x, *, relu=...)`.

  * a model that takes `relu` (this package's networks), or a `Function`: itself;
  * a pytree whose leaves are all arrays (an NNX module, `functools.partial(linen_module.apply, params)`):
    a `Function` holding it as its argument;
  * any other callable (a lambda or function closing over its weights): traced once at `example`; the
    arrays its program closes over become the `Function`'s leaves (each later trace, at any batch size,
    finds them again by identity).

  Args:
    model: the callable.
    example: an input array, or a `jax.ShapeDtypeStruct` (needed for a closure).

  Returns:
    The model, or a `Function`.

  Raises:
    TypeError: a model that is not callable.
    ValueError: a closure without an example, or a model that changes the state of a module it holds.
  """
  if isinstance(model, Function) or accepts_relu(model):
    return model
  if not callable(model):
    raise TypeError(f'a model must be callable as model(x) -> scores [B, K], got {type(model).__name__}')
  leaves = jax.tree.leaves(model)
  if isinstance(model, nnx.Module) or (leaves and all(_is_array(x) for x in leaves)):
    return Function(_call, (model,))
  if example is None:
    raise ValueError('a model that closes over its weights needs an example input to find them: '
                     'as_model(model, images)')
  check_array(example)
  spec = jax.ShapeDtypeStruct(np.shape(example), getattr(example, 'dtype', np.float32))
  try:
    closed = jax.make_jaxpr(model)(spec)
  except flax.errors.TraceContextError as e:  # an NNX module that updates its state when called
    raise ValueError('the model changes the state of an NNX module it holds when called (a module in '
                     'training mode: BatchNorm on batch statistics, Dropout drawing from its rngs); call '
                     f'module.eval() first ({type(e).__name__})') from None
  consts = [c for c in closed.consts if _is_array(c) and np.size(c) > 1]
  return Function(model, hoisted=consts, ids=[id(c) for c in consts])
