"""Scoring: localisation metrics with intervals, paired comparisons, failures, the pointing game.

The localisation metrics of `protocol.localisation`'s boxes, paired comparisons of cuts on the same
images, why the guesses fail, and the pointing game, one implementation each (`metrics` holds the
per-image definitions, `stats` the intervals and tests).
"""

import numpy as np

from saliency_jax import localise, metrics, stats


def top_guesses(found: dict, top_classes) -> list[list[tuple]]:
  """One cut's boxes as ILSVRC guesses: per image, (class, box) for its top-k.

  Args:
    found: one cut's `localise_images` result.
    top_classes: int [n, k].

  Returns:
    Per image, [(class, box)].
  """
  n, k = top_classes.shape
  return [[(int(top_classes[i, j]), tuple(found['top_boxes'][i, j])) for j in range(k)] for i in range(n)]


def right_per_image(found: dict, labels, gt_labels, gt_boxes, top_classes) -> dict:
  """One cut's results image by image: whether the true-class box and the top-1 / top-k guesses are right.

  Args:
    found: one cut's `localise_images` result.
    labels: int [n], the true classes.
    gt_labels: per image, labels [M_i].
    gt_boxes: per image, boxes [M_i, 4].
    top_classes: int [n, k].

  Returns:
    {'gt_known', 'top1', 'top<k>'} bool [n]: the true-class box has IoU >= 0.5 with a box of the class;
    the top-1 / top-k guesses localise the image (the ILSVRC rule).
  """
  k = top_classes.shape[1]
  guesses = top_guesses(found, top_classes)
  boxes = [tuple(b) for b in found['true_boxes']]
  out = {'gt_known': metrics.gt_known_hits(boxes, gt_labels, gt_boxes, labels)}
  for top in dict.fromkeys((1, k)):
    out[f'top{top}'] = np.array([metrics.localisation_correct(g[:top], lab, box)
                                 for g, lab, box in zip(guesses, gt_labels, gt_boxes)], bool)
  return out


def intervals(right: dict) -> dict:
  """95% percentile bootstrap intervals over images of the metrics of `right_per_image`.

  `stats.interval`, 2,000 resamples, seed 0; an error's interval is that of 1 - right.

  Args:
    right: `right_per_image`'s dict.

  Returns:
    {'gt_known_box_accuracy', 'top1_loc_error', 'top<k>_loc_error'} -> [low, high].
  """
  out = {}
  for key, values in right.items():
    name, v = ('gt_known_box_accuracy', values) if key == 'gt_known' else (f'{key}_loc_error', ~values)
    ci = stats.interval(v)
    out[name] = [ci['low'], ci['high']]
  return out


def paired_comparisons(right: dict, chosen: str, others) -> dict:
  """A cut against each of others on the same images, paired (`stats.paired`).

  The images chosen gets right minus those other gets right (for an error too: positive when chosen is
  better), its interval and McNemar's exact p-value.

  Args:
    right: {cut: `right_per_image`}.
    chosen: the cut compared.
    others: the cuts it is compared with.

  Returns:
    {other: {metric: `stats.paired`'s dict}}.
  """
  out = {}
  for other in others:
    if other == chosen or other not in right:
      continue
    out[other] = {}
    for key in right[chosen]:
      a, b = right[chosen][key], right[other][key]
      name = 'gt_known_box_accuracy' if key == 'gt_known' else f'{key}_loc_error'
      out[other][name] = stats.paired(a, b)
  return out


def localisation_metrics(found: dict, labels, gt_labels, gt_boxes, top_classes, log=print, *,
                         right: dict | None = None) -> dict:
  """GT-known box accuracy and ILSVRC top-1 / top-k localisation error of every cut, with 95% intervals.

  Also per cut the status counts and 'fallbacks': how many boxes were the full-image fallback (status
  other than 'ok': flat or invalid map, empty cut), {'true': of the n true-class boxes, 'top': of the
  n x k top-k boxes, 'total'}: a fallback box is a guess like any other and can flatter a method.

  Args:
    found: `localise_images`' first result, {cut: ...}.
    labels: int [n], the true classes.
    gt_labels: per image, labels [M_i].
    gt_boxes: per image, boxes [M_i, 4].
    top_classes: int [n, k].
    log: where each cut's numbers are said.
    right: {cut: `right_per_image`} when the caller has them already (None: computed here).

  Returns:
    {cut: {'gt_known_box_accuracy', 'top1_loc_error', 'top<k>_loc_error', 'intervals', 'status',
    'fallbacks', ...}}.
  """
  n, k = top_classes.shape
  out = {}
  for name, r in found.items():
    guesses = top_guesses(r, top_classes)
    names, counts = np.unique(np.ravel(r['status']), return_counts=True)
    true_boxes = [tuple(b) for b in r['true_boxes']]
    fallbacks = {'true': localise.fallbacks(r['status'][:, 0]),
                 'top': localise.fallbacks(r['status'][:, 1:].ravel())}
    out[name] = {
        'gt_known_box_accuracy': metrics.gt_known_accuracy(true_boxes, gt_labels, gt_boxes, labels),
        'top1_loc_error': metrics.localisation_error(guesses, gt_labels, gt_boxes, top_k=1),
        f'top{k}_loc_error': metrics.localisation_error(guesses, gt_labels, gt_boxes, top_k=k),
        'status': {str(a): int(b) for a, b in zip(names, counts)},
        'fallbacks': {**fallbacks, 'total': fallbacks['true'] + fallbacks['top']},
        'intervals': intervals(right[name] if right is not None
                               else right_per_image(r, labels, gt_labels, gt_boxes, top_classes)),
        'seconds': float(r['seconds']),
    }
    top_k = f", top-{k} error {out[name][f'top{k}_loc_error']:.3f}" if k > 1 else ''
    log(f"localise {name}: GT-known {out[name]['gt_known_box_accuracy']:.3f}, "
        f"top-1 error {out[name]['top1_loc_error']:.3f}{top_k}, fallback boxes {fallbacks['true']} "
        f"true-class, {fallbacks['top']} top-{k} ({out[name]['seconds']:.1f} s)")
  return out


def localisation_failures(found: dict, gt_labels, gt_boxes, top_classes) -> dict:
  """Why the top-k guesses fail, per cut, and the oracle over the cuts.

  Args:
    found: `localise_images`' first result, {cut: ...}.
    gt_labels: per image, labels [M_i].
    gt_boxes: per image, boxes [M_i, 4].
    top_classes: int [n, k].

  Returns:
    {'top_k', 'per_method': {cut: `metrics.localisation_failures` counts}, 'per_image': each image's
    category per cut, 'oracle': the top-k error if each image took whichever cut localised it right (an
    upper bound on any choice), ...}.
  """
  k = top_classes.shape[1]
  per_image = {name: metrics.localisation_failures(top_guesses(r, top_classes), gt_labels, gt_boxes, top_k=k)
               for name, r in found.items()}
  right = np.array([[c == 'correct' for c in f['per_image']] for f in per_image.values()])
  return {'top_k': k, 'per_method': {name: f['counts'] for name, f in per_image.items()},
          f'oracle_top{k}_loc_error': float(1 - right.any(axis=0).mean()),
          'per_image': {name: f['per_image'] for name, f in per_image.items()}}


def wsol_rows(made: dict, class_boxes: list, masks) -> dict:
  """Per map, the per-image halves of the WSOL metrics of its true-class maps (Choe et al. 2020).

  Args:
    made: {map name: true-class maps [n, H, W]}.
    class_boxes: per image, the ground-truth boxes of its class.
    masks: bool [n, H, W] object masks, or None.

  Returns:
    {map: {'box_iou' [n, T] (each image's best IoU at each score-map threshold, `metrics.box_ious`) and,
    with masks, 'pixel_hist' [n, 2, T + 2]}}.
  """
  out = {}
  for name, (true_maps, _) in made.items():
    out[name] = {'box_iou': metrics.box_ious(true_maps, class_boxes).T}
    if masks is not None:
      out[name]['pixel_hist'] = metrics.pixel_histograms(true_maps, masks)
  return out


def _box_acc_at(r: dict, thresholds: dict) -> dict:
  """`metrics.max_box_acc_from_ious`' result read at given score-map thresholds ({iou: threshold}).

  The box accuracy per IoU threshold, their mean (MaxBoxAccV2) and 95% bootstrap intervals over images.
  """
  at = [r['cam_thresholds'].index(thresholds[t]) for t in r['box_acc']]
  right = np.stack([r['correct'][k, j] for k, j in enumerate(at)])  # [len(iou), N]
  ci = {f'box_acc_{t}': [stats.interval(right[k])[e] for e in ('low', 'high')]
        for k, t in enumerate(r['box_acc'])}
  ci['max_box_acc_v2'] = [stats.interval(right.mean(axis=0))[e] for e in ('low', 'high')]
  return {'max_box_acc_v2': float(right.mean()),
          'box_acc': {str(t): float(right[k].mean()) for k, t in enumerate(r['box_acc'])},
          'threshold': {str(t): float(thresholds[t]) for t in r['box_acc']}, 'intervals': ci,
          'n': right.shape[1]}


def wsol_summary(rows: dict) -> dict:
  """MaxBoxAccV2 and, with masks, PxAP of every map over all evaluated images, with 95% intervals.

  The intervals: bootstrap over images of the box accuracies at their best thresholds (`stats.interval`).

  Args:
    rows: `wsol_rows`' dict (of every chunk, concatenated).

  Returns:
    {map: {'max_box_acc_v2', 'box_acc', 'best_threshold', 'intervals', and 'pxap' with masks}}.
  """
  out = {}
  for name, w in rows.items():
    r = metrics.max_box_acc_from_ious(np.asarray(w['box_iou'], np.float64).T)
    at = _box_acc_at(r, r['best_threshold'])
    out[name] = {'max_box_acc_v2': r['max_box_acc_v2'], 'box_acc': at['box_acc'],
                 'best_threshold': at['threshold'], 'intervals': at['intervals']}
    if 'pixel_hist' in w:
      out[name]['pxap'] = metrics.pxap_from_histograms(w['pixel_hist'])
  return out


def wsol_held_out(selection_iou, report_iou) -> dict:
  """MaxBoxAccV2 as wsolevaluation reports it: thresholds chosen on one part, applied to the other.

  For each IoU threshold the score-map threshold is chosen on the selection part and applied to the
  reported part; beside it each part's own best threshold (the oracle, an optimistic number).

  Args:
    selection_iou: `metrics.box_ious` [T, n] of the selection part.
    report_iou: `metrics.box_ious` [T, m] of the report part.

  Returns:
    {'selection': oracle on the selection part, 'report': at the selection part's thresholds,
    'report_oracle': oracle on the report part}, each with its intervals.
  """
  sel = metrics.max_box_acc_from_ious(selection_iou)
  rep = metrics.max_box_acc_from_ious(report_iou)
  return {'selection': _box_acc_at(sel, sel['best_threshold']),
          'report': _box_acc_at(rep, sel['best_threshold']),
          'report_oracle': _box_acc_at(rep, rep['best_threshold'])}


def class_boxes(gt_labels, gt_boxes, labels) -> list[np.ndarray]:
  """Each image's ground-truth boxes (or their flags) of its true class.

  Args:
    gt_labels: per image, labels [M_i].
    gt_boxes: per image, boxes [M_i, 4] (or flags [M_i]).
    labels: int [n], the true classes.

  Returns:
    Per image, [M'_i, 4] (or [M'_i]).
  """
  return [np.asarray(b)[np.asarray(bl) == y] for b, bl, y in zip(gt_boxes, gt_labels, labels)]


def pointing_hits(maps, *, masks=None, boxes=None, difficult=None, tolerance: float) -> tuple:
  """The pointing game's hits of maps (Zhang et al. 2016), on masks or on each image's boxes of its class.

  Args:
    maps: [N, H, W].
    masks: bool [N, H, W] object masks (`metrics.pointing_hits`), or None.
    boxes: per image, its boxes of its class [M_i, 4] (`metrics.pointing_game`), when there are no masks.
    difficult: per image, bool [M_i] VOC flags, or None: TorchRay's protocol, images whose boxes are all
      'difficult' not played.
    tolerance: in pixels.

  Returns:
    (hits bool [N], played bool [N]).
  """
  if masks is not None:
    return metrics.pointing_hits(maps, masks, tolerance=tolerance), np.ones(len(maps), bool)
  flags = difficult if difficult is not None else [np.zeros(len(b), bool) for b in boxes]
  played = metrics.pointing_played(flags)
  hits = np.zeros(len(maps), bool)
  idx = np.flatnonzero(played)
  hits[idx] = metrics.pointing_game([maps[i] for i in idx], [boxes[i] for i in idx], tolerance=tolerance)
  return hits, played


def pointing(maps, labels, *, masks=None, boxes=None, difficult=None, tolerance: float) -> dict:
  """The pointing game of maps for their classes, per image and as TorchRay's mean over classes.

  On the images played (`metrics.pointing_accuracy`).

  Args:
    maps: [N, H, W].
    labels: int [N], the classes the maps are for.
    masks: as `pointing_hits` takes them.
    boxes: as `pointing_hits` takes them.
    difficult: as `pointing_hits` takes them.
    tolerance: in pixels.

  Returns:
    `metrics.pointing_accuracy`'s dict.
  """
  hits, played = pointing_hits(maps, masks=masks, boxes=boxes, difficult=difficult, tolerance=tolerance)
  return metrics.pointing_accuracy(hits, labels, played=None if masks is not None else played)
