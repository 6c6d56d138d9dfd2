"""The localisation sweep: settings are chosen on images they are not reported on.

`run(config, workdir)` is what `experiments/sweep_localisation.py` calls (configs/localisation_sweep.py
documents the fields):
  1. the net as the main job gets it (`settings.prepare`: trained or resumed in the workdir, or a
     pretrained checkpoint);
  2. the two parts of the evaluation set (`data.splits`, `config.data.part`): 'selection' and
     'report'. For VOC / ILSVRC folders a seeded hash of each record id decides, so the split does not
     depend on the folder; for the synthetic set, selection is its separate 'validation' split and
     report its test split. The parts never share a record (checked);
  3. per part, the maps of each image's top-k classes and of its true class (10-crop when
     `crop_size`), computed once and kept in workdir/sweep under a key of everything that determines
     them: the part's record ids, the data settings, the normalisation, crop size, k, a digest of
     the net's weights, one of the code that makes them (`cache.code_digest`: the modules and those they
     import) and the backward passes' compiler options (`xla.backward_options`); another config, another
     net, other code or other options never reuse them);
  4. every setting of `config.sweep.grid` localised on both parts (`localisation.localise_images`) and
     scored (`scores.localisation_metrics`): GT-known box accuracy, ILSVRC top-1 / top-k
     localisation error, fallback boxes (status not 'ok'); each result is kept in workdir/sweep (keyed
     by the maps, the setting and the localisation code), so an interrupted sweep resumes;
  5. the pick: the best setting by `config.sweep.criterion` on the selection part alone (the report
     numbers never enter it); a tie goes to the setting closest to the paper's (fewest changed fields);
     how often bootstrap resamples of the selection part pick it, and the pick against the paper's
     setting on the report part (paired);
  6. MaxBoxAccV2 of every map cut (Choe et al. 2020, `metrics.box_ious`, kept in workdir/sweep): each
     IoU column's score-map threshold chosen on the selection part and applied to the report part,
     beside each part's own best threshold (`scores.wsol_held_out`);
  7. sweep.json and sweep.md: every setting on both parts, the pick and the paper's setting beside it.
To use the pick in a main-job config: add its settings to `config.localise` and name it in
`config.selected_method`; the main job evaluates one part with `config.data.part`.
"""

import dataclasses
import hashlib
import json
import pathlib
import time

import ml_collections
import numpy as np

from saliency_jax import attribution, localise, metrics, models, report, saliency, stats, store, xla
from saliency_jax.data import make_source, splits, transforms
from saliency_jax.jobs import settings
from saliency_jax.protocol import cache, localisation, maps, scores, setup

PARTS = ('selection', 'report')
DIRECTIONS = ('min', 'max')


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changes(settings) -> dict:
  """The fields of a localise setting that differ from the paper's (`localisation.Cut.changes`).

  A grid entry with its 'map', or `localise.Settings`; the paper's: the gradient map, the
  `localise.Settings()` defaults.

  Args:
    settings: a grid entry or `localise.Settings`.

  Returns:
    {field: value}.
  """
  if isinstance(settings, localise.Settings):
    return localisation.Cut('gradient', settings).changes()
  return localisation.Cut.parse('', settings).changes()


def metric_names(top_k: int) -> tuple[str, ...]:
  """The metrics a criterion may name.

  Args:
    top_k: the top-k of the localisation error.

  Returns:
    Their names.
  """
  names = ('gt_known_box_accuracy', 'top1_loc_error', f'top{top_k}_loc_error')
  return tuple(dict.fromkeys(names))  # top-1 once when k is 1


def choose(table: dict, criterion, grid: dict | None = None) -> str:
  """The name of the best row of `table` ({name: {metric: value}}) by `criterion`.

  criterion: ((metric, 'min' | 'max'), ...), compared in order. A tie on every metric goes to the
  setting with the fewest changes from the paper's (`grid`: {name: settings}), then to the first name.

  Args:
    table: {name: {metric: value}}.
    criterion: ((metric, 'min' | 'max'), ...).
    grid: {name: settings}, or None.

  Returns:
    The name.
  """
  def rank(name):
    values = tuple(table[name][m] if d == 'min' else -table[name][m] for m, d in criterion)
    return values + (len(changes(grid[name])) if grid else 0, name)
  return min(table, key=rank)


def check(config) -> None:
  """Raises for a sweep config that cannot run: named settings, criterion, one host.

  Args:
    config: the sweep's config.

  Raises:
    ValueError: an empty grid, a grid without the paper's setting or cutting a map config.maps does not
      name, a setting that does not parse, an empty or malformed criterion, or several hosts.
  """
  s = config.sweep
  if not s.grid:
    raise ValueError("config.sweep.grid is empty: name at least the paper's setting ({'method': 'graphcut'})")
  maps_named = dict(config.get('maps') or {})
  for name, entry in s.grid.items():
    try:
      cut = localisation.Cut.parse(name, entry)
    except ValueError as e:
      raise ValueError(str(e).replace('config.localise.', 'config.sweep.grid.', 1)) from None
    if cut.map != 'gradient' and cut.map not in maps_named:
      raise ValueError(f'config.sweep.grid.{name} localises map {cut.map!r}, which config.maps does not name '
                       f'(it names {sorted(maps_named)})')
  for name, spec in maps_named.items():
    maps.MapSpec.parse(name, spec)
  if all(changes(v) for v in s.grid.values()):
    raise ValueError("config.sweep.grid has no entry with the paper's settings (the localise.Settings() "
                     "defaults, e.g. {'method': 'graphcut'}): the report shows it beside the pick")
  if not s.criterion:
    raise ValueError("config.sweep.criterion is empty: give (metric, 'min' | 'max') pairs")
  known = metric_names(config.top_k)
  for item in s.criterion:
    if len(item) != 2 or item[0] not in known or item[1] not in DIRECTIONS:
      raise ValueError(f"config.sweep.criterion: each entry is (metric, 'min' | 'max') with a metric of "
                       f'{known}, got {tuple(item)}')
  if config.distributed.num_processes > 1:
    raise ValueError('the localisation sweep runs on one host: set config.distributed.num_processes to 1')


def part_data(config, part: str) -> ml_collections.ConfigDict:
  """A copy of config.data that selects `part` of the test split (`make_source`).

  Args:
    config: the sweep's config.
    part: 'selection' or 'report'.

  Returns:
    The data config.
  """
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.part = splits.check_part(part)
  return data


def load_part(data: setup.Data, part_key: dict, num_images: int, mean, std, part: str, log=print) -> dict:
  """The records of one part (`data` reading its 'test' split), the first num_images (0: all).

  `setup.read_records`' 'ids', 'x' (normalised, at the net's input size), 'images' (the photos localised
  on), 'labels', 'boxes' and 'box_labels', and 'data' (the part's data settings, `part_key`).

  Args:
    data: the part's `setup.Data`.
    part_key: the part's data settings.
    num_images: how many (0: all).
    mean: the normalisation's mean.
    std: the normalisation's std.
    part: the part's name.
    log: where progress is said.

  Returns:
    The records.
  """
  source = data.sources('test')
  count = min(num_images, len(source)) if num_images else len(source)
  records = setup.read_records(data, source, range(count), mean, std, progress=True)
  if records['bad']:
    log(f'{part}: skipped {len(records["bad"])} bad records, first: {records["bad"][0]}')
  return {**records, 'data': part_key}


def part_maps(mp: maps.Request, model, mean, std, part: str, records: dict, workdir: pathlib.Path,
              name='gradient', top_classes=None, log=print):
  """The top-k and true-class maps of `load_part`'s records, cached in workdir/sweep.

  (maps, key, cached): {'top_classes' int [n, k], 'top_maps' [n, k, S, S], 'true_maps' [n, S, S]}, read
  from workdir/sweep/maps-<part>-<key>.npz when there.

  name: 'gradient' (the paper's maps, which also rank the top-k classes) or a spec of config.maps (for
  the gradient maps' `top_classes`), made by `maps.make_maps`.

  Args:
    mp: the maps' settings (`maps.Request`).
    model: the net.
    mean: the normalisation's mean.
    std: the normalisation's std.
    part: the part's name.
    records: `load_part`'s records.
    workdir: the sweep's workdir.
    name: the map spec.
    top_classes: the classes to map (with a spec other than the gradient), or None.
    log: where progress is said.

  Returns:
    (maps, their cache key, whether they were read from the cache).
  """
  inputs = {'records': records['ids'], 'data': records['data'], 'mean': np.asarray(mean).tolist(),
            'std': np.asarray(std).tolist(), 'crop_size': mp.crop_size, 'top_k': mp.top_k,
            'weights': cache.weights_digest(model),
            'code': cache.code_digest(maps, saliency, models, transforms),
            'backward_options': xla.backward_options()}
  if name != 'gradient':
    inputs.update(map=mp.specs[name].as_dict(), map_code=cache.code_digest(attribution))
  key = _digest(inputs)
  stem = f'maps-{part}' if name == 'gradient' else f'maps-{part}-{name}'
  path = workdir / 'sweep' / f'{stem}-{key}.npz'
  meta = {'kind': 'sweep maps', 'part': part, 'map': name, 'key': key}
  kept = store.load_or_none(path, meta=meta, log=log)
  if kept is not None:
    return kept, key, True
  t = time.perf_counter()
  made = mp.make(model, records['x'], labels=records['labels'], names={name}, top_classes=top_classes)
  true_maps, top_maps = made.maps[name]
  arrays = {'top_classes': made.top_classes, 'top_maps': top_maps, 'true_maps': true_maps}
  store.save(path, arrays, meta=meta)
  log(f'{part}: {name} maps of {len(records["x"])} images in {time.perf_counter() - t:.0f} s')
  return arrays, key, False


def localise_part(cut: localisation.Cut, name: str, part: str, records: dict, part_maps_: dict, key: str,
                  workdir: pathlib.Path, localise_size: int, workers: int, log=print) -> dict:
  """One setting of the grid on one part, kept in workdir/sweep.

  `scores.localisation_metrics`' entry (with the fallback boxes, status not 'ok', and the intervals) and,
  under 'right', each image's `scores.right_per_image` (for the pick's stability and the paired tests).

  Args:
    cut: the setting (`localisation.Cut`).
    name: its name.
    part: the part's name.
    records: `load_part`'s records.
    part_maps_: the part's maps by map name.
    key: the maps' cache key.
    workdir: the sweep's workdir.
    localise_size: the photos' size (0: the net's).
    workers: the cuts' worker processes.
    log: where progress is said.

  Returns:
    The entry.
  """
  settings = dataclasses.asdict(cut.settings)
  key = _digest([key, settings, localise_size, cache.code_digest(localisation, scores, localise, metrics)])
  path = workdir / 'sweep' / f"loc-{part}-{name.replace('/', '-')}-{key}.json"
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    pass
  except (OSError, ValueError) as e:  # a damaged file: made again
    log(f'{path} is damaged ({type(e).__name__}): localising again')
  n = len(records['images'])
  found, _ = localisation.localise_images(records['images'], {cut.map: (part_maps_['true_maps'],
                                                                        part_maps_['top_maps'])},
                                          {name: cut}, np.arange(n), n, workers=workers)
  right = scores.right_per_image(found[name], records['labels'], records['box_labels'], records['boxes'],
                                 part_maps_['top_classes'])
  out = scores.localisation_metrics(found, records['labels'], records['box_labels'], records['boxes'],
                                    part_maps_['top_classes'], log=lambda line: log(f'{part}: {line}'),
                                    right={name: right})[name]
  out['right'] = {k: v.astype(int).tolist() for k, v in right.items()}
  report.write_json(path, out)
  return out


def part_box_ious(true_maps, records: dict, key: str, name: str, part: str, workdir: pathlib.Path,
                  log=print) -> np.ndarray:
  """Each image's best IoU at each score-map threshold [T, n] of one map's true-class maps.

  On the photos against the boxes of the image's class (`metrics.box_ious`): the per-image half of
  MaxBoxAccV2, kept in workdir/sweep (keyed by the maps, the photos' size and the metric's code).

  Args:
    true_maps: [n, H, W], the true-class maps.
    records: `load_part`'s records.
    key: the maps' cache key.
    name: the map.
    part: the part's name.
    workdir: the sweep's workdir.
    log: where progress is said.

  Returns:
    float [T, n].
  """
  key = _digest([key, list(true_maps.shape), cache.code_digest(metrics)])
  path = workdir / 'sweep' / f'box-iou-{part}-{name}-{key}.npz'
  meta = {'kind': 'sweep box IoUs', 'part': part, 'map': name, 'key': key}
  kept = store.load_or_none(path, meta=meta, log=log)
  if kept is not None:
    return kept['box_iou']
  t = time.perf_counter()
  box_iou = metrics.box_ious(true_maps, scores.class_boxes(records['box_labels'], records['boxes'],
                                                           records['labels']))
  store.save(path, {'box_iou': box_iou}, meta=meta)
  log(f'{part}: MaxBoxAccV2 IoUs of the {name} maps in {time.perf_counter() - t:.0f} s')
  return box_iou


def pick_checks(right: dict, selected: str, paper: str, criterion, grid: dict) -> tuple[dict, dict]:
  """How stable the pick is, and the pick against the default setting on the report part.

  How often bootstrap resamples of the selection part pick the same setting (`stats.pick_stability`),
  and the paired comparison on the same images (`scores.paired_comparisons`). right: {part: {setting:
  `right_per_image` lists}}.

  Args:
    right: the per-image results.
    selected: the pick.
    paper: the paper's setting.
    criterion: the pick's criterion.
    grid: {name: settings}.

  Returns:
    (the pick's stability, the pick against the paper's setting).
  """
  stability = stats.pick_stability({name: per_image_metrics(r) for name, r in right['selection'].items()},
                                   lambda means: choose(means, criterion, grid))
  versus = scores.paired_comparisons({name: {k: np.asarray(v, bool) for k, v in r.items()}
                                      for name, r in right['report'].items()}, selected, [paper])
  return stability, versus


def per_image_metrics(right: dict) -> dict:
  """`right_per_image` lists as per-image values of the criterion's metrics.

  Their means are the metrics: GT-known box accuracy and the localisation errors.

  Args:
    right: a setting's `right_per_image` lists.

  Returns:
    {metric: per-image values [n]}.
  """
  return {('gt_known_box_accuracy' if k == 'gt_known' else f'{k}_loc_error'):
          np.asarray(v, float) if k == 'gt_known' else 1 - np.asarray(v, float) for k, v in right.items()}


@xla.under_config
def run(config, workdir: str, log=print) -> dict:
  """The sweep; returns what it writes to workdir/sweep.json.

  Args:
    config: the sweep's config.
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.

  Raises:
    RuntimeError: the selection and report parts share records.
  """
  check(config)
  grid = {name: dict(entry) for name, entry in config.sweep.grid.items()}
  cuts = settings.cuts(config, config.sweep.grid)
  # the sweep's maps as it has always made them: one kind at a time, vmapped, no sharing
  mp = maps.Request(settings.specs(config, [cut.map for cut in cuts.values()]), config.top_k,
                    config.crop_size, config.chunk_size)
  parts_data = {part: part_data(config, part) for part in PARTS}
  data = {part: dataclasses.replace(settings.data(config), key=d.to_dict(),
                                    sources=lambda split, d=d: make_source(d, split))
          for part, d in parts_data.items()}
  workdir = pathlib.Path(workdir)
  (workdir / 'sweep').mkdir(parents=True, exist_ok=True)
  prepared = settings.prepare(config, workdir, log=log)  # 1: the net
  model, mean, std = prepared.model, prepared.mean, prepared.std
  seconds = dict(prepared.seconds)

  records, parts, gradient = {}, {}, {}
  for part in PARTS:  # 2-3: the parts' records and gradient maps
    t = time.perf_counter()
    records[part] = load_part(data[part], data[part].key, config.sweep.num_images, mean, std, part, log)
    gradient[part] = part_maps(mp, model, mean, std, part, records[part], workdir, log=log)
    parts[part] = {'num_images': len(records[part]['ids']), 'maps_key': gradient[part][1],
                   'maps_cached': gradient[part][2], 'ids': records[part]['ids']}
    seconds[f'maps_{part}'] = time.perf_counter() - t
  shared = set(records['selection']['ids']) & set(records['report']['ids'])
  if shared:
    raise RuntimeError(f'the selection and report parts share {len(shared)} records, '
                       f'e.g. {sorted(shared)[:3]}')

  paper = next(name for name, cut in cuts.items() if not cut.changes())
  names = [paper] + [name for name in cuts if name != paper]
  table = {part: {} for part in PARTS}
  box_iou = {}
  t, mapping = time.perf_counter(), 0.0
  for used in dict.fromkeys(cuts[name].map for name in names):  # 4: one kind of map at a time
    for part in PARTS:
      tm = time.perf_counter()
      if used == 'gradient':
        part_maps_, key = gradient[part][:2]
      else:
        part_maps_, key, _ = part_maps(mp, model, mean, std, part, records[part], workdir, used,
                                       gradient[part][0]['top_classes'], log)
        seconds[f'maps_{used}_{part}'] = time.perf_counter() - tm
        mapping += seconds[f'maps_{used}_{part}']
      true_maps, top_maps = maps.onto({used: (part_maps_['true_maps'], part_maps_['top_maps'])},
                                      records[part]['images'].shape[1:3])[used]
      part_maps_ = {**part_maps_, 'true_maps': true_maps, 'top_maps': top_maps}
      tm = time.perf_counter()
      box_iou.setdefault(used, {})[part] = part_box_ious(true_maps, records[part], key, used, part, workdir,
                                                         log)
      seconds[f'box_iou_{used}_{part}'] = time.perf_counter() - tm
      mapping += seconds[f'box_iou_{used}_{part}']
      for name in names:
        if cuts[name].map == used:
          log(f'{part}: {name} {cuts[name].changes()}')
          table[part][name] = localise_part(cuts[name], name, part, records[part], part_maps_, key, workdir,
                                            config.localise_size, config.workers, log)
  right = {part: {name: table[part][name].pop('right') for name in names} for part in PARTS}
  table = {part: {name: table[part][name] for name in names} for part in PARTS}
  seconds['localisation'] = time.perf_counter() - t - mapping
  criterion = [tuple(c) for c in config.sweep.criterion]
  selected = choose(table['selection'], criterion, grid)  # 5: the pick, on the selection part alone
  stability, versus = pick_checks(right, selected, paper, criterion, grid)

  results = {
      'name': config.name, 'selected': selected, 'paper': paper, 'criterion': criterion,
      'selected_settings': changes(grid[selected]),
      'split': {'kind': 'validation split' if config.data.name == 'synthetic' else 'record id hash',
                'seed': config.data.get('part_seed', splits.SEED),
                'selection_fraction': config.data.get('selection_fraction', splits.FRACTION)},
      'pick_stability': {k: stability[k] for k in ('stability', 'picks', 'resamples', 'seed')},
      'selected_vs_paper_on_report': versus.get(paper, {}),
      'wsol': {used: scores.wsol_held_out(b['selection'], b['report']) for used, b in box_iou.items()},  # 6
      'parts': parts, 'test_accuracy': prepared.trained['test_accuracy'],
      'settings': {name: {'changes': changes(grid[name]), **{part: table[part][name] for part in PARTS}}
                   for name in names},
      'seconds': seconds, 'config': config.to_dict(),
  }
  report.write_json(workdir / 'sweep.json', results)  # 7: sweep.json and sweep.md
  report.write_atomic(workdir / 'sweep.md', markdown(results))
  log(f"picked on the selection part: {selected}; sweep.json and sweep.md in {workdir}")
  return results


def summary(results: dict, workdir) -> str:
  """What the entry point prints: the pick and the table.

  Args:
    results: what `run` returned.
    workdir: the job's workdir.

  Returns:
    The text.
  """
  return (f"\npicked on the selection part: {results['selected']}\n\n{table(results)}\n\n"
          f'sweep.json and sweep.md in {workdir}')


def _changes_text(c: dict) -> str:
  return ', '.join(f'{k} {v}' for k, v in c.items()) or 'the defaults'


def _fallbacks_text(f: dict) -> str:
  return f"{f['true']} / {f['top']}"


def table(results: dict) -> str:
  """Every setting on both parts (markdown).

  The pick in bold, the paper's setting marked; the numbers with their 95% intervals over images where
  the results carry them.

  Args:
    results: a sweep.json.

  Returns:
    The table.
  """
  k = results['config']['top_k']
  metrics = [('gt_known_box_accuracy', 'GT-known', '{:.3f}'), ('top1_loc_error', 'top-1 err.', '{:.3f}')]
  if k > 1:
    metrics.append((f'top{k}_loc_error', f'top-{k} err.', '{:.3f}'))
  metrics.append(('fallbacks', 'fallbacks', ''))
  head = ['setting', 'changes from the paper']
  head += [f'{p[:3]}. {label}' for p in PARTS for _, label, _ in metrics]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for name, row in results['settings'].items():
    label = name + (' (default)' if name == results['paper'] else '')
    label = f'**{label}**' if name == results['selected'] else label
    cells = [label, _changes_text(row['changes'])]
    cells += [report.cell(row[p], m) if m != 'fallbacks' else _fallbacks_text(row[p][m])
              for p in PARTS for m, _, _ in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def pick_lines(r: dict) -> list[str]:
  """How stable the pick is and whether it differs from the paper's setting on the report part.

  Markdown lines; none for results kept without them.

  Args:
    r: a sweep.json.

  Returns:
    The lines.
  """
  lines = []
  if 'pick_stability' in r:
    s = r['pick_stability']
    lines.append(f"The same setting is picked on {s['stability']:.0%} of {s['resamples']} bootstrap "
                 'resamples of the selection part.')
  k = r['config']['top_k']
  for metric, c in r.get('selected_vs_paper_on_report', {}).items():
    if metric in ('gt_known_box_accuracy', f'top{k}_loc_error'):
      verdict = 'distinguishable' if c['distinguishable'] else 'not distinguishable on these images'
      name = metric.replace('_', ' ')
      lines.append(f"Against the default setting `{r['paper']}` on the report part, {name}: images right"
                   f" {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] (95% paired "
                   f"bootstrap), McNemar p = {c['mcnemar']['p_value']:.3g}: {verdict}.")
  return [' '.join(lines), ''] if lines else []


def wsol_table(r: dict) -> str:
  """MaxBoxAccV2 of every map the sweep cuts (markdown), the wsolevaluation way.

  Each IoU column's score-map threshold chosen on the selection part and applied to the report part (with
  its 95% interval), beside each part's own best threshold (an oracle).

  Args:
    r: a sweep.json.

  Returns:
    The table.
  """
  lines = ['| map | sel. MaxBoxAccV2 (its best thresholds) | rep. MaxBoxAccV2 at the selection thresholds | '
           'rep. IoU 0.3 / 0.5 / 0.7 | rep. oracle MaxBoxAccV2 |', '| --- | --- | --- | --- | --- |']
  for name, w in r['wsol'].items():
    sel, rep, oracle = w['selection'], w['report'], w['report_oracle']
    thresholds = ' / '.join(f'{v:.2f}' for v in sel['threshold'].values())
    columns = ' / '.join(f'{v:.3f}' for v in rep['box_acc'].values())
    lines.append(f"| {name} | {sel['max_box_acc_v2']:.3f} ({thresholds}) | "
                 f"{report.with_interval(rep['max_box_acc_v2'], rep['intervals']['max_box_acc_v2'])} | "
                 f"{columns} | {oracle['max_box_acc_v2']:.3f} |")
  return '\n'.join(lines)


def markdown(r: dict) -> str:
  """sweep.md: every setting on both parts, the pick and its checks.

  Args:
    r: the results the job writes as JSON.

  Returns:
    The markdown text.
  """
  k = r['config']['top_k']
  sel, paper = r['settings'][r['selected']]['report'], r['settings'][r['paper']]['report']
  main = f'top{k}_loc_error'
  split = r['split']
  how = ("the synthetic set's separate validation split; report part: its test split" if split['kind'] ==
         'validation split' else f"records whose sha256(f'{split['seed']}:{{id}}') falls below "
         f"{split['selection_fraction']}; report part: the others")
  criterion = ', then '.join(f'{m} ({d})' for m, d in r['criterion'])
  return '\n'.join([
      f"# {r['name']}: localisation settings chosen on the selection part, reported on the report part",
      '',
      f"Selection part: {r['parts']['selection']['num_images']} images ({how}, "
      f"{r['parts']['report']['num_images']} images). No record is in both.",
      f'The pick is the best setting on the selection part by {criterion}; a tie goes to the setting '
      "closest to the paper's. The report numbers play no part in it.",
      '',
      f"**Picked: `{r['selected']}`** ({_changes_text(r['selected_settings'])}). On the report part: "
      f"{main.replace('_', ' ')} {sel[main]:.3f} against the paper's setting's {paper[main]:.3f}, GT-known "
      f"{sel['gt_known_box_accuracy']:.3f} against {paper['gt_known_box_accuracy']:.3f}.",
      '',
      *pick_lines(r),
      table(r),
      '',
      'GT-known: the true class\'s box has IoU >= 0.5 with a ground-truth box of that class. ILSVRC error: '
      f'top-1 / top-{k} classes each with its map\'s box; right when one guess has the right class and '
      'IoU >= 0.5. Fallbacks: full-image boxes (status not ok: flat or invalid map, empty cut), of the '
      f'true-class boxes / of the top-{k} boxes.',
      '',
      'MaxBoxAccV2 (Choe et al. 2020; `metrics.max_box_acc`) of each map\'s true-class maps:',
      '',
      wsol_table(r),
      '',
      'Seconds: ' + ', '.join(f'{name} {v:.0f}' for name, v in r['seconds'].items()),
      '',
  ])
