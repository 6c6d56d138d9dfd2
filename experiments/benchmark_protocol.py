"""The ILSVRC protocol's images/s before and after, in one run (configs/benchmark_protocol.py).

  python experiments/benchmark_protocol.py --config configs/benchmark_protocol.py --workdir runs/benchmark

Each run is a child process of this script (`--run`), so that each gets its own environment (`RUNS`:
glibc's malloc settings and XLA's flags, read at start-up). Writes benchmark_protocol.json to the workdir.
"""

import importlib.util
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

from saliency_jax import host

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Benchmark config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for benchmark_protocol.json.')
_RUN = flags.DEFINE_string('run', None, 'Internal: run this one config in this process and write its JSON.')
flags.mark_flags_as_required(['config', 'workdir'])
ROOT = pathlib.Path(__file__).resolve().parents[1]
# The environment of each run: glibc's malloc settings ('' its defaults; host.TUNABLES those that
# SALIENCY_JAX_KEEP_FREED_MEMORY=1 gives the job scripts) and XLA's flags (the last run without XLA:CPU's
# YNNPACK fusions: other kernels for small dots, the numbers change at float round-off).
NO_YNN = '--xla_cpu_experimental_ynn_fusion_type='
RUNS = {'before': {'GLIBC_TUNABLES': '', 'XLA_FLAGS': ''},
        'after': {'GLIBC_TUNABLES': '', 'XLA_FLAGS': ''},
        'after_keep_freed_memory': {'GLIBC_TUNABLES': host.TUNABLES, 'XLA_FLAGS': ''},
        'after_keep_freed_memory_no_ynn': {'GLIBC_TUNABLES': host.TUNABLES, 'XLA_FLAGS': NO_YNN}}


def shipped_config():
  spec = importlib.util.spec_from_file_location('_ilsvrc', ROOT / 'configs' / 'ilsvrc_mobilenet_sample.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def configs(bench) -> dict:
  """{run name: config} (`RUNS`): the shipped ILSVRC config on `num_images` images, the stages after
  the protocol's off; 'before' with the earlier localisation methods and no shared maps."""
  out = {}
  for name in RUNS:
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


def run_one(bench, name: str, workdir: pathlib.Path) -> None:
  """One run of one config, in this process: its seconds and errors to workdir/name/run.json."""
  from saliency_jax.jobs import pipeline  # the child imports JAX, the parent never does
  shutil.rmtree(workdir / name / 'evaluation', ignore_errors=True)  # every repeat maps and localises
  m = pipeline.run(configs(bench)[name], workdir / name, log=lambda *_: None)
  seconds = protocol_seconds(m)
  out = {'seconds': seconds, 'images_per_s': m['num_eval'] / seconds, 'stages': m['seconds'],
         'environment': {k: os.environ.get(k, '') for k in ('GLIBC_TUNABLES', 'XLA_FLAGS')},
         'top5_loc_error': {k: v['top5_loc_error'] for k, v in m['localisation'].items()}}
  (workdir / name / 'run.json').write_text(json.dumps(out))


def main(argv):
  del argv
  bench = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  if _RUN.value:
    return run_one(bench, _RUN.value, workdir)
  runs = {name: [] for name in RUNS}
  for r in range(bench.repeats):
    for name, environment in RUNS.items():  # a child process per run: glibc and XLA read these at start-up
      subprocess.run([sys.executable, __file__, *sys.argv[1:], f'--run={name}'], check=True,
                     env={**os.environ, **environment})
      runs[name].append(json.loads((workdir / name / 'run.json').read_text()))
      x = runs[name][-1]
      print(f"repeat {r}: {name} {x['seconds']:.1f} s ({x['images_per_s']:.2f} images/s)", flush=True)
  median = {name: statistics.median(x['images_per_s'] for x in v) for name, v in runs.items()}
  out = {'num_images': bench.num_images, 'repeats': bench.repeats, 'runs': runs,
         'median_images_per_s': median, 'speedup': median['after'] / median['before'],
         'speedups': {name: median[name] / median['before'] for name in RUNS if name != 'before'},
         'machine': {'platform': platform.platform(), 'cpus': os.cpu_count()},
         'config': bench.to_dict()}
  (workdir / 'benchmark_protocol.json').write_text(json.dumps(out, indent=2) + '\n')
  print(f"images/s before {median['before']:.3f}; after / before: "
        + ', '.join(f'{name} {v:.2f}x' for name, v in out['speedups'].items()))


if __name__ == '__main__':
  app.run(main)
