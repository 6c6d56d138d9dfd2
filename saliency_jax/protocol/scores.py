"""Scoring: the localisation metrics of `protocol.localisation`'s boxes, why the guesses fail, and the
pointing game, one implementation each (`metrics` holds the per-image definitions)."""

import numpy as np

from saliency_jax import localise, metrics


def top_guesses(found: dict, top_classes) -> list[list[tuple]]:
  """One cut's `localise_images` result as ILSVRC guesses: per image, (class, box) for its top-k."""
  n, k = top_classes.shape
  return [[(int(top_classes[i, j]), tuple(found['top_boxes'][i, j])) for j in range(k)] for i in range(n)]


def localisation_metrics(found: dict, labels, gt_labels, gt_boxes, top_classes, log=print) -> dict:
  """GT-known box accuracy and ILSVRC top-1 / top-k localisation error of `localise_images`' boxes.

  Also per cut the status counts and 'fallbacks': how many boxes were the full-image fallback (status
  other than 'ok': flat or invalid map, empty cut), {'true': of the n true-class boxes, 'top': of the
  n x k top-k boxes, 'total'}: a fallback box is a guess like any other and can flatter a method.
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
        'seconds': float(r['seconds']),
    }
    top_k = f", top-{k} error {out[name][f'top{k}_loc_error']:.3f}" if k > 1 else ''
    log(f"localise {name}: GT-known {out[name]['gt_known_box_accuracy']:.3f}, "
        f"top-1 error {out[name]['top1_loc_error']:.3f}{top_k}, fallback boxes {fallbacks['true']} "
        f"true-class, {fallbacks['top']} top-{k} ({out[name]['seconds']:.1f} s)")
  return out


def localisation_failures(found: dict, gt_labels, gt_boxes, top_classes) -> dict:
  """Why the top-k guesses fail, per cut (`metrics.localisation_failures` counts; 'per_image': each
  image's category), and the oracle: the top-k error if each image took whichever cut localised it
  right (an upper bound on any choice)."""
  k = top_classes.shape[1]
  per_image = {name: metrics.localisation_failures(top_guesses(r, top_classes), gt_labels, gt_boxes, top_k=k)
               for name, r in found.items()}
  right = np.array([[c == 'correct' for c in f['per_image']] for f in per_image.values()])
  return {'top_k': k, 'per_method': {name: f['counts'] for name, f in per_image.items()},
          f'oracle_top{k}_loc_error': float(1 - right.any(axis=0).mean()),
          'per_image': {name: f['per_image'] for name, f in per_image.items()}}


def class_boxes(gt_labels, gt_boxes, labels) -> list[np.ndarray]:
  """Each image's ground-truth boxes (or their flags) of its true class."""
  return [np.asarray(b)[np.asarray(bl) == y] for b, bl, y in zip(gt_boxes, gt_labels, labels)]


def pointing_hits(maps, *, masks=None, boxes=None, difficult=None, tolerance: float) -> tuple:
  """The pointing game's hits of maps [N, H, W] (Zhang et al. 2016): on the object masks [N, H, W] when
  given (`metrics.pointing_hits`), else on each image's boxes of its class (boxes[i] [M_i, 4]; difficult[i]
  bool [M_i] or None: TorchRay's protocol, images whose boxes are all VOC 'difficult' not played,
  `metrics.pointing_game`). Returns (hits bool [N], played bool [N])."""
  if masks is not None:
    return metrics.pointing_hits(maps, masks, tolerance=tolerance), np.ones(len(maps), bool)
  flags = difficult if difficult is not None else [np.zeros(len(b), bool) for b in boxes]
  played = metrics.pointing_played(flags)
  hits = np.zeros(len(maps), bool)
  idx = np.flatnonzero(played)
  hits[idx] = metrics.pointing_game([maps[i] for i in idx], [boxes[i] for i in idx], tolerance=tolerance)
  return hits, played


def pointing(maps, labels, *, masks=None, boxes=None, difficult=None, tolerance: float) -> dict:
  """The pointing game of maps [N, H, W] for their classes labels [N] (`pointing_hits`), summarised per
  image and as TorchRay's mean over classes, on the images played (`metrics.pointing_accuracy`)."""
  hits, played = pointing_hits(maps, masks=masks, boxes=boxes, difficult=difficult, tolerance=tolerance)
  return metrics.pointing_accuracy(hits, labels, played=None if masks is not None else played)
