"""Peak resident memory of the main job at several numbers of test images.

What it runs: configs/benchmark_memory.py. `run(config, workdir)`, called by
experiments/benchmark_memory.py.

Each run is a child process (experiments/reproduce.py); its peak RSS is the kernel's ru_maxrss of that
child (`os.wait4`). Writes benchmark_memory.json to the workdir.
"""

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

from saliency_jax import host, report, xla

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository
MALLOC = {'default': {}, 'keep_freed_memory': {host.SWITCH: '1'}}  # each run's environment


def main_job(config_file: str, num_test: int, workdir: pathlib.Path, malloc: str = 'default') -> dict:
  """Runs the main job with num_test test images under `malloc`: its peak RSS (MiB), seconds, metrics.

  Args:
    config_file: the main job's config file.
    num_test: test images.
    workdir: the run's workdir.
    malloc: 'default' (glibc's) or 'keep_freed_memory' (SALIENCY_JAX_KEEP_FREED_MEMORY=1).

  Returns:
    {'num_test', 'malloc', 'peak_rss_mib', 'seconds', ...}.

  Raises:
    ValueError: an unknown malloc.
    RuntimeError: the job failed (its log named).
  """
  if malloc not in MALLOC:
    raise ValueError(f'malloc must be one of {sorted(MALLOC)}, got {malloc!r}')
  command = [sys.executable, str(ROOT / 'experiments' / 'reproduce.py'),
             f'--config={config_file}:job:{num_test}', f'--workdir={workdir}']
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host.SWITCH)}
  env.update(MALLOC[malloc])
  t0 = time.perf_counter()
  with (workdir.parent / f'{workdir.name}.log').open('w') as out:
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f'{" ".join(command)} failed: see {workdir.parent / f"{workdir.name}.log"}')
  metrics = json.loads((workdir / 'metrics.json').read_text())
  return {'num_test': num_test, 'malloc': malloc, 'peak_rss_mib': usage.ru_maxrss / 1024,
          'seconds': time.perf_counter() - t0,
          'num_eval': metrics['num_eval'], 'test_accuracy': metrics['test_accuracy'],
          'top1_loc_error': metrics['localisation']['threshold_15']['top1_loc_error'],
          'stages': metrics['seconds'], 'eval_chunk': metrics['config']['eval_chunk']}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark_memory.json.

  The main job's configs are config.config_file's `get_config('job:N')`.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  bench = config
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  config_file = config.config_file
  trained = workdir / 'trained'
  if not (trained / 'metrics.json').is_file():  # the net, trained once
    main_job(config_file, min(bench.sizes), trained)
  runs = []
  for malloc in bench.malloc:
    for size in bench.sizes:
      run = workdir / f'test_{size}_{malloc}'
      shutil.rmtree(run, ignore_errors=True)
      shutil.copytree(trained / 'checkpoints', run / 'checkpoints')
      runs.append(main_job(config_file, size, run, malloc))
      log(f"{size} test images, malloc {malloc}: peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB, "
          f"{runs[-1]['seconds']:.0f} s")
  ratio = {}
  for malloc in bench.malloc:
    mine = [r for r in runs if r['malloc'] == malloc]
    ratio[malloc] = {str(r['num_test']): r['peak_rss_mib'] / mine[0]['peak_rss_mib'] for r in mine}
    log(f"malloc {malloc}: peak RSS ratio {mine[-1]['num_test']} / {mine[0]['num_test']} test images: "
        f"{mine[-1]['peak_rss_mib'] / mine[0]['peak_rss_mib']:.2f}")
  out = {'runs': runs, 'peak_rss_ratio': ratio,
         'machine': {'platform': platform.platform(), 'cpus': os.cpu_count()}, 'config': bench.to_dict()}
  report.write_json(workdir / 'benchmark_memory.json', out)
  return out
