"""The ILSVRC protocol's images/s before and after, in one run (configs/benchmark_protocol.py).

  python experiments/benchmark_protocol.py --config configs/benchmark_protocol.py --workdir runs/benchmark

Writes benchmark_protocol.json to the workdir.
"""

import importlib.util
import pathlib
import platform
import shutil
import statistics

import jax
from absl import app, flags
from ml_collections import config_flags

from saliency_jax import report
from saliency_jax.jobs import pipeline

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Benchmark config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for benchmark_protocol.json.')
flags.mark_flags_as_required(['config', 'workdir'])
ROOT = pathlib.Path(__file__).resolve().parents[1]


def shipped_config():
  spec = importlib.util.spec_from_file_location('_ilsvrc', ROOT / 'configs' / 'ilsvrc_mobilenet_sample.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def configs(bench) -> dict:
  """{'before': ..., 'after': ...}: the shipped ILSVRC config on `num_images` images, the stages
  after the protocol's off; 'before' with the earlier localisation methods and no shared maps."""
  out = {}
  for name in ('before', 'after'):
    config = shipped_config()
    config.data_dir = bench.data_dir
    config.num_eval = bench.num_images
    config.num_deconvnet = 1
    config.num_figure = 1
    config.class_models.steps = 0
    if name == 'before':
      config.localise = bench.before_localise.to_dict()
      config.figure_method = config.selected_method = 'graphcut_smoothed_all_soft'
      config.share_true_maps = False
      config.maps = {}
    out[name] = config
  return out


def protocol_seconds(metrics: dict) -> float:
  """Seconds of the protocol's stages in a main-job metrics.json: every map and the localisation."""
  s = metrics['seconds']
  return s['saliency'] + s['localisation'] + sum(v for k, v in s.items() if k.startswith('maps_'))


def main(argv):
  del argv
  bench = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  runs = {'before': [], 'after': []}
  for r in range(bench.repeats):
    for name, config in configs(bench).items():
      shutil.rmtree(workdir / name / 'evaluation', ignore_errors=True)  # every repeat maps and localises
      m = pipeline.run(config, workdir / name, log=lambda *_: None)
      seconds = protocol_seconds(m)
      runs[name].append({'seconds': seconds, 'images_per_s': m['num_eval'] / seconds,
                         'stages': m['seconds'], 'top5_loc_error': {k: v['top5_loc_error']
                                                                     for k, v in m['localisation'].items()}})
      print(f'repeat {r}: {name} {seconds:.1f} s ({m["num_eval"] / seconds:.2f} images/s)', flush=True)
  median = {name: statistics.median(x['images_per_s'] for x in v) for name, v in runs.items()}
  out = {'num_images': bench.num_images, 'repeats': bench.repeats, 'runs': runs,
         'median_images_per_s': median, 'speedup': median['after'] / median['before'],
         'machine': {'platform': platform.platform(), 'cpus': jax.local_device_count(),
                     'backend': jax.default_backend()},
         'config': bench.to_dict()}
  report.write_json(workdir / 'benchmark_protocol.json', out)
  print(f"images/s before {median['before']:.3f}, after {median['after']:.3f}: {out['speedup']:.2f}x")


if __name__ == '__main__':
  app.run(main)
