"""The ILSVRC protocol's images/s before and after, in one run (configs/benchmark_protocol.py).

`run(config, workdir)`, called by experiments/benchmark_protocol.py.

Each run is a child process: the main job (`experiments/reproduce.py`) of the code it measures, this
commit's or `before_commit`'s (extracted with `git archive`), with its own environment (`RUNS`: glibc's
malloc settings are read at start-up). Writes benchmark_protocol.json to the workdir.
"""

import io
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile

from saliency_jax import host, xla

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository
# The environment of each run: SALIENCY_JAX_KEEP_FREED_MEMORY=1 gives the job glibc's malloc settings
# host.TUNABLES (this commit's code only). 'after_same_methods' runs this commit's code on the before
# commit's methods (config.same_methods): the speed-up of the code alone.
RUNS = {'before': {}, 'after': {}, 'after_same_methods': {}, 'after_keep_freed_memory': {host.SWITCH: '1'}}


def code_of(commit: str, workdir: pathlib.Path) -> pathlib.Path:
  """A folder holding the source tree of `commit` of this repository (`git archive`), made once.

  Args:
    commit: the commit.
    workdir: where the folder goes.

  Returns:
    The folder.

  Raises:
    SystemExit: the commit is not in this clone's history.
  """
  tree = workdir / f'code-{commit}'
  if not (tree / 'experiments' / 'reproduce.py').is_file():
    try:
      archive = subprocess.run(['git', '-C', str(ROOT), 'archive', '--format=tar', commit], check=True,
                               capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
      raise SystemExit(f'the before run needs commit {commit} of this repository (a clone with its '
                       f'history): git archive failed: {getattr(e, "stderr", b"").decode() or e}') from e
    shutil.rmtree(tree, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
      tar.extractall(tree, filter='data')
  return tree


def protocol_seconds(metrics: dict) -> float:
  """Seconds of the protocol's stages in a main-job metrics.json: every map and the localisation.

  Args:
    metrics: the metrics.json.

  Returns:
    Seconds.
  """
  s = metrics['seconds']
  return s['saliency'] + s['localisation'] + sum(v for k, v in s.items() if k.startswith('maps_'))


def same_methods_config(workdir: pathlib.Path, same_methods) -> pathlib.Path:
  """A config file in the workdir: the ImageNet config with the `same_methods` maps and cuts.

  This commit's configs/ilsvrc_mobilenet_sample.py with the maps and localisation methods of
  `same_methods`.

  Args:
    workdir: the benchmark's workdir.
    same_methods: {'maps', 'localise', 'selected_method'}.

  Returns:
    The file's path.
  """
  path, main = workdir / 'same_methods_config.py', ROOT / 'configs' / 'ilsvrc_mobilenet_sample.py'
  path.write_text(f"""import importlib.util

import ml_collections

SAME = {json.dumps(same_methods.to_dict(), sort_keys=True)!r}


def get_config():
  spec = importlib.util.spec_from_file_location('main', {str(main)!r})
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  same = __import__('json').loads(SAME)
  config.maps = ml_collections.ConfigDict(same['maps'])
  config.localise = ml_collections.ConfigDict(same['localise'])
  config.selected_method = config.figure_method = same['selected_method']
  return config
""")
  return path


def run_once(name: str, tree: pathlib.Path, workdir: pathlib.Path, *, data_dir: str, num_images: int,
             before_commit: str, config_file: pathlib.Path | None = None) -> dict:
  """One run: the main job of the code in `tree` on the benchmark's images, in a child process.

  Args:
    name: the run's name (its environment: RUNS[name]).
    tree: the source tree.
    workdir: the run's workdir.
    data_dir: the shared data folder.
    num_images: the images.
    before_commit: the before commit (its config differs).
    config_file: the config file (None: the tree's configs/ilsvrc_mobilenet_sample.py).

  Returns:
    {'seconds', 'images_per_s', 'stages', 'environment', 'code', 'top5_loc_error'}.
  """
  out = workdir / name
  shutil.rmtree(out / 'evaluation', ignore_errors=True)  # every repeat maps and localises
  config_file = config_file or tree / 'configs' / 'ilsvrc_mobilenet_sample.py'
  subprocess.run([sys.executable, str(tree / 'experiments' / 'reproduce.py'),
                  f'--config={config_file}', f'--workdir={out}',
                  f'--config.data_dir={pathlib.Path(data_dir).resolve()}',
                  f'--config.num_eval={num_images}', '--config.num_deconvnet=1',
                  '--config.num_figure=1', '--config.class_models.steps=0'],
                 check=True, env={**os.environ, 'PYTHONPATH': str(tree), **RUNS[name]})
  m = json.loads((out / 'metrics.json').read_text())
  seconds = protocol_seconds(m)
  return {'seconds': seconds, 'images_per_s': m['num_eval'] / seconds, 'stages': m['seconds'],
          'environment': RUNS[name], 'code': before_commit if name == 'before' else 'this commit',
          'top5_loc_error': {k: v['top5_loc_error'] for k, v in m['localisation'].items()}}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark_protocol.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  bench = config
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  trees = {name: code_of(bench.before_commit, workdir) if name == 'before' else ROOT for name in RUNS}
  configs = {'after_same_methods': same_methods_config(workdir, bench.same_methods)}
  runs = {name: [] for name in RUNS}
  for r in range(bench.repeats):
    for name in RUNS:
      runs[name].append(x := run_once(name, trees[name], workdir, data_dir=bench.data_dir,
                                      num_images=bench.num_images, before_commit=bench.before_commit,
                                      config_file=configs.get(name)))
      log(f"repeat {r}: {name} {x['seconds']:.1f} s ({x['images_per_s']:.2f} images/s)")
  median = {name: statistics.median(x['images_per_s'] for x in v) for name, v in runs.items()}
  out = {'num_images': bench.num_images, 'repeats': bench.repeats, 'runs': runs,
         'median_images_per_s': median, 'speedup': median['after'] / median['before'],
         'speedups': {name: median[name] / median['before'] for name in RUNS if name != 'before'},
         'machine': {'platform': platform.platform(), 'cpus': os.cpu_count()},
         'config': bench.to_dict()}
  (workdir / 'benchmark_protocol.json').write_text(json.dumps(out, indent=2) + '\n')
  log(f"images/s before {median['before']:.3f}; after / before: "
      + ', '.join(f'{name} {v:.2f}x' for name, v in out['speedups'].items()))
  return out
