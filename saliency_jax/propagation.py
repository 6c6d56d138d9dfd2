"""Layer-wise relevance propagation and DeepLift by transforming the model's program: no hooks.

LRP (Bach et al. 2015; Montavon et al. 2019) is computed here as a modified gradient times the input.
The model, any JAX callable `f(x) -> scores`, is traced to a jaxpr; every linear layer found in it (a
`conv_general_dilated` or `dot_general` with one operand from the input and one from the weights, and
the bias added to its output, if any) is replaced by a function whose forward pass is the layer's and
whose backward pass is its LRP rule (`Rule`, chosen per layer by a `Composite`). Written for the
gradient g = R / z that the rest of the program passes back unchanged, a rule maps the relevance
R_z = z * g of the layer's output to a signal g_x with R_x = x * g_x; the relevance of the input is
x * g_x at the end. Between the layers the plain gradient is exactly what LRP prescribes: a ReLU
passes the relevance of its active units (Zennit's `Pass`: inactive units carry none), max-pooling
gives it to the winner, an average, a reshape, a residual sum or a BatchNorm at inference time
divides it in proportion to the contributions (LRP-0, Zennit's `Norm` without its stabiliser).

Transformers: the rules of Ali et al. (2022) are applied by the same transformation. A normalisation's
scale (`rsqrt`, LayerNorm's 1 / std) and the attention weights (a softmax, exp(s) / sum exp(s), that
multiplies the values) are held constant in the backward pass, and so is the gate of a gated
activation (GELU's 0.5 (1 + tanh(.)) or Phi(x), SiLU's sigmoid: a tanh, erf or logistic whose result
multiplies the input): what is left is linear in the input, and LRP-0 is conservative on it.

The rules are Zennit 0.5's definitions (`zennit.rules`): `epsilon` (z + eps sign(z) in the
denominator, sign(0) = 1), `zplus` (positive weights for positive inputs, negative weights for
negative inputs; the bias's positive part) and the generalised `gamma` (W + gamma W+ where the output
is positive, W + gamma W- where it is negative). Captum's `EpsilonRule` is the same epsilon rule; its
`GammaRule` and `Alpha1_Beta0_Rule` keep the bias unchanged and use W + gamma W+ on every output:
with zero biases, on layers whose inputs are non-negative (after a ReLU) and whose negative outputs go
into a ReLU, all three agree (tested). The first layer, on the model's input, may take an input rule
(`zbox`, `flat`, `wsquare`), whose relevance is not the input times a signal: `relevance` hands it over
through a probe that multiplies the layer's input.

DeepLift (Shrikumar et al. 2017) with the rescale rule: the images and their baselines run as one
batch; at every rectification of the program (as `rules` finds them) the backward pass multiplies by
(relu(x) - relu(x')) / (x - x') instead of relu'(x) (the gradient where |x - x'| < 1e-10, as Captum).
The rest of the program is propagated by its gradient, a ReLU6's upper clip included; max-pooling by its
gradient too (Captum's for a functional max-pool) or by the difference rule Captum gives an `nn.MaxPool2d`
module (`rescale_max_pool`).
"""

import dataclasses
import functools

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import rules
from saliency_jax.layers import max_pool_switches, unpool

RULES = ('epsilon', 'gamma', 'zplus', 'zbox', 'flat', 'wsquare')
# Rules whose relevance does not come as input x signal (an input of 0 gets some): the first layer's only,
# on the program's input (`relevance`).
INPUT_RULES = ('zbox', 'flat', 'wsquare')
LINEAR = {'conv_general_dilated': 'conv', 'dot_general': 'dense'}
GATES = ('tanh', 'erf', 'logistic')  # a gated activation's gate, when its result multiplies the input
# element-wise steps through which a gate's or a sum's value passes unchanged in kind
PASSING = ('add', 'sub', 'mul', 'div', 'neg', 'convert_element_type', 'broadcast_in_dim', 'reshape',
           'squeeze', 'expand_dims', 'copy')
DEEPLIFT_EPS = 1e-10  # Captum's: below this |x - x'|, the rescale rule takes the gradient


@dataclasses.dataclass(frozen=True)
class Rule:
  """The LRP rule of one linear layer (Zennit 0.5's definitions).

  The input rules (`INPUT_RULES`), for the first layer on the model's input: 'zbox' (Montavon et al. 2017:
  the input bounded by `low` and `high`), 'flat' (every weight 1, no bias) and 'wsquare' (the squared
  weights and bias): each hands the input relevance that does not come as input x signal.

  Attributes:
    name: 'epsilon', 'gamma', 'zplus', 'zbox', 'flat' or 'wsquare'.
    epsilon: the stabiliser added to the denominator with its sign (the epsilon rule's epsilon; every
      rule's stabiliser).
    gamma: the gamma rule's weight of the positive (or negative) parts.
    zero_bias: leave the bias out of the denominator (Zennit's `zero_params='bias'`, Captum's
      `set_bias_to_zero=True`).
    low: ZBox's lowest input value: a float, or one per channel (a tuple).
    high: ZBox's highest input value, as low.
  """
  name: str = 'epsilon'
  epsilon: float = 1e-6
  gamma: float = 0.25
  zero_bias: bool = False
  low: float | tuple | None = None
  high: float | tuple | None = None

  def __post_init__(self):
    for bound in ('low', 'high'):  # per-channel bounds as a tuple: a rule is hashable (a static argument)
      if isinstance(getattr(self, bound), list | np.ndarray):
        object.__setattr__(self, bound, tuple(float(v) for v in np.ravel(getattr(self, bound))))
    if self.name not in RULES:
      raise ValueError(f'LRP rule must be one of {RULES}, got {self.name!r}')
    if not self.epsilon >= 0 or not self.gamma >= 0:
      raise ValueError(f'LRP rule {self.name}: epsilon and gamma must be >= 0, got {self.epsilon}, '
                       f'{self.gamma}')
    if (self.name == 'zbox') != (self.low is not None and self.high is not None):
      raise ValueError(f'LRP rule {self.name}: low and high are ZBox\'s bounds of the input, given for zbox '
                       f'only and both; got low {self.low!r}, high {self.high!r}')


@dataclasses.dataclass(frozen=True)
class Composite:
  """Which rule each linear layer takes, as Zennit's layer-map composites choose.

  The layers are numbered in the order the program runs them (`layers` lists them).

  Attributes:
    conv: the rule of convolutions.
    dense: the rule of dense layers (`dot_general` with a weight: linear layers, attention projections).
    first: the rule of the first layer (None: by its kind), as Zennit's `SpecialFirstLayerMapComposite`.
    by_index: ((layer number, rule), ...), before everything else.
    merge_batchnorm: merge the per-channel affine map that follows a layer (a BatchNorm at inference) into
      the layer's weights and bias before its rule applies, as Zennit's `MergeBatchNorm` canonizers do
      (False: it is propagated by its gradient, as Captum does).
  """
  conv: Rule = Rule()
  dense: Rule = Rule()
  first: Rule | None = None
  by_index: tuple = ()
  merge_batchnorm: bool = False

  def rule(self, index: int, kind: str) -> Rule:
    """The rule of one layer.

    Args:
      index: its number, in program order.
      kind: 'conv' or 'dense'.

    Returns:
      The `Rule`.
    """
    chosen = dict(self.by_index)
    if index in chosen:
      return chosen[index]
    if index == 0 and self.first is not None:
      return self.first
    return self.conv if kind == 'conv' else self.dense


# Zennit's composites: `epsilon_plus_flat` is its EpsilonPlusFlat; `epsilon_gamma` its EpsilonGammaBox with
# the epsilon rule on the first layer (ZBox needs the input's bounds: `Composite(first=Rule('zbox', ...))`).
COMPOSITES = {
    'epsilon': Composite(),
    'epsilon_plus': Composite(conv=Rule('zplus')),
    'epsilon_plus_flat': Composite(conv=Rule('zplus'), first=Rule('flat')),
    'epsilon_gamma': Composite(conv=Rule('gamma'), first=Rule('epsilon')),
    'zplus': Composite(conv=Rule('zplus'), dense=Rule('zplus')),
    'gamma': Composite(conv=Rule('gamma'), dense=Rule('gamma')),
}


def composite_of(composite) -> Composite:
  """A composite from its name, a `Rule` (every layer) or itself.

  Args:
    composite: a name of `COMPOSITES`, a `Rule` or a `Composite`.

  Returns:
    The `Composite`.

  Raises:
    ValueError: an unknown name or another type.
  """
  if isinstance(composite, Composite):
    return composite
  if isinstance(composite, Rule):
    return Composite(conv=composite, dense=composite)
  if isinstance(composite, str) and composite in COMPOSITES:
    return COMPOSITES[composite]
  raise ValueError(f'LRP composite must be one of {tuple(COMPOSITES)}, a Rule or a Composite, got '
                   f'{composite!r}')


# ----------------------------------------------------------------------------- the program


def _holds(jaxpr, names) -> bool:
  """Whether the program runs a primitive of `names`, in its nested programs too."""
  return any(eqn.primitive.name in names or any(_holds(sub, names) for sub in rules.sub_jaxprs(eqn))
             for eqn in jaxpr.eqns)


def _inlined(jaxpr, consts, args):
  """Runs a jaxpr with its calls inlined.

  Nested jit calls, and custom-derivative functions that hold a linear layer (the package's strided
  convolution); the other custom-derivative functions (jax.nn.relu, max-pooling) as they are.
  """
  def step(_, eqn, invals):
    found = rules.called_jaxpr(eqn)
    name = eqn.primitive.name
    custom = name in ('custom_jvp_call', 'custom_vjp_call', 'custom_vjp_call_jaxpr')
    inline = found is not None and name in rules.CALLS and (not custom or _holds(found[0], LINEAR))
    if not inline:
      return rules.bind(eqn, invals)
    sub, sub_consts = found
    return _inlined(sub, sub_consts, invals[len(invals) - len(sub.invars):])

  return rules.run(jaxpr, consts, args, step)


def _is_var(v) -> bool:
  return not isinstance(v, jex.core.Literal)


@dataclasses.dataclass
class Plan:
  """What the transformation does to a flat program.

  Attributes:
    layers: [(equation index, kind, position of the input operand, bias equation index or None)], in
      program order.
    detached: equation indices whose outputs are held constant in the backward pass.
    skipped: layers whose bias is added later: they run at that addition.
    affine: {layer's equation index: [equation indices]}: the per-channel affine steps (add, subtract,
      multiply or divide by a constant of one value per output channel) that follow the layer's output
      alone, a BatchNorm at inference (`Composite.merge_batchnorm` merges them).
  """
  layers: list
  detached: set
  skipped: set
  affine: dict = dataclasses.field(default_factory=dict)


def plan(jaxpr) -> Plan:
  """Finds the linear layers, their biases and what the transformer rules hold constant.

  Args:
    jaxpr: a flat program of one input (calls inlined).

  Returns:
    The `Plan`.

  Raises:
    ValueError: a linear layer on the input inside a loop or a conditional, where no rule reaches.
  """
  dep = set(jaxpr.invars)
  producer, users = {}, {}
  for i, eqn in enumerate(jaxpr.eqns):
    for v in eqn.invars:
      if _is_var(v):
        users.setdefault(v, []).append(i)
    for v in eqn.outvars:
      producer[v] = i
    if any(_is_var(v) and v in dep for v in eqn.invars):
      dep.update(eqn.outvars)
      if any(_holds(sub, LINEAR) for sub in rules.sub_jaxprs(eqn)):
        raise ValueError(f'LRP: the model runs linear layers inside a {eqn.primitive.name} (a loop or a '
                         'conditional over its layers, as nnx.scan builds); the rules reach layers outside '
                         'loops only: unroll the loop')
  jaxpr_out = set(v for v in jaxpr.outvars if _is_var(v))
  layers, skipped, detached, affine = [], set(), set(), {}
  for i, eqn in enumerate(jaxpr.eqns):
    name = eqn.primitive.name
    if name in LINEAR:
      a, b = eqn.invars[:2]
      on_input = [_is_var(v) and v in dep for v in (a, b)]
      if on_input.count(True) != 1:
        continue
      out = eqn.outvars[0]
      bias = None
      use = users.get(out, [])
      if len(use) == 1 and out not in jaxpr_out and jaxpr.eqns[use[0]].primitive.name == 'add':
        other = [v for v in jaxpr.eqns[use[0]].invars if v is not out]
        if len(other) == 1 and not (_is_var(other[0]) and other[0] in dep):
          bias = use[0]
          skipped.add(i)
      layers.append((i, LINEAR[name], on_input.index(True), bias))
      chain = _affine_chain(jaxpr, jaxpr.eqns[bias].outvars[0] if bias is not None else out, users, dep,
                            jaxpr_out)
      if chain and _out_axis(eqn, on_input.index(True)) is not None:
        affine[i] = chain
    elif name == 'rsqrt' and _is_var(eqn.invars[0]) and eqn.invars[0] in dep:
      detached.add(i)
    elif name == 'div' and _is_softmax(jaxpr, eqn, producer):
      detached.add(i)
    elif name == 'mul' and all(_is_var(v) and v in dep for v in eqn.invars):
      for v in eqn.invars:
        gate = _gate(jaxpr, v, producer, dep)
        if gate is not None:
          detached.add(gate)
  return Plan(layers, detached, skipped, affine)


def _affine_chain(jaxpr, v, users, dep, jaxpr_out) -> list:
  """The per-channel affine steps that take v, a layer's output, alone (`Plan.affine`)."""
  channels, chain = v.aval.shape[-1], []
  while v not in jaxpr_out and len(users.get(v, [])) == 1:
    eqn = jaxpr.eqns[users[v][0]]
    other = [u for u in eqn.invars if u is not v]
    if eqn.primitive.name not in ('add', 'sub', 'mul', 'div') or len(other) != 1 or (
        eqn.primitive.name == 'div' and eqn.invars[0] is not v) or (_is_var(other[0]) and other[0] in dep):
      break
    shape = np.shape(other[0].val) if isinstance(other[0], jex.core.Literal) else other[0].aval.shape
    per_channel = all(d == 1 for d in shape[:-1]) and (not shape or shape[-1] in (1, channels))
    if len(shape) > v.aval.ndim or not per_channel:
      break
    chain.append(users[v][0])
    v = eqn.outvars[0]
  return chain


def _out_axis(eqn, position) -> int | None:
  """The weight's axis of the layer's output channels (its output's last axis), or None (no merge)."""
  if position != 0:
    return None
  if eqn.primitive.name == 'conv_general_dilated':
    return eqn.params['dimension_numbers'].rhs_spec[0]
  (_, contracting), (_, batch) = eqn.params['dimension_numbers']
  free = [d for d in range(eqn.invars[1].aval.ndim) if d not in contracting and d not in batch]
  return free[0] if len(free) == 1 and not batch else None


def _through(jaxpr, v, producer, dep, steps=PASSING):
  """The equation that makes v, through element-wise steps with constants and reshapes."""
  while _is_var(v) and v in producer:
    eqn = jaxpr.eqns[producer[v]]
    if eqn.primitive.name not in steps:
      return producer[v]
    on_input = [u for u in eqn.invars if _is_var(u) and u in dep]
    if len(on_input) != 1:
      return producer[v]
    v = on_input[0]
  return None


def _gate(jaxpr, v, producer, dep):
  i = _through(jaxpr, v, producer, dep)
  return i if i is not None and jaxpr.eqns[i].primitive.name in GATES else None


def _is_softmax(jaxpr, eqn, producer) -> bool:
  """Whether a division is exp(s) / sum exp(s) (through broadcasts and reshapes)."""
  num, den = eqn.invars
  if not (_is_var(num) and num in producer and jaxpr.eqns[producer[num]].primitive.name == 'exp'):
    return False
  shaping = ('broadcast_in_dim', 'reshape', 'expand_dims', 'convert_element_type')
  while _is_var(den) and den in producer and jaxpr.eqns[producer[den]].primitive.name in shaping:
    den = jaxpr.eqns[producer[den]].invars[0]
  if not (_is_var(den) and den in producer and jaxpr.eqns[producer[den]].primitive.name == 'reduce_sum'):
    return False
  return jaxpr.eqns[producer[den]].invars[0] is num


# ----------------------------------------------------------------------------- the rules


def stabilise(z, epsilon: float):
  """Z + epsilon sign(z), with sign(0) = 1 (Zennit's and Captum's stabiliser).

  Args:
    z: the denominator.
    epsilon: the stabiliser.

  Returns:
    The stabilised denominator.
  """
  return z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)


def _transpose(op, x, w, s):
  """The linear map x -> op(x, w), transposed, applied to s."""
  return jax.vjp(lambda u: op(u, w), x)[1](s)[0]


def rule_backward(rule: Rule, op, x, w, b, z, g):
  """One layer's LRP step, written for gradients: the signal g_x with R_x = x * g_x, from g = R_z / z.

  Args:
    rule: the `Rule`.
    op: the layer's linear map, op(x, w).
    x: its input.
    w: its weight.
    b: its bias (broadcast to z, or 0).
    z: its output, op(x, w) + b.
    g: the signal at its output.

  Returns:
    g_x, shaped as x.

  Raises:
    ValueError: an input rule (`INPUT_RULES`: `input_relevance` takes those).
  """
  r = z * g  # the relevance of the layer's outputs
  b = jnp.zeros_like(z) if rule.zero_bias else b
  if rule.name == 'epsilon':
    return _transpose(op, x, w, r / stabilise(op(x, w) + b, rule.epsilon))
  xp, xn = jnp.maximum(x, 0), jnp.minimum(x, 0)
  if rule.name == 'zplus':
    wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
    s = r / stabilise(op(xp, wp) + jnp.maximum(b, 0) + op(xn, wn), rule.epsilon)
    return jnp.where(x > 0, _transpose(op, x, wp, s), _transpose(op, x, wn, s))
  if rule.name in INPUT_RULES:
    raise ValueError(f'LRP rule {rule.name}: an input rule, for the first layer on the model\'s input only')
  wp, wn = w + rule.gamma * jnp.maximum(w, 0), w + rule.gamma * jnp.minimum(w, 0)
  bp, bn = b + rule.gamma * jnp.maximum(b, 0), b + rule.gamma * jnp.minimum(b, 0)
  sp = jnp.where(z > 0, r / stabilise(op(xp, wp) + bp + op(xn, wn), rule.epsilon), 0)
  sn = jnp.where(z < 0, r / stabilise(op(xp, wn) + bn + op(xn, wp), rule.epsilon), 0)
  return jnp.where(x > 0, _transpose(op, x, wp, sp) + _transpose(op, x, wn, sn),
                   _transpose(op, x, wn, sp) + _transpose(op, x, wp, sn))


def input_relevance(rule: Rule, op, x, w, b, z, g):
  """The relevance of the first layer's input under an input rule (`INPUT_RULES`), from g = R_z / z.

  Args:
    rule: a `Rule` of `INPUT_RULES`.
    op: the layer's linear map, op(x, w).
    x: its input, the model's.
    w: its weight.
    b: its bias (broadcast to z, or 0).
    z: its output, op(x, w) + b.
    g: the signal at its output.

  Returns:
    R_x, shaped as x.
  """
  r = z * g
  b = jnp.zeros_like(z) if rule.zero_bias else b
  if rule.name == 'zbox':
    low, high = (jnp.broadcast_to(jnp.asarray(v, x.dtype), x.shape) for v in (rule.low, rule.high))
    wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
    s = r / stabilise(op(x, w) + b - op(low, wp) - jnp.maximum(b, 0) - op(high, wn) - jnp.minimum(b, 0),
                      rule.epsilon)
    return x * _transpose(op, x, w, s) - low * _transpose(op, x, wp, s) - high * _transpose(op, x, wn, s)
  ones = jnp.ones_like(x)
  if rule.name == 'flat':
    w, b = jnp.ones_like(w), jnp.zeros_like(b)
  else:  # wsquare
    w, b = w ** 2, b ** 2
  return _transpose(op, x, w, r / stabilise(op(ones, w) + b, rule.epsilon))


def _input_layer(op, rule: Rule):
  """op(x u, w) + b at u = 1; its backward pass gives u the input rule's relevance of x, 0 to x, w, b."""

  @jax.custom_vjp
  def layer(x, u, w, b):
    return op(x * u, w) + b

  def forward(x, u, w, b):
    z = op(x * u, w) + b
    return z, (x, w, b, z)

  def backward(res, g):
    x, w, b, z = res
    return jnp.zeros_like(x), input_relevance(rule, op, x, w, b, z, g), jnp.zeros_like(w), jnp.zeros_like(b)

  layer.defvjp(forward, backward)
  return layer


def _layer(op, rule: Rule):
  """op(x, w) + b with the rule as its backward pass (no gradient reaches w or b)."""

  @jax.custom_vjp
  def layer(x, w, b):
    return op(x, w) + b

  def forward(x, w, b):
    z = op(x, w) + b
    return z, (x, w, b, z)

  def backward(res, g):
    x, w, b, z = res
    return rule_backward(rule, op, x, w, b, z, g), jnp.zeros_like(w), jnp.zeros_like(b)

  layer.defvjp(forward, backward)
  return layer


def _operation(eqn, position):
  """The equation's primitive as op(x, w), x at its input position."""
  params = eqn.params

  def op(x, w):
    return eqn.primitive.bind(*((x, w) if position == 0 else (w, x)), **params)

  return op


def _merged(jaxpr, read, i, start, w, b, chain):
  """Layer i's weight and bias with the affine steps `chain` after its output `start` merged in."""
  eqn = jaxpr.eqns[i]
  channels = eqn.outvars[0].aval.shape[-1]
  probe = (1,) * (eqn.outvars[0].aval.ndim - 1) + (channels,)

  def steps(z):  # the chain on one value per channel
    v = start
    for j in chain:
      step = jaxpr.eqns[j]
      z = rules.bind(step, [z if u is v else read(u) for u in step.invars])[0]
      v = step.outvars[0]
    return z.reshape(channels)
  offset = steps(jnp.zeros(probe, w.dtype))
  scale = steps(jnp.ones(probe, w.dtype)) - offset
  shape = [1] * w.ndim
  shape[_out_axis(eqn, 0)] = channels
  return w * scale.reshape(shape), scale * jnp.broadcast_to(b, probe).reshape(channels) + offset


def _run(jaxpr, consts, x, the_plan: Plan, composite: Composite, u=None):
  """Runs the flat program with its layers' rules; u: the input rule's probe (`relevance`), or None."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.core.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  env[jaxpr.invars[0]] = x
  layer_at, bias_of, merge_at, skipped = {}, {}, {}, set(the_plan.skipped)
  for n, (i, kind, position, bias) in enumerate(the_plan.layers):
    layer_at[i] = (n, kind, position)
    if bias is not None:
      bias_of[bias] = i
    if composite.merge_batchnorm and i in the_plan.affine:  # the layer runs at its chain's last step
      chain = the_plan.affine[i]
      merge_at[chain[-1]] = i
      skipped |= {i, *chain[:-1]} | ({bias} if bias is not None else set())
  for i, eqn in enumerate(jaxpr.eqns):
    if i in skipped:  # a layer whose bias (or merged affine map) comes later: run there
      continue
    if i in layer_at or i in bias_of or i in merge_at:
      at = merge_at.get(i, bias_of.get(i, i))
      layer = jaxpr.eqns[at]
      n, kind, position = layer_at[at]
      bias = the_plan.layers[n][3]
      x, w = read(layer.invars[position]), read(layer.invars[1 - position])
      if bias is not None:
        b = read([v for v in jaxpr.eqns[bias].invars if v is not layer.outvars[0]][0])
      else:
        b = jnp.zeros((), eqn.outvars[0].aval.dtype)
      if i in merge_at:
        start = jaxpr.eqns[bias].outvars[0] if bias is not None else layer.outvars[0]
        w, b = _merged(jaxpr, read, at, start, w, b, the_plan.affine[at])
      rule = composite.rule(n, kind)
      if rule.name in INPUT_RULES:
        env[eqn.outvars[0]] = _input_layer(_operation(layer, position), rule)(x, u, w, b)
      else:
        env[eqn.outvars[0]] = _layer(_operation(layer, position), rule)(x, w, b)
      continue
    outs = rules.bind(eqn, [read(v) for v in eqn.invars])
    if i in the_plan.detached:
      outs = [lax.stop_gradient(o) for o in outs]
    for v, o in zip(eqn.outvars, outs):
      if type(v).__name__ != 'DropVar':
        env[v] = o
  return [read(v) for v in jaxpr.outvars]


def flat_program(fn, x):
  """The program of fn at x, its nested calls inlined (`_inlined`), traced, not run.

  Args:
    fn: a function of one array.
    x: an input (array or `jax.ShapeDtypeStruct`).

  Returns:
    (the `ClosedJaxpr`, the output's pytree structure).
  """
  closed, shape = jax.make_jaxpr(fn, return_shape=True)(x)
  flat = jax.make_jaxpr(lambda z: _inlined(closed.jaxpr, closed.consts, [z]))(x)
  return flat, jax.tree.structure(shape)


def layers(model, x) -> list[dict]:
  """The linear layers LRP finds in a model's program, in the order it runs them (traced, not run).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]`.
    x: an input [B, H, W, C] (or a `jax.ShapeDtypeStruct`).

  Returns:
    One dict per layer: 'index' (its number for `Composite.by_index`), 'kind' ('conv' or 'dense'),
    'weight' (the weight's shape) and 'bias' (whether a bias is added to its output).
  """
  model = rules.as_model(model, x)
  flat, _ = flat_program(lambda z: model(z), x)
  found = plan(flat.jaxpr)
  return [{'index': n, 'kind': kind, 'weight': tuple(flat.jaxpr.eqns[i].invars[1 - position].aval.shape),
           'bias': bias is not None} for n, (i, kind, position, bias) in enumerate(found.layers)]


def _lrp_program(model, x, composite: Composite):
  """(flat program, output structure, `Plan`, whether its first layer takes an input rule), checked."""
  flat, tree = flat_program(lambda z: model(z), x)
  the_plan = plan(flat.jaxpr)
  if not the_plan.layers:
    raise ValueError('LRP: the model has no linear layer (a convolution or dense layer with weights) '
                     'applied to its input')
  first_input_rule = False
  for n, (i, kind, position, _) in enumerate(the_plan.layers):
    rule = composite.rule(n, kind)
    if rule.name not in INPUT_RULES:
      continue
    if n:
      raise ValueError(f'LRP: rule {rule.name} is for the first layer only (its relevance does not come as '
                       f'input x signal); the composite gives it to layer {n} ({kind})')
    source = flat.jaxpr.invars[0]
    uses = sum(v is source for eqn in flat.jaxpr.eqns for v in eqn.invars)
    if flat.jaxpr.eqns[i].invars[position] is not source or uses != 1:
      raise ValueError(f'LRP: rule {rule.name} takes the model\'s input itself into the first layer; this '
                       'model computes something from its input first (a normalisation or a reshape) or uses '
                       'it elsewhere too: give the first layer another rule')
    first_input_rule = True
  return flat, tree, the_plan, first_input_rule


def with_lrp(model, composite='epsilon'):
  """The model with every linear layer's backward pass replaced by its LRP rule.

  Its forward pass is the model's; x * (its VJP of a one-hot) is the LRP relevance of the input, with
  the class score as the relevance of the output (Captum's convention; Zennit's with the output as
  its `attr_output`). A composite whose first layer takes an input rule (ZBox, Flat, w-square) hands the
  input its relevance otherwise: `relevance` computes it.

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]` (`rules.as_model`).
    composite: a name of `COMPOSITES`, a `Rule` for every layer, or a `Composite`.

  Returns:
    A function x -> scores.

  Raises:
    ValueError: (when called) a program with no linear layer on its input; an input rule.
  """
  composite = composite_of(composite)

  def transformed(x):
    flat, tree, the_plan, first_input_rule = _lrp_program(model, x, composite)
    if first_input_rule:
      raise ValueError('LRP: the first layer\'s rule gives the input its relevance itself (not as input x '
                       'signal): call propagation.relevance')
    return jax.tree.unflatten(tree, _run(flat.jaxpr, flat.consts, x, the_plan, composite))

  return transformed


def relevance(model, x, cotangent, composite='epsilon') -> tuple:
  """The model's scores and the LRP relevance of its input, for every composite.

  x * the VJP of `with_lrp`'s function, or, where the first layer takes an input rule (`INPUT_RULES`), the
  relevance that rule gives the input (through a probe u = 1 that multiplies the first layer's input).

  Args:
    model: a model of `saliency_jax.models` or any JAX callable `f(x) -> scores [B, K]` (`rules.as_model`).
    x: the input [B, ...].
    cotangent: the relevance of the output, [B, K] (e.g. the one-hot class times 1, for the class score).
    composite: a name of `COMPOSITES`, a `Rule` for every layer, or a `Composite`.

  Returns:
    (scores [B, K], the relevance of x, shaped as x).

  Raises:
    ValueError: as `with_lrp`; an input rule on a layer other than the first, or on a first layer that
      does not take the model's input itself.
  """
  composite = composite_of(composite)
  flat, tree, the_plan, first_input_rule = _lrp_program(model, x, composite)

  def run(z, u=None):
    return jax.tree.unflatten(tree, _run(flat.jaxpr, flat.consts, z, the_plan, composite, u))
  if not first_input_rule:
    scores, vjp = jax.vjp(run, x)
    return scores, x * vjp(cotangent)[0]
  scores, vjp = jax.vjp(lambda u: run(x, u), jnp.ones_like(x))
  return scores, vjp(cotangent)[0]


@jax.custom_vjp
def rescale_relu(z):
  """A ReLU whose backward pass is DeepLift's rescale rule, on a batch [images; baselines].

  Args:
    z: [2 N, ...]: the first half from the images, the second from their baselines.

  Returns:
    relu(z).
  """
  return jax.nn.relu(z)


def _rescale_forward(z):
  return jax.nn.relu(z), z


def _rescale_backward(z, g):
  x, x0 = jnp.split(z, 2)
  delta = x - x0
  small = jnp.abs(delta) < DEEPLIFT_EPS
  ratio = (jax.nn.relu(x) - jax.nn.relu(x0)) / jnp.where(small, 1, delta)
  m = jnp.concatenate([jnp.where(small, x > 0, ratio), jnp.where(small, x0 > 0, ratio)]).astype(g.dtype)
  return (g * m,)


rescale_relu.defvjp(_rescale_forward, _rescale_backward)


# ----------------------------------------------------------------------------- DeepLift's max-pooling rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def rescale_max_pool(z, window, strides, padding):
  """Max-pooling whose backward pass is DeepLift's rule for it (Captum's, SHAP's), on [images; baselines].

  The multiplier of an input is the change of the pooled outputs it wins over its own change: with y, y'
  the pooled image and baseline and m = max(y, y'), the image's switches carry (m - y') and the baseline's
  (y - m), each times its output's signal, back to the inputs; their sum over the input's change x - x'
  is both halves' multiplier (the gradient where |x - x'| < DEEPLIFT_EPS, as Captum).

  Args:
    z: [2 N, H, W, C]: the first half from the images, the second from their baselines.
    window: (h, w).
    strides: (h, w).
    padding: ((lo, hi), (lo, hi)); padded cells never win.

  Returns:
    The max-pooled z.
  """
  return max_pool_switches(z, window, strides, padding)[0]


def _pool_forward(z, window, strides, padding):
  y, switches = max_pool_switches(z, window, strides, padding)
  return y, (z, y, switches)


def _pool_backward(window, strides, padding, res, g):
  z, y, switches = res

  def route(v):  # each output's value to the input its switch points at
    return unpool(v, switches, z.shape, window, strides, padding)
  x, x0 = jnp.split(z, 2)
  out, out0 = jnp.split(y, 2)
  top = jnp.maximum(out, out0)
  image_part, baseline_part = jnp.split(route(g * jnp.concatenate([top - out0, out - top])), 2)
  delta = x - x0
  small = jnp.abs(delta) < DEEPLIFT_EPS
  m = (image_part + baseline_part) / jnp.where(small, 1, delta)
  return (jnp.where(jnp.concatenate([small, small]), route(g), jnp.concatenate([m, m])),)


rescale_max_pool.defvjp(_pool_forward, _pool_backward)

MAX_POOL_RULES = ('gradient', 'rescale')
MAX_POOL = ('reduce_window_max',)  # max-pooling, as XLA writes it


def _pool_arguments(eqn):
  """A `reduce_window_max` equation's (window, strides, padding) over H and W of [B, H, W, C]."""
  p = eqn.params
  dims, steps, pads = p['window_dimensions'], p['window_strides'], p['padding']
  plain = (len(dims) == 4 and dims[0] == dims[3] == steps[0] == steps[3] == 1 and pads[0] == pads[3] == (0, 0)
           and all(d == 1 for d in (*p['base_dilation'], *p['window_dilation'])))
  if not plain:
    raise ValueError('deeplift: max_pool=\'rescale\' takes max-pooling over H and W of [B, H, W, C] without '
                     f'dilation; the model pools with window {dims}, strides {steps}, padding {pads}')
  return tuple(dims[1:3]), tuple(steps[1:3]), tuple(tuple(q) for q in pads[1:3])


def _rescale_pools(jaxpr, consts, args) -> list:
  """Runs a jaxpr with every max-pooling (`reduce_window_max`, in calls too) as `rescale_max_pool`."""
  def step(_, eqn, invals):
    if eqn.primitive.name in MAX_POOL:
      return [rescale_max_pool(invals[0], *_pool_arguments(eqn))]
    found = rules.called_jaxpr(eqn)
    if found is not None and eqn.primitive.name in rules.CALLS and _holds(found[0], MAX_POOL):
      sub, sub_consts = found
      return _rescale_pools(sub, sub_consts, invals[len(invals) - len(sub.invars):])
    if any(_holds(sub, MAX_POOL) for sub in rules.sub_jaxprs(eqn)):
      raise ValueError(f'deeplift: max_pool=\'rescale\' reaches max-pooling outside loops and conditionals '
                       f'only; the model pools inside a {eqn.primitive.name}')
    return rules.bind(eqn, invals)

  return rules.run(jaxpr, consts, args, step)


def with_rescale_pooling(fn):
  """A function of a batch [images; baselines], its program's max-pooling taking `rescale_max_pool`.

  Max-pooling is found as XLA's `reduce_window_max`, in nested jit and custom-derivative calls too (the
  package's `layers.max_pool`, flax's `max_pool`); pooling inside a loop or a conditional is refused.

  Args:
    fn: a function of one array [2 N, H, W, C].

  Returns:
    A function with fn's signature and outputs (it raises ValueError, when traced, for pooling it cannot
    reach).
  """
  def transformed(z):
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(z)
    outs = _rescale_pools(closed.jaxpr, closed.consts, [z])
    return jax.tree.unflatten(jax.tree.structure(shape), outs)

  return transformed
