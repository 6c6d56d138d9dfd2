"""Kept files: written durably, checked on reading (what they are, a checksum of their arrays), and a
damaged one named with what to do."""

import numpy as np
import pytest

from saliency_jax import store

META = {'kind': 'test', 'chunk': 3, 'records': [6, 9]}


def _arrays():
  return {'images': np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 'labels': np.array([1, 0]),
          'bad': np.asarray('[]')}


def test_a_saved_file_reads_back_as_written(tmp_path):
  path = tmp_path / 'f.npz'
  store.save(path, _arrays(), meta=META)
  back = store.load(path, meta=META)
  assert set(back) == set(_arrays())
  for name, a in _arrays().items():
    np.testing.assert_array_equal(back[name], a)
  assert [p.name for p in tmp_path.iterdir()] == ['f.npz']  # no temporary file left


@pytest.mark.parametrize('damage, message', [
    ('truncated', 'is damaged'), ('empty', 'is damaged'), ('garbage', 'is damaged'),
    ('labels_rolled', 'has changed since it was written'), ('another_chunk', 'is not the file expected here'),
    ('older', 'carries no record of what it is'),
])
def test_a_damaged_file_is_named_with_what_to_do(tmp_path, damage, message):
  """Before: BadZipFile, EOFError, 'pickled data', or (a copied chunk, rolled labels) silently used."""
  path = tmp_path / 'f.npz'
  store.save(path, _arrays(), meta=META)
  raw = path.read_bytes()
  if damage == 'truncated':
    path.write_bytes(raw[:len(raw) // 2])
  elif damage == 'empty':
    path.write_bytes(b'')
  elif damage == 'garbage':
    path.write_bytes(b'not an npz file at all' * 10)
  elif damage == 'labels_rolled':
    with np.load(path) as f:
      arrays = dict(f)
    np.savez(path, **{**arrays, 'labels': np.roll(arrays['labels'], 1)})
  elif damage == 'another_chunk':
    store.save(path, _arrays(), meta={**META, 'chunk': 4})
  elif damage == 'older':
    np.savez(path, **_arrays())
  with pytest.raises(store.DamagedFile, match=rf'^{path} .*{message}.*delete it and rerun'):
    store.load(path, meta=META)
  logged = []
  assert store.load_or_none(path, meta=META, log=logged.append) is None
  assert len(logged) == 1 and logged[0].startswith(str(path)) and logged[0].endswith('making it again')
  assert store.load_or_none(tmp_path / 'absent.npz', meta=META) is None


def test_write_atomic_replaces_the_whole_file(tmp_path):
  path = tmp_path / 'sub' / 'x.json'
  store.write_atomic(path, '{"a": 1}\n')
  store.write_atomic(path, '{"a": 2}\n')
  assert path.read_text() == '{"a": 2}\n' and [p.name for p in path.parent.iterdir()] == ['x.json']
  def failing(f):
    f.write(b'half')
    raise RuntimeError('killed while writing')
  with pytest.raises(RuntimeError):
    store.write_atomic(path, writer=failing)
  assert path.read_text() == '{"a": 2}\n' and [p.name for p in path.parent.iterdir()] == ['x.json']
