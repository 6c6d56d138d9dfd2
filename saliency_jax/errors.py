"""Errors of a run's inputs (its config, data, workdir or weights), not of the code.

The entry points print a `UserError` as one line, `error: <message>`, instead of a traceback: the
message names what is wrong (the config key and its allowed values, the file, the training step) and
what to do.
"""


class UserError(ValueError):
  """A problem with what a run was given; its message is the whole report."""
