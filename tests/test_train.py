"""Training from a config: optax steps, orbax checkpoints, resume equals an uninterrupted run."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from saliency_jax import train


def _config(**train_overrides):
  t = {'optimizer': 'adamw', 'learning_rate': 1e-2, 'momentum': 0.9, 'weight_decay': 1e-4, 'schedule': 'cosine',
       'warmup_steps': 1, 'steps': 4, 'batch_size': 8, 'max_shift': 2, 'checkpoint_every': 100, 'log_every': 1}
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
  again, third = train.train_and_evaluate(config, tmp_path / 'b', _data(), progress=False)  # finished: no work
  assert third['resumed_from'] == 4 and third['test_accuracy'] == second['test_accuracy']


def test_training_fits_a_separable_problem(tmp_path):
  model, result = train.train_and_evaluate(_config(steps=40, learning_rate=3e-2), tmp_path, _data(), progress=False)
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
  from_arrays, _ = train.train_and_evaluate(config, tmp_path / 'a', {'train': arrays, 'test': arrays}, progress=False)
  streamed = transforms.Streamed(source, 16, mean, std, workers=2)
  images, labels = streamed[np.array([3, 1])]
  np.testing.assert_array_equal(images, arrays['images'][[3, 1]])
  np.testing.assert_array_equal(labels, arrays['labels'][[3, 1]])
  from_stream, _ = train.train_and_evaluate(config, tmp_path / 'b', {'train': streamed, 'test': arrays},
                                            progress=False)
  for a, b in zip(_params(from_arrays), _params(from_stream)):
    np.testing.assert_array_equal(a, b)
