"""The main job.

  python experiments/reproduce.py --config configs/quickstart.py --workdir runs/quickstart
  python experiments/reproduce.py --help                                   # the configs
  python experiments/reproduce.py --help --config configs/quickstart.py    # a config's fields
"""

from saliency_jax import host

if __name__ == '__main__':  # first, before JAX is imported: SALIENCY_JAX_KEEP_FREED_MEMORY=1 re-executes
  host.keep_freed_memory()  # this process under malloc settings that reuse XLA:CPU's buffers (host.py)

from saliency_jax import cli


def parse_flags(argv: list[str]) -> list[str]:
  """`cli.parse_flags` with this entry point's --help."""
  return cli.parse_flags(argv, __doc__)


unknown_overrides = cli.unknown_overrides


def main(config, workdir):
  # Imported here: the worker processes that run the graph cuts import this script (Python's 'spawn'),
  # and start in a fraction of the time without JAX and the job's modules.
  from saliency_jax.jobs import pipeline
  results = pipeline.run(config, workdir)
  if 'process_index' in results:  # one of several hosts: process 0 writes the metrics
    return
  bad = results.get('bad_records', [])
  if bad:
    print(f'\nskipped {len(bad)} bad records (config.data.skip_bad):')
    print('\n'.join(f"  {b['record']}: {b['reason']}: {b['message']}" for b in bad[:20]))
    if len(bad) > 20:
      print(f'  ... and {len(bad) - 20} more, every one in metrics.json')
  print(f"\ntest accuracy {results['test_accuracy']:.3f}\n")
  print(pipeline.table(results))
  print(f'\nmetrics.json, report.md and figures in {workdir}')


if __name__ == '__main__':
  cli.run(__doc__, main)
