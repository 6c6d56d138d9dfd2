"""One way to make maps: `make_maps(model, x, ...)` returns every map of every class, on the host.

It takes the images, the classes to map and the maps wanted ({name: `MapSpec`}).

The classes: each image's top-k (ranked by the gradient pass, 10-crop averaged with crops; or given) and
its true class (labels; None: no labels). How the maps are taken is this function's choice, made from
what it is asked: the gradient maps of the top-k classes in one call per chunk (one forward, k backward
passes, `saliency.top_k_saliency`); a 10-crop Grad-CAM map at a layer of the net's graph out of the
same passes when the gradient maps are asked too (`attribution.gradient_and_grad_cam`); every method by
its registry entry (`attribution.REGISTRY`: a ReLU rule through `saliency.class_saliency`, region maps
through `attribution.class_region_maps`, anything else one class at a time on the centre crop). Two
explicit performance options: `share_true` (a true class among the top-k takes that class's map: no
second pass) and `sequential` (the CPU kernels that take a chunk's images and classes one after another,
`saliency.each`).
"""

import dataclasses
import time

import jax
import numpy as np

from saliency_jax import attribution, localise, parallel, rules, saliency

CROPS = ('ten', 'centre', 'image')


@dataclasses.dataclass(frozen=True)
class MapSpec:
  """A map: an attribution method, its settings, and how it takes the crops.

  Attributes:
    method: an `attribution.METHODS` name.
    crops: 'ten' (the paper's 10-crop maps with the crop size, else the whole image), 'centre' (the
      centre crop alone, the map placed back, zero outside: for methods too slow for 10 crops) or 'image'
      (the whole image through the method's own function, one class at a time: the attribution
      comparison's maps).
    settings: the method's settings (e.g. Grad-CAM's 'layer', occlusion's 'patch').
  """
  method: str = 'gradient'
  crops: str = 'ten'
  settings: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def parse(cls, name: str, spec) -> 'MapSpec':
    """A config.maps entry as a `MapSpec`.

    Args:
      name: the entry's name, for the error.
      spec: {'method', 'crops', **settings}.

    Returns:
      The `MapSpec`.

    Raises:
      ValueError: naming `name` and the field: an unknown method or crops, or settings the method does not
        take.
    """
    spec = dict(spec)
    method, crops = spec.pop('method', None), spec.pop('crops', 'ten')
    if method not in attribution.METHODS:
      raise ValueError(f'config.maps.{name}: method must be one of {attribution.METHODS}, got {method!r}')
    if crops not in CROPS[:2]:
      raise ValueError(f'config.maps.{name}: crops must be one of {CROPS[:2]}, got {crops!r}')
    if attribution.REGISTRY[method].ten_crops == 'rule' and spec:
      raise ValueError(f'config.maps.{name}: {method} takes no settings, got {sorted(spec)}')
    return cls(method, crops, spec)

  def as_dict(self) -> dict:
    """The spec as a config or JSON holds it.

    Returns:
      {'method', 'crops', 'settings'}.
    """
    return {'method': self.method, 'crops': self.crops, 'settings': dict(self.settings)}


GRADIENT = MapSpec()


@dataclasses.dataclass
class Maps:
  """`make_maps`' result.

  Attributes:
    top_classes: int [n, k].
    maps: {name: (true-class maps [n, H, W] or None without labels, top-k maps [n, k, H, W])}.
    shared: [n] with share_true (the top-k position of the true class, -1 where it is not among them),
      else None.
    top_scores: the top classes' scores, where the gradient pass ranked them.
    signed: {name: [n, H, W]} signed maps (with `signed`).
    seconds: {name: s} (a map taken out of the gradient passes: 0).
  """
  top_classes: np.ndarray
  maps: dict
  shared: np.ndarray | None = None
  top_scores: np.ndarray | None = None
  signed: dict = dataclasses.field(default_factory=dict)
  seconds: dict = dataclasses.field(default_factory=dict)


def _host(*arrays):
  return tuple(np.asarray(jax.device_get(a)) for a in arrays)


def true_class_positions(top_classes, labels) -> np.ndarray:
  """Where each image's true class stands among its top-k classes, -1 where it is not among them.

  Args:
    top_classes: int [n, k].
    labels: int [n].

  Returns:
    int [n].
  """
  hit = np.asarray(top_classes) == np.asarray(labels)[:, None]
  return np.where(hit.any(1), hit.argmax(1), -1)


def shares_gradient_passes(model, spec: MapSpec) -> bool:
  """Whether a map comes out of the gradient maps' own passes: Grad-CAM on the 10 crops at a named layer.

  Args:
    model: the model.
    spec: the map's `MapSpec`.

  Returns:
    A bool.
  """
  return (spec.method == 'grad_cam' and spec.crops == 'ten' and set(spec.settings) <= {'layer'}
          and isinstance(spec.settings.get('layer'), str | None) and not isinstance(model, rules.Function))


def _gradient(model, x, labels, *, top_k, crop, chunk, sequential, share_true):
  """The gradient maps of the top-k classes and the true class.

  (classes, scores, top maps, true maps, shared).
  """
  top_classes, scores, top_maps = _host(*saliency.top_k_saliency(model, x, k=top_k, crop_size=crop,
                                                                   chunk_size=chunk, sequential=sequential))
  if labels is None:
    return top_classes, scores, top_maps, None, None
  shared = true_class_positions(top_classes, labels) if share_true else np.full(len(x), -1)
  true_maps = top_maps[np.arange(len(x)), np.maximum(shared, 0)].copy()
  alone = np.flatnonzero(shared < 0)
  if len(alone):
    _, own = _host(*saliency.class_saliency(model, x[alone], np.asarray(labels)[alone, None], crop_size=crop,
                                            chunk_size=chunk, sequential=sequential))
    true_maps[alone] = own[:, 0]
  return top_classes, scores, top_maps, true_maps, shared if share_true else None


def _gradient_and_grad_cam(model, x, labels, layer, *, top_k, crop, chunk, sequential, share_true):
  """The gradient and Grad-CAM maps of the top-k and true classes out of the same passes.

  (classes, scores, (top, true) gradient maps, (top, true) Grad-CAM maps, shared).
  """
  def maps(*args, **kwargs):
    return attribution.gradient_and_grad_cam(model, *args, layer=layer, crop_size=crop, chunk_size=chunk,
                                             sequential=sequential, **kwargs)
  if labels is None:
    top_classes, scores, top_maps, top_cams = _host(*maps(x, k=top_k))
    return top_classes, scores, (top_maps, None), (np.maximum(top_cams, 0), None), None
  labels = np.asarray(labels)
  if share_true and sequential and parallel.size() == 1:
    # the true class's maps in the same call: one more backward pass where it is not among the top-k
    top_classes, scores, top_maps, top_cams, true_maps, true_cams = _host(*maps(x, k=top_k, labels=labels))
    return (top_classes, scores, (top_maps, true_maps), (np.maximum(top_cams, 0), np.maximum(true_cams, 0)),
            true_class_positions(top_classes, labels))
  top_classes, scores, top_maps, top_cams = _host(*maps(x, k=top_k))
  shared = true_class_positions(top_classes, labels) if share_true else np.full(len(x), -1)
  rows, column = np.arange(len(x)), np.maximum(shared, 0)
  true_maps, true_cams = top_maps[rows, column].copy(), np.maximum(top_cams[rows, column], 0)
  alone = np.flatnonzero(shared < 0)
  if len(alone):
    _, _, own_maps, own_cams = _host(*maps(x[alone], labels[alone, None]))
    true_maps[alone], true_cams[alone] = own_maps[:, 0], np.maximum(own_cams[:, 0], 0)
  return (top_classes, scores, (top_maps, true_maps), (np.maximum(top_cams, 0), true_cams),
          shared if share_true else None)


def _key_settings(spec: MapSpec, seed: int) -> dict:
  settings = dict(spec.settings)
  if attribution.REGISTRY[spec.method].takes_key and 'key' not in settings:
    settings['key'] = jax.random.key(seed)
  return settings


def method_maps(model, x, classes, spec: MapSpec, *, crop_size=None, chunk_size=None,
                sequential: bool = False, seed: int = 0, signed: bool = False) -> tuple:
  """The maps of one spec for given classes, at the net's input size, on the host.

  Args:
    model: the model.
    x: normalised images [n, H, W, C].
    classes: int [n, c].
    spec: the `MapSpec`.
    crop_size: the 10 crops' size, or None.
    chunk_size: images per compiled call.
    sequential: the CPU kernels (`saliency.each`).
    seed: the key of methods that draw noise.
    signed: also the signed maps (`attribution.to_map(a, signed=True)`; crops 'image' only).

  Returns:
    (maps [n, c, H, W], signed maps or None).

  Raises:
    ValueError: a method that cannot map c classes of 10 crops.
  """
  method = attribution.registered(spec.method)
  settings = _key_settings(spec, seed)
  classes = np.asarray(classes)
  if spec.crops == 'ten' and method.ten_crops == 'rule':
    _, maps = saliency.class_saliency(model, x, classes, crop_size=crop_size, relu=method.relu,
                                      chunk_size=chunk_size, sequential=sequential)
    return _host(maps)[0], None
  region = method.ten_crops == 'region' or (method.ten_crops == 'whole' and not crop_size)
  if spec.crops == 'ten' and region:
    return np.maximum(_host(attribution.class_region_maps(
        spec.method, model, x, classes, crop_size=crop_size, chunk_size=chunk_size, **settings))[0], 0), None
  if spec.crops == 'ten':
    raise ValueError(f"{spec.method} on 10 crops x {classes.shape[1]} classes is not supported: use crops "
                     "'centre'")
  if spec.crops == 'image':
    absolute, sign = [], []
    for j in range(classes.shape[1]):
      a = attribution.attribute(spec.method, model, x, classes[:, j], chunk_size=chunk_size, **settings)
      absolute.append(attribution.to_map(a))
      if signed:
        sign.append(attribution.to_map(a, signed=True))
    return np.stack(absolute, 1), np.stack(sign, 1) if signed else None
  h, w = x.shape[1:3]
  ch, cw = saliency.crop_shape(crop_size or (h, w), (h, w))
  top, left = (h - ch) // 2, (w - cw) // 2
  centre = x[:, top:top + ch, left:left + cw]
  maps = np.zeros((*classes.shape, h, w), np.float32)
  if method.ten_crops in ('region', 'whole'):
    region = attribution.class_region_maps(spec.method, model, centre, classes, chunk_size=chunk_size,
                                           **settings)
    maps[:, :, top:top + ch, left:left + cw] = np.maximum(_host(region)[0], 0)
  else:
    for j in range(classes.shape[1]):
      a = attribution.attribute(spec.method, model, centre, classes[:, j], chunk_size=chunk_size, **settings)
      maps[:, j, top:top + ch, left:left + cw] = attribution.to_map(a)
  return maps, None


def make_maps(model, x, *, specs: dict, labels=None, top_k: int = 0, top_classes=None, crop_size: int = 0,
              chunk_size: int | None = None, sequential: bool = False, share_true: bool = False,
              seed: int = 0, signed: bool = False) -> Maps:
  """Every map of the specs for each image's top-k classes and its true class.

  Args:
    model: the model.
    x: normalised images [n, H, W, C].
    specs: {name: `MapSpec`}.
    labels: int [n] (None: images without labels, no true-class maps).
    top_k: the classes each image is mapped for, ranked by the gradient pass (the spec 'gradient' must be
      asked).
    top_classes: int [n, k], the classes given instead.
    crop_size: the paper's 10 crops of that size (0: the whole image).
    chunk_size: images per compiled call.
    sequential: the CPU kernels (`saliency.each`).
    share_true: a true class among the top-k takes that class's maps.
    seed: the key of methods that draw noise.
    signed: also the signed maps (crops 'image').

  Returns:
    `Maps`.

  Raises:
    ValueError: top-k classes without the 'gradient' spec.
  """
  crop = crop_size or None
  n = len(x)
  maps, seconds = {}, {}
  shared, scores = None, None
  todo = dict(specs)
  if top_classes is None and top_k:
    if todo.get('gradient') != GRADIENT:
      raise ValueError("the top-k classes are ranked by the gradient maps: ask for them as 'gradient', or "
                       'give top_classes')
    del todo['gradient']
    fused = next((name for name, spec in todo.items() if shares_gradient_passes(model, spec)), None)
    t0 = time.perf_counter()
    options = {'top_k': top_k, 'crop': crop, 'chunk': chunk_size, 'sequential': sequential,
               'share_true': share_true}
    if fused is not None:
      top_classes, scores, (top, true), (cam_top, cam_true), shared = _gradient_and_grad_cam(
          model, x, labels, todo.pop(fused).settings.get('layer'), **options)
      maps[fused], seconds[fused] = (cam_true, cam_top), 0.0
    else:
      top_classes, scores, top, true, shared = _gradient(model, x, labels, **options)
    maps['gradient'] = (true, top)
    seconds['gradient'] = time.perf_counter() - t0
  top_classes = np.zeros((n, 0), np.int64) if top_classes is None else np.asarray(top_classes)
  k = top_classes.shape[1]
  classes = top_classes if labels is None else np.concatenate([top_classes, np.asarray(labels)[:, None]], 1)
  signed_maps = {}
  for name, spec in todo.items():
    t0 = time.perf_counter()
    both, sign = method_maps(model, x, classes, spec, crop_size=crop, chunk_size=chunk_size,
                             sequential=sequential, seed=seed, signed=signed)
    top, true = both[:, :k], None if labels is None else both[:, k]
    if shared is not None:
      true = np.where((shared >= 0)[:, None, None], top[np.arange(n), np.maximum(shared, 0)], true)
    maps[name] = (true, top)
    if sign is not None:
      signed_maps[name] = sign[:, k] if labels is not None else sign
    seconds[name] = time.perf_counter() - t0
  return Maps(top_classes, {name: maps[name] for name in specs}, shared, scores, signed_maps, seconds)


@dataclasses.dataclass(frozen=True)
class Request:
  """The settings of `make_maps` that travel together in a job.

  The specs ({name: `MapSpec`}), the top-k, the crop size, the chunk size and the two performance
  options.
  """
  specs: dict
  top_k: int = 0
  crop_size: int = 0
  chunk_size: int | None = None
  sequential: bool = False
  share_true: bool = False

  def make(self, model, x, *, labels=None, names=None, top_classes=None) -> Maps:
    """`make_maps` of the request's specs `names` (default: all), in the request's order.

    Args:
      model: the model.
      x: normalised images [n, H, W, C].
      labels: int [n], or None.
      names: the specs to make, or None for all.
      top_classes: int [n, k] given classes, or None.

    Returns:
      `Maps`.
    """
    specs = self.specs if names is None else {name: self.specs[name] for name in self.specs if name in names}
    return make_maps(model, x, specs=specs, labels=labels, top_k=self.top_k, top_classes=top_classes,
                     crop_size=self.crop_size, chunk_size=self.chunk_size, sequential=self.sequential,
                     share_true=self.share_true)


def onto(maps: dict, size) -> dict:
  """Maps resized onto images of another size (`localise.resize_map`, bilinear); unchanged at that size.

  Args:
    maps: {name: (true-class maps [n, h, w] or None, top-k maps [n, k, h, w])}.
    size: (H, W), e.g. of the photos localised on.

  Returns:
    The same dict at (H, W).
  """
  out = {}
  for name, (true, top) in maps.items():
    if top.shape[2:] == tuple(size) and (true is None or true.shape[1:] == tuple(size)):
      out[name] = (true, top)
      continue
    out[name] = (None if true is None else np.stack([localise.resize_map(m, size) for m in true]),
                 np.stack([[localise.resize_map(m, size) for m in row] for row in top])
                 if top.shape[1] else np.zeros((len(top), 0, *size), top.dtype))
  return out
