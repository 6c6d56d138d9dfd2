"""Shared fixtures: paths to ../shared/data and skips when an extra or the data is absent."""

import importlib.util
import os
import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get('SALIENCY_JAX_DATA', ROOT.parent / 'shared' / 'data'))


def load_module(name: str):
  """configs/<name>.py as a module (configs are files, not a package)."""
  spec = importlib.util.spec_from_file_location(name, ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str, arg: str | None = None):
  """`get_config()` (or `get_config(arg)`) of configs/<name>.py."""
  module = load_module(name)
  return module.get_config() if arg is None else module.get_config(arg)


def tiny_synthetic(config):
  """A synthetic-set config cut down for tests: 3 classes at 32 px, 64 / 6 images, a 2-stage net
  trained for 3 steps."""
  config.data.update({'image_size': 32, 'num_train': 64, 'num_test': 6, 'num_classes': 3})
  config.num_classes = 3
  config.class_names = config.class_names[:3]
  config.model.stages = ((4,), (8,))
  config.train.update({'steps': 3, 'batch_size': 16, 'warmup_steps': 1, 'checkpoint_every': 2})
  return config


def tiny_main_job(config):
  """`tiny_synthetic` plus the main job's cheapest settings: 10 crops of 28 px, top-2 classes, one image
  for the Sect. 4 summary and the figures, no worker processes, no class models."""
  config = tiny_synthetic(config)
  config.crop_size = 28
  config.top_k = 2
  config.num_deconvnet = 1
  config.num_figure = 1
  config.workers = 0
  config.class_models.steps = 0
  return config


def shared_data(*parts: str) -> pathlib.Path:
  """A path under ../shared/data, or a skip naming what is missing."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f'{path} not found: the real-data tests need ../shared/data (or SALIENCY_JAX_DATA)')
  return path


@pytest.fixture(autouse=True)
def _float32_default():
  """Tests that turn on x64 must not leak it into others."""
  yield
  jax.config.update('jax_enable_x64', False)
