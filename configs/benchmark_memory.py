"""Peak memory of the main job against the number of test images (streamed evaluation).

  python experiments/benchmark_memory.py --config configs/benchmark_memory.py --workdir runs/benchmark_memory

The main job (experiments/reproduce.py, one process each) on the synthetic set at 128 px with
`sizes` test images: the net trained once (the `train` settings, in workdir/trained), its checkpoint
copied into each run's workdir, then one map per image (no 10 crops, top-1 class, the true class's map
shared with it when they agree) localised by a threshold, class models on. The peak resident memory
of each run (the child's ru_maxrss) and its ratio to the smallest run's go to benchmark_memory.json.
Each size runs under each `malloc` setting: 'default' (glibc's) and 'keep_freed_memory'
(SALIENCY_JAX_KEEP_FREED_MEMORY=1, saliency_jax/host.py). Minutes on 2 CPU cores.
"""

import importlib.util
import pathlib

import ml_collections


def _sibling(name: str):
  """Another config file of this folder, as a module (config files are loaded by path, not imported)."""
  path = pathlib.Path(__file__).resolve().parent / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main_job(num_test: int) -> ml_collections.ConfigDict:
  """The main job the benchmark runs with num_test test images (`get_config('job:N')`)."""
  config = _sibling('quickstart').get_config()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.name = 'benchmark_memory'
  config.data.update({'image_size': 128, 'num_train': 1000, 'num_test': num_test})
  config.train.update({'steps': 200, 'checkpoint_every': 200})
  config.crop_size = 0  # one map per image: no 10 crops,
  config.top_k = 1  # the top-1 class,
  config.share_true_maps = True  # the true class's map that one where they agree
  config.localise = {'threshold_15': {'method': 'threshold', 'threshold': 0.15}}
  config.class_models.steps = 50
  return config


def get_config(arg: str = ''):
  if arg.startswith('job:'):
    return main_job(int(arg[len('job:'):]))
  config = ml_collections.ConfigDict()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.sizes = (400, 3200)
  config.malloc = ('default', 'keep_freed_memory')
  config.config_file = str(pathlib.Path(__file__).resolve())  # the main jobs' configs: get_config('job:N')
  return config
