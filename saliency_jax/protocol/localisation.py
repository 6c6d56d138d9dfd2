"""Localisation of every map by every cut (paper Sect. 3.2 and the baselines), as one batch per method.

A `Cut` names the map it cuts ('gradient', the paper's, or another `protocol.maps` entry) and its
`localise.Settings`; `localise_images` cuts every image's true-class map and top-k maps by every cut,
starting all of them before collecting any (`localise.start_batch`), so the worker pool goes from one
cut's GraphCuts to the next's without waiting.
"""

import dataclasses
import time

import numpy as np

from saliency_jax import localise


@dataclasses.dataclass(frozen=True)
class Cut:
  """A localisation method: the `map` it cuts and its `settings` (`localise.Settings`)."""
  map: str = 'gradient'
  settings: localise.Settings = dataclasses.field(default_factory=localise.Settings)

  @classmethod
  def parse(cls, name: str, entry) -> 'Cut':
    """A config.localise entry as a `Cut`.

    Args:
      name: the entry's name, for the error.
      entry: {'map'?, **`localise.settings` fields}.

    Returns:
      The `Cut`.

    Raises:
      ValueError: naming `name` and the bad field.
    """
    entry = dict(entry)
    used = entry.pop('map', 'gradient')
    try:
      return cls(used, localise.settings(entry))
    except ValueError as e:
      raise ValueError(f'config.localise.{name}: {e}') from None

  def changes(self) -> dict:
    """The fields that differ from the paper's (the gradient map, the `localise.Settings()` defaults).

    Returns:
      {field: value}.
    """
    mine, paper = dataclasses.asdict(self.settings), dataclasses.asdict(localise.Settings())
    return {**({'map': self.map} if self.map != 'gradient' else {}),
            **{k: v for k, v in mine.items() if v != paper[k]}}


def localise_images(images, maps: dict, cuts: dict, indices, total: int, shared=None, *, workers: int = 0,
                    progress=None) -> tuple[dict, dict]:
  """Every cut on each image's true-class map and its top-k maps.

  Cuts without colour models start first, while the colour models' program compiles
  (`localise.prepare`). A cut's 'seconds': its start plus the wait for its results (they add up to the
  whole call, less the compile's wait).

  Args:
    images: the n images localised on.
    maps: {map name: (true-class maps [n, H, W] or None for images without labels, top-k maps
      [n, k, H, W])} at the images' size, each cut taking its `Cut.map`. Without true-class maps, the
      true-class columns repeat the first top-k class's.
    cuts: {name: `Cut`}.
    indices: the images' positions in the evaluation set (they seed the GraphCut's colour model sampling,
      so a share of the images gives the same boxes as the whole set).
    total: the evaluation set's size.
    shared: [n] int (optional): where the true class is top-k class j (else -1) and its map that class's
      map: its box is then that map's box, localised once.
    workers: the cuts' worker processes.
    progress: called as progress(name, n) as each cut is done, or None.

  Returns:
    ({name: {'true_boxes' [n, 4], 'top_boxes' [n, k, 4], 'status' [n, k + 1] str (column 0: the true
    class, then the top-k), 'seconds'}}, {name: true-class `localise.Result`s}).
  """
  n = len(images)
  if any(true is None for true, _ in maps.values()):
    shared = np.zeros(n, np.int64)  # no true class: its column is the first top-k class's
  shared = np.full(n, -1) if shared is None else np.asarray(shared)
  alone = np.flatnonzero(shared < 0)  # the true-class maps localised on their own
  views = list(images)  # one array object per image: its maps share one cut task
  graphcuts = [name for name, cut in cuts.items() if cut.settings.method == 'graphcut']
  top_k = next(iter(maps.values()))[1].shape[1] if maps else 0  # every map has each image's top-k
  sizes = [im.shape[:2] for im in views for _ in range(top_k)] + [views[i].shape[:2] for i in alone]
  preparing = localise.prepare(sizes, [cut.settings for cut in cuts.values()], workers=workers)

  def start(name):
    t = time.perf_counter()
    true_maps, top_maps = maps[cuts[name].map]
    k = top_maps.shape[1]
    # the top-k maps, then the true-class maps localised on their own, in one batch
    positions = [total + int(i) * k + j for i in indices for j in range(k)] + [int(indices[i]) for i in alone]
    finish = localise.start_batch([im for im in views for _ in range(k)] + [views[i] for i in alone],
                                  list(top_maps.reshape(n * k, *top_maps.shape[2:]))
                                  + [true_maps[i] for i in alone],
                                  cuts[name].settings, workers=workers, indices=positions)
    return finish, k, time.perf_counter() - t

  # the cuts without colour models first, while the workers start and the colour models compile
  started = {name: start(name) for name in cuts if name not in graphcuts}
  preparing.join()
  started.update({name: start(name) for name in graphcuts})
  out, kept = {}, {}
  for name in cuts:
    finish, k, seconds = started[name]
    t = time.perf_counter()
    results = finish()
    top, own = results[:n * k], results[n * k:]
    true = [top[i * k + shared[i]] for i in range(n)]
    for i, r in zip(alone, own):
      true[i] = r
    out[name] = {'true_boxes': np.array([r.box for r in true], np.int64).reshape(n, 4),
                 'top_boxes': np.array([r.box for r in top], np.int64).reshape(n, k, 4),
                 'status': np.array([[a.status] + [b.status for b in top[i * k:(i + 1) * k]]
                                     for i, a in enumerate(true)]).reshape(n, k + 1),
                 'seconds': seconds + time.perf_counter() - t}
    kept[name] = true
    if progress is not None:
      progress(name, n)
  return out, kept
