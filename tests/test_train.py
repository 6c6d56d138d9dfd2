"""Training from a config: optax steps, orbax checkpoints, resume equals an uninterrupted run."""

import json
import os
import shutil
import signal
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from saliency_jax import train


def _config(**train_overrides):
  t = {'optimizer': 'adamw', 'learning_rate': 1e-2, 'momentum': 0.9, 'weight_decay': 1e-4,
       'schedule': 'cosine', 'warmup_steps': 1, 'steps': 4, 'batch_size': 8, 'max_shift': 2,
       'checkpoint_every': 100, 'log_every': 1}
  t.update(train_overrides)
  return ml_collections.ConfigDict({
      'seed': 0, 'num_classes': 3,
      'model': {'name': 'SmallConvNet', 'stages': ((4,), (8,)), 'hidden': (), 'dropout': 0.5},
      'train': t})


def _data(n=24, size=16):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.normal(0, 0.1, (n, size, size, 3)).astype(np.float32)
  images[np.arange(n), :, :, labels] += 1.0  # the class is the bright channel
  return {'train': {'images': images, 'labels': labels}, 'test': {'images': images[:8], 'labels': labels[:8]}}


def _params(model):
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_two_steps_write_a_checkpoint_and_a_log(tmp_path):
  model, result = train.train_and_evaluate(_config(steps=2), tmp_path, _data(), progress=False)
  assert result['steps'] == 2 and result['resumed_from'] == 0 and 0 <= result['test_accuracy'] <= 1
  assert (tmp_path / 'checkpoints' / '2').is_dir()
  log = [json.loads(line) for line in (tmp_path / 'train_log.jsonl').read_text().splitlines()]
  assert [r['step'] for r in log] == [1, 2] and all(np.isfinite(r['loss']) for r in log)
  fresh = train.make_model(_config(), 3)
  assert any(not np.array_equal(a, b) for a, b in zip(_params(model), _params(fresh)))  # it moved


@pytest.mark.parametrize('optimizer', ['adamw', 'sgd'])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path, optimizer):
  config = _config(optimizer=optimizer, schedule='step' if optimizer == 'sgd' else 'cosine')
  straight, _ = train.train_and_evaluate(config, tmp_path / 'a', _data(), progress=False)
  _, first = train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False, stop_at=2)
  assert first['steps'] == 2 and 'test_accuracy' not in first
  resumed, second = train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False)
  assert second['resumed_from'] == 2 and second['steps'] == 4
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  _, third = train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False)  # finished: no work
  assert third['resumed_from'] == 4 and third['test_accuracy'] == second['test_accuracy']


def test_training_fits_a_separable_problem(tmp_path):
  config = _config(steps=40, learning_rate=3e-2)
  model, result = train.train_and_evaluate(config, tmp_path, _data(), progress=False)
  assert result['test_accuracy'] == 1.0


def test_augment_keeps_shapes_and_shifts_within_bounds():
  x = jnp.zeros((2, 8, 8, 1)).at[:, 4, 4].set(1.0)
  out = train.augment(jax.random.key(0), x, max_shift=2)
  assert out.shape == x.shape
  peaks = jnp.argwhere(jnp.abs(out - jnp.median(out, axis=(1, 2, 3), keepdims=True)) > 0.5)
  assert len(peaks) == 2 and int(jnp.max(jnp.abs(peaks[:, 1] - 4))) <= 2


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match='optimizer'):
    train.make_optimizer(_config(optimizer='lamb').train)
  with pytest.raises(ValueError, match='schedule'):
    train.make_schedule(_config(schedule='linear').train)
  with pytest.raises(ValueError, match="unknown model 'Nope'"):
    train.make_model(ml_collections.ConfigDict({'seed': 0, 'model': {'name': 'Nope'}}), 3)


def test_streamed_source_trains_exactly_as_arrays(tmp_path):
  from saliency_jax.data import synthetic, transforms
  source = synthetic.SyntheticSource(32, image_size=16, num_classes=3)
  mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  loaded = transforms.load(source)
  arrays = {'images': transforms.normalise(loaded['images'], mean, std), 'labels': loaded['labels']}
  config = _config(steps=3)
  from_arrays, _ = train.train_and_evaluate(config, tmp_path / 'a', {'train': arrays, 'test': arrays},
                                            progress=False)
  streamed = transforms.Streamed(source, 16, mean, std, workers=2)
  images, labels = streamed[np.array([3, 1])]
  np.testing.assert_array_equal(images, arrays['images'][[3, 1]])
  np.testing.assert_array_equal(labels, arrays['labels'][[3, 1]])
  from_stream, _ = train.train_and_evaluate(config, tmp_path / 'b', {'train': streamed, 'test': arrays},
                                            progress=False)
  for a, b in zip(_params(from_arrays), _params(from_stream)):
    np.testing.assert_array_equal(a, b)


def _latest(workdir):
  return max(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


class _SignalAt:
  """Training data read on demand (as `transforms.Streamed`) that sends this process `signum` while
  the batch of step `at` (0-based, counted from the run's first step) is read."""

  def __init__(self, arrays, signum, at):
    self.images, self.labels = arrays['images'], arrays['labels']
    self.signum, self.at, self.calls = signum, at, 0

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, idx):
    if self.calls == self.at:
      os.kill(os.getpid(), self.signum)
    self.calls += 1
    return self.images[idx], self.labels[idx]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_exactly_the_steps_applied_and_the_resumed_run_is_exact(tmp_path, signum):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signals reach the main thread only')
  config, data = _config(steps=6, log_every=1), _data()
  straight, done = train.train_and_evaluate(config, tmp_path / 'a', data, progress=False)
  interrupted = {'train': _SignalAt(data['train'], signum, at=2), 'test': data['test']}
  expected = KeyboardInterrupt if signum == signal.SIGINT else SystemExit
  with pytest.raises(expected) as stopped:
    train.train_and_evaluate(config, tmp_path / 'b', interrupted, progress=False)
  if signum == signal.SIGINT:
    message = str(stopped.value)
    assert 'stopped by SIGINT after step 3 of 6' in message and 'rerun the same command' in message
  else:
    assert stopped.value.code == 128 + signal.SIGTERM
  assert signal.getsignal(signum) is not None and _latest(tmp_path / 'b') == 3  # the step the signal came in
  at_3, _ = train.train_and_evaluate(config, tmp_path / 'b', data, progress=False, stop_at=3)  # restores only
  fresh_3, _ = train.train_and_evaluate(config, tmp_path / 'c', data, progress=False, stop_at=3)
  for a, b in zip(_params(at_3), _params(fresh_3)):
    np.testing.assert_array_equal(a, b)
  resumed, again = train.train_and_evaluate(config, tmp_path / 'b', data, progress=False)
  assert again['resumed_from'] == 3
  def drop(result):
    return {k: v for k, v in result.items() if k != 'resumed_from'}
  assert drop(again) == drop(done)  # final_loss too: the recent losses are part of the checkpoint
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  for name in ('a', 'b'):
    lines = (tmp_path / name / 'train_log.jsonl').read_text().splitlines()
    steps = [json.loads(line)['step'] for line in lines]
    assert steps == [1, 2, 3, 4, 5, 6], (name, steps)


def test_a_resumed_run_logs_each_step_once(tmp_path):
  config, data = _config(steps=4, log_every=1), _data()
  train.train_and_evaluate(config, tmp_path, data, progress=False, stop_at=2)
  with (tmp_path / 'train_log.jsonl').open('a') as log:  # a run killed after logging steps it never saved
    log.write(json.dumps({'step': 3, 'loss': 0.0, 'batch_accuracy': 0.0}) + '\n{"step": 4, "lo')
  train.train_and_evaluate(config, tmp_path, data, progress=False)
  log = [json.loads(line) for line in (tmp_path / 'train_log.jsonl').read_text().splitlines()]
  assert [r['step'] for r in log] == [1, 2, 3, 4] and log[2]['loss'] > 0


def test_fingerprint_holds_what_determines_the_weights():
  config = _config()
  config.data = {'name': 'synthetic', 'num_train': 64, 'num_test': 8, 'data_dir': '/here', 'stream': False,
                 'part': 'all'}
  config.workers, config.num_eval = 2, 0
  base = train.fingerprint(config)
  assert base['train.learning_rate'] == 1e-2 and base['model.stages'] == [[4], [8]] and base['seed'] == 0
  for key, value in (('workers', 8), ('num_eval', 5), ('train.log_every', 7), ('train.checkpoint_every', 3),
                     ('data.data_dir', '/there'), ('data.stream', True), ('data.part', 'report'),
                     ('data.num_test', 3200)):
    changed = config.copy_and_resolve_references()
    section, _, name = key.rpartition('.')
    (changed[section] if section else changed)[name] = value
    assert train.fingerprint(changed) == base, key
  for key, value in (('seed', 1), ('num_classes', 4), ('train.learning_rate', 1e-3), ('train.steps', 5),
                     ('model.dropout', 0.1), ('data.num_train', 32)):
    changed = config.copy_and_resolve_references()
    section, _, name = key.rpartition('.')
    (changed[section] if section else changed)[name] = value
    assert train.fingerprint(changed)[key] == value and train.fingerprint(changed) != base, key


def test_a_workdir_is_not_reused_under_another_config(tmp_path):
  config, data = _config(steps=2), _data()
  train.train_and_evaluate(config, tmp_path, data, progress=False)
  saved = (tmp_path / 'checkpoints' / 'fingerprint.json').read_text()
  other = _config(steps=3, learning_rate=1e-3, log_every=2)  # log_every alone would be allowed
  named = r'another config \(train.learning_rate: 0.01 -> 0.001; train.steps: 2 -> 3\).*another --workdir'
  with pytest.raises(ValueError, match=named):
    train.train_and_evaluate(other, tmp_path, data, progress=False)
  assert (tmp_path / 'checkpoints' / 'fingerprint.json').read_text() == saved and _latest(tmp_path) == 2
  _, result = train.train_and_evaluate(_config(steps=2, log_every=2), tmp_path, data, progress=False)
  assert result['resumed_from'] == 2
  # a fingerprint of an older version, with settings now known not to touch the weights: accepted
  older = {**json.loads(saved), 'data.num_test': 500}
  (tmp_path / 'checkpoints' / 'fingerprint.json').write_text(json.dumps(older))
  train.check_fingerprint(_config(steps=2), tmp_path)
  (tmp_path / 'checkpoints' / 'fingerprint.json').write_text(json.dumps({**older, 'train.steps': 9}))
  with pytest.raises(ValueError, match=r'train.steps: 9 -> 2\)'):
    train.check_fingerprint(_config(steps=2), tmp_path)


def test_another_architecture_is_named_not_orbax_advice(tmp_path):
  config, data = _config(steps=2), _data()
  train.train_and_evaluate(config, tmp_path / 'a', data, progress=False)
  # checkpoints copied without their fingerprint (or written by an older version)
  shutil.copytree(tmp_path / 'a' / 'checkpoints', tmp_path / 'b' / 'checkpoints')
  (tmp_path / 'b' / 'checkpoints' / 'fingerprint.json').unlink()
  wider = _config(steps=2)
  wider.model.stages = ((4,), (6,))
  with pytest.raises(ValueError, match=r'another architecture .*model/convs/1/bias: shape \(8,\) there, '
                     r'shape \(6,\) here') as error:
    train.train_and_evaluate(wider, tmp_path / 'b', data, progress=False)
  assert 'strict' not in str(error.value)


@pytest.mark.parametrize('rate', [float('nan'), 1e9])
def test_a_diverged_run_stops_at_the_first_non_finite_loss(tmp_path, rate):
  """Before: NaN losses went into train_log.jsonl and the job went on with a NaN network."""
  config = _config(learning_rate=rate, schedule='constant', steps=6, max_shift=0)
  with pytest.raises(train.UserError, match=r'diverged: the loss is (nan|inf) at step \d.*learning_rate'):
    train.train_and_evaluate(config, tmp_path, _data(), progress=False)
  steps = [p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()]
  assert not steps  # the diverged state is not checkpointed
  log = [json.loads(line) for line in (tmp_path / 'train_log.jsonl').read_text().splitlines()]
  assert all(np.isfinite(r['loss']) for r in log)
  if np.isfinite(rate):
    return
  with pytest.raises(train.UserError, match='training diverged'):
    train.fit(train.make_model(config, 3), _data()['train']['images'], _data()['train']['labels'], steps=6,
              batch_size=8, learning_rate=rate, weight_decay=0.0, seed=0, progress=False)


def test_labels_are_checked_against_num_classes_before_training(tmp_path):
  """Before: num_classes=2 on 3-class data gave NaN losses; a class without examples (an empty class
  folder) trained a net that never predicts it."""
  two = ml_collections.ConfigDict({**_config().to_dict(), 'num_classes': 2})
  with pytest.raises(train.UserError, match=r'num_classes is 2, but the training labels run from 0 to 2'):
    train.train_and_evaluate(two, tmp_path / 'a', _data(), progress=False)
  data = _data()
  keep = data['train']['labels'] != 1
  data['train'] = {k: v[keep] for k, v in data['train'].items()}
  config = ml_collections.ConfigDict({**_config().to_dict(), 'class_names': ('a', 'b', 'c')})
  with pytest.raises(train.UserError, match=r'1 of the 3 classes have no training example: 1 \(b\)'):
    train.train_and_evaluate(config, tmp_path / 'b', data, progress=False)
  assert not (tmp_path / 'b' / 'checkpoints' / '1').exists()


@pytest.mark.parametrize('damage', ['truncated', 'metadata'])
def test_a_damaged_checkpoint_falls_back_to_the_latest_intact_step(tmp_path, damage, capfd):
  """Before: TensorStore / JSON tracebacks and no fallback. The damaged step is set aside (named), the
  run resumes from the step before and ends with the weights of an uninterrupted run."""
  config = _config(checkpoint_every=2)
  straight, _ = train.train_and_evaluate(config, tmp_path / 'a', _data(), progress=False)
  train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False, stop_at=4)
  step = tmp_path / 'b' / 'checkpoints' / '4'
  if damage == 'truncated':
    for f in (step / 'default').rglob('d/*'):
      f.write_bytes(f.read_bytes()[:10])
  else:
    (step / 'default' / '_METADATA').write_text('garbage')
  resumed, result = train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False)
  assert result['resumed_from'] == 2 and result['steps'] == 4
  assert 'checkpoint step 4 in' in capfd.readouterr().err
  assert (tmp_path / 'b' / 'checkpoints' / 'damaged-step-4').is_dir()
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_damaged_fingerprint_is_named(tmp_path):
  config = _config(steps=2)
  train.train_and_evaluate(config, tmp_path, _data(), progress=False)
  (tmp_path / 'checkpoints' / train.FINGERPRINT).write_text('{broken')
  with pytest.raises(train.UserError, match=r'fingerprint\.json is damaged \(JSONDecodeError\)'):
    train.train_and_evaluate(config, tmp_path, _data(), progress=False)
