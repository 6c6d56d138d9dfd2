"""Files a run keeps and reads again, written durably and checked on reading.

The data cache, the evaluation's chunks, the sweep's maps.

`write_atomic` writes through a temporary file that is flushed to disk (fsync) before it is renamed
over the target, and the rename itself is made durable (the folder fsynced): after a crash a reader
finds the whole old file, the whole new one, or none. `save` writes arrays to an npz that also carries
what the file is (`meta`: JSON, e.g. a chunk's record span and the digest of the settings it was made
under) and a checksum of every array; `load` refuses a file whose meta is not the one expected (a chunk
copied over another), whose checksum fails (changed arrays), or that cannot be read at all (truncated,
empty, garbage), with a `DamagedFile` naming the file and what to do. Callers that can make the file
again do so (`load_or_none`).
"""

import hashlib
import json
import os
import pathlib
import tempfile
import zipfile

import numpy as np

from saliency_jax.errors import UserError

_META, _CHECKSUM = '__meta__', '__checksum__'


class DamagedFile(UserError):
  """A kept file that cannot be used: unreadable, changed since it was written, or another file's.

  `path` and `problem` name it; the message adds what to do.
  """

  def __init__(self, path, problem: str):
    super().__init__(f'{path} {problem}: delete it and rerun: it will be made again')
    self.path, self.problem = path, problem


def _fsync_folder(folder: pathlib.Path) -> None:
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:  # a platform without directory handles
    return
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_atomic(path: str | os.PathLike, content: str | bytes = b'', *, writer=None) -> None:
  """Writes to a file through a temporary file beside it, flushed to disk, then renamed over it.

  A reader never sees half a file, and a crash never leaves one.

  Args:
    path: the file.
    content: the text or bytes to write.
    writer: instead of content, a function that writes to the open binary file.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      if writer is None:
        f.write(content.encode() if isinstance(content, str) else content)
      else:
        writer(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  _fsync_folder(path.parent)


def checksum(arrays: dict) -> str:
  """sha256 of every array's name, dtype, shape and bytes, in name order.

  Args:
    arrays: {name: array}.

  Returns:
    The hex digest.
  """
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f'{name}:{a.dtype.str}:{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(path: str | os.PathLike, arrays: dict, *, meta: dict) -> None:
  """Arrays to an npz file (`write_atomic`), with what they are (`meta`, JSON) and their checksum.

  Args:
    path: the file.
    arrays: {name: array}.
    meta: what the arrays are (the config, code and weights they were made under).

  Raises:
    ValueError: an array named like the reserved meta or checksum entries.
  """
  arrays = {name: np.asarray(a) for name, a in arrays.items()}
  if _META in arrays or _CHECKSUM in arrays:
    raise ValueError(f'array names {_META} and {_CHECKSUM} are reserved')
  stamp = {_META: np.asarray(json.dumps(meta, sort_keys=True)), _CHECKSUM: np.asarray(checksum(arrays))}
  write_atomic(path, writer=lambda f: np.savez(f, **arrays, **stamp))


def load(path: str | os.PathLike, *, meta: dict) -> dict:
  """The arrays of a `save`d file, checked against what it should hold.

  Args:
    path: the file.
    meta: what the file must have been written as.

  Returns:
    {name: array}.

  Raises:
    DamagedFile: it cannot be read, was written as something else than `meta` says, or its arrays fail
      their checksum.
  """
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = dict(f)
  except FileNotFoundError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise DamagedFile(path, f'is damaged ({type(e).__name__}: {e})') from None
  if _META not in arrays or _CHECKSUM not in arrays:
    raise DamagedFile(path, 'carries no record of what it is (written by an older version, or not by this '
                      'package)')
  written = json.loads(str(arrays.pop(_META)))
  if written != json.loads(json.dumps(meta, sort_keys=True)):
    raise DamagedFile(path, f'is not the file expected here: it holds {written}, not {meta} (copied from '
                      'elsewhere?)')
  if str(arrays.pop(_CHECKSUM)) != checksum(arrays):
    raise DamagedFile(path, 'has changed since it was written (its arrays fail their checksum)')
  return arrays


def load_or_none(path: str | os.PathLike, *, meta: dict, log=print) -> dict | None:
  """`load`, or None when there is no file or it is damaged (said through `log`): for files made again.

  Args:
    path: the file.
    meta: what the file must have been written as.
    log: where a damaged file is reported.

  Returns:
    {name: array}, or None.
  """
  if not pathlib.Path(path).exists():
    return None
  try:
    return load(path, meta=meta)
  except DamagedFile as e:
    log(f'{e.path} {e.problem}: making it again')
    return None
