"""Bad records: why a record of a data source cannot be used, in a form a report can list.

A source raises `BadRecord` (a ValueError) for a record it cannot use: `record` (the image id, or
the file when no id is known), `reason` (a short code from `REASONS`) and a message that names the
file and the problem. Without skip_bad that error stops the run; with skip_bad the sources and
`transforms.load` leave the record out and list it as {'record', 'reason', 'message'}, which the
main job writes to metrics.json and report.md.
"""

from saliency_jax.errors import UserError

REASONS = {
    'malformed_xml': 'the annotation is not well-formed XML, or lacks a tag or a number',
    'no_object': 'the annotation has no <object>, so the image has no label',
    'box_outside': 'a box is empty or lies outside the image',
    'size_mismatch': "the annotation's <size> disagrees with the decoded image",
    'unknown_class': 'an object of a class that is not in the class list',
    'no_annotation': 'an image without an annotation file',
    'no_image': 'an annotation file without an image',
    'unreadable_image': 'the image file cannot be decoded',
    'unreadable': 'the source could not read the record',
}


class BadRecord(UserError):
  """A record that cannot be used: `str(error)` is the message; `record` and `reason` name it.

  Args:
    record: the record's id (or index).
    reason: one of `REASONS`.
    message: the one-line message.

  Raises:
    ValueError: an unknown reason.
  """

  def __init__(self, record, reason: str, message: str):
    if reason not in REASONS:
      raise ValueError(f'unknown bad-record reason {reason!r}: one of {sorted(REASONS)}')
    super().__init__(message)
    self.record, self.reason = str(record), reason

  def as_dict(self) -> dict:
    """The record as metrics.json lists it.

    Returns:
      {'record', 'reason', 'message'}.
    """
    return {'record': self.record, 'reason': self.reason, 'message': str(self)}


def unique(bad) -> list[dict]:
  """Bad-record dicts without repeats, in first-seen order.

  A record left out of the source appears in every split read from it.

  Args:
    bad: [{'record', 'reason', 'message', ...}].

  Returns:
    [{'record', 'reason', 'message'}].
  """
  out, seen = [], set()
  for b in bad:
    entry = {'record': str(b['record']), 'reason': str(b['reason']), 'message': str(b['message'])}
    key = tuple(entry.values())
    if key not in seen:
      seen.add(key)
      out.append(entry)
  return out
