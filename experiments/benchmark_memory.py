"""Peak resident memory of the main job at several numbers of test images (configs/benchmark_memory.py).

  python experiments/benchmark_memory.py --config configs/benchmark_memory.py --workdir runs/benchmark_memory

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

from absl import app, flags
from ml_collections import config_flags

from saliency_jax import report

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Benchmark config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for benchmark_memory.json.')
flags.mark_flags_as_required(['config', 'workdir'])
ROOT = pathlib.Path(__file__).resolve().parents[1]


def main_job(config_file: str, num_test: int, workdir: pathlib.Path) -> dict:
  """Runs the main job with num_test test images in workdir; its peak RSS (MiB), seconds, metrics."""
  command = [sys.executable, str(ROOT / 'experiments' / 'reproduce.py'),
             f'--config={config_file}:job:{num_test}', f'--workdir={workdir}']
  t0 = time.perf_counter()
  with (workdir.parent / f'{workdir.name}.log').open('w') as out:
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f'{" ".join(command)} failed: see {workdir.parent / f"{workdir.name}.log"}')
  metrics = json.loads((workdir / 'metrics.json').read_text())
  return {'num_test': num_test, 'peak_rss_mib': usage.ru_maxrss / 1024, 'seconds': time.perf_counter() - t0,
          'num_eval': metrics['num_eval'], 'test_accuracy': metrics['test_accuracy'],
          'top1_loc_error': metrics['localisation']['threshold_15']['top1_loc_error'],
          'stages': metrics['seconds'], 'eval_chunk': metrics['config']['eval_chunk']}


def main(argv):
  del argv
  bench = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  config_file = str(pathlib.Path(flags.FLAGS['config'].config_filename).resolve())
  trained = workdir / 'trained'
  if not (trained / 'metrics.json').is_file():  # the net, trained once
    main_job(config_file, min(bench.sizes), trained)
  runs = []
  for size in bench.sizes:
    run = workdir / f'test_{size}'
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(trained / 'checkpoints', run / 'checkpoints')
    runs.append(main_job(config_file, size, run))
    print(f"{size} test images: peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB, {runs[-1]['seconds']:.0f} s",
          flush=True)
  smallest = runs[0]['peak_rss_mib']
  out = {'runs': runs, 'peak_rss_ratio': {str(r['num_test']): r['peak_rss_mib'] / smallest for r in runs},
         'machine': {'platform': platform.platform(), 'cpus': os.cpu_count()}, 'config': bench.to_dict()}
  report.write_json(workdir / 'benchmark_memory.json', out)
  print(f"peak RSS ratio {runs[-1]['num_test']} / {runs[0]['num_test']} test images: "
        f"{runs[-1]['peak_rss_mib'] / smallest:.2f}")


if __name__ == '__main__':
  app.run(main)
