"""host.keep_freed_memory: with its switch on, an entry point re-executes once under glibc settings that
keep freed memory; without it, or under the user's own GLIBC_TUNABLES, nothing changes."""

import os
import subprocess
import sys
import textwrap

import pytest

from saliency_jax import host

pytestmark = pytest.mark.skipif(sys.platform != 'linux' or not host.glibc(), reason='needs Linux with glibc')

SCRIPT = textwrap.dedent('''
    import os, resource, sys
    from saliency_jax import host
    with open(sys.argv[1], 'a') as f:
      f.write('started\\n')
    host.keep_freed_memory()
    a = bytearray(200_000_000)  # zero-filled; above glibc's largest mmap threshold (32 MB)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = bytearray(200_000_000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(repr(os.environ.get('GLIBC_TUNABLES')), faults, sys.argv[2:])
''')


def run(tmp_path, env_tunables, switch='1'):
  script, starts = tmp_path / 'script.py', tmp_path / 'starts.txt'
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host.SWITCH)}
  if switch is not None:
    env[host.SWITCH] = switch
  if env_tunables is not None:
    env['GLIBC_TUNABLES'] = env_tunables
  out = subprocess.run([sys.executable, '-u', str(script), str(starts), '--flag=1', 'x y'], env=env,
                       capture_output=True, text=True, check=True).stdout.split()
  return out, starts.read_text().count('started')


def test_the_process_restarts_once_with_the_same_arguments_and_reuses_freed_blocks(tmp_path):
  (tunables, faults, *args), starts = run(tmp_path, None)
  assert tunables == repr(host.TUNABLES) and starts == 2
  assert ' '.join(args) == "['--flag=1', 'x y']"
  # the second 200 MB block reuses the first one's pages: no page is faulted in afresh
  assert int(faults) < 1000, faults


@pytest.mark.parametrize('preset, switch', [('', '1'), ('glibc.malloc.arena_max=2', '1'), (None, None),
                                           (None, '0')])
def test_without_the_switch_or_with_the_users_own_tunables_nothing_changes(tmp_path, preset, switch):
  (tunables, faults, *_), starts = run(tmp_path, preset, switch)
  assert tunables == repr(preset) and starts == 1
  # glibc's defaults: the block is a fresh mmap, every one of its 4 KiB pages faulted in again
  assert int(faults) > 40_000, faults


REUSE = textwrap.dedent('''
    import resource, sys
    from saliency_jax import host
    took = host.reuse_freed_blocks() if sys.argv[1] == '1' else None
    a = bytearray(20_000_000)  # above glibc's first mmap threshold (128 KiB), below the limit (64 MiB)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = bytearray(20_000_000)
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
''')


@pytest.mark.parametrize('switch', ['1', '0'])
def test_reuse_freed_blocks_keeps_a_freed_block_for_the_next_one(tmp_path, switch):
  script = tmp_path / 'reuse.py'
  script.write_text(REUSE)
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host.SWITCH)}
  took, faults = subprocess.run([sys.executable, str(script), switch], env=env, capture_output=True,
                                text=True, check=True).stdout.split()
  if switch == '1':  # the second 20 MB block is the first one's pages
    assert took == 'True' and int(faults) < 500, faults
  else:  # glibc's defaults: a fresh mmap, each of its ~4900 pages faulted in
    assert took == 'None' and int(faults) > 4000, faults
