"""The entry points' command line: --config (a config file, locked) and --workdir, checked before any work.

Every script in experiments/ (results.py aside) is `cli.main(__doc__, '<job>')`: the job module
`saliency_jax.jobs.<job>` runs (`run(config, workdir)`) and its `summary(results, workdir)` is printed.
`run(doc, job)` parses the flags (`parse_flags`: a mistyped `--config.xxx` override, an empty, file or
unwritable --workdir are one-line errors; --help prints the entry point's `doc`, the configs and a
config's fields), makes the config's relative paths absolute (`config_checks.resolve_paths`), calls
`job(config, workdir)` and prints a `UserError` (a problem of the config, the data, the weights or the
workdir) as `error: <message>`, without a traceback. Light on purpose (absl and ml_collections): the
job's own modules are imported inside `job`, so that the graph cuts' worker processes, which import the
entry point's script, start without JAX.
"""

import ast
import difflib
import importlib
import importlib.util
import os
import pathlib
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from saliency_jax import host
from saliency_jax.errors import UserError

CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def field_paths(config, prefix: str = '') -> list[str]:
  """Every dotted field path of a ConfigDict ('train', 'train.steps', ...).

  Args:
    config: the ConfigDict.
    prefix: prepended to every path.

  Returns:
    The paths.
  """
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if hasattr(value, 'items'):
      out += field_paths(value, f'{prefix}{key}.')
  return out


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'  # the repository's


def config_spec(argv: list[str]) -> str | None:
  """The --config value of a command line ('path' or 'path:variant').

  Args:
    argv: the command line.

  Returns:
    The value, or None.
  """
  spec = next((arg.split('=', 1)[1] for arg in argv if arg.startswith('--config=')), None)
  if spec is None and '--config' in argv[:-1]:
    spec = argv[argv.index('--config') + 1]
  return spec


def load_config(spec: str):
  """The ConfigDict of a --config value ('path' or 'path:variant').

  Args:
    spec: the value.

  Returns:
    `get_config()` (or `get_config(variant)`) of the config file.
  """
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def help_text(argv: list[str], doc: str) -> str:
  """The --help text: the entry point's doc, the configs of configs/, and a --config's fields.

  Args:
    argv: the command line.
    doc: the entry point's docstring.

  Returns:
    The text: doc, the configs with the first line of each docstring, and with --config the config's
    fields and their values.
  """
  lines = [doc.strip(), '', 'Flags: --config FILE[:variant] (required), --workdir FOLDER (required), '
           '--config.FIELD=VALUE (any field of the config).', '', f'Configs ({CONFIGS}):']
  for path in sorted(CONFIGS.glob('*.py')):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    lines.append(f'  configs/{path.name:36s} {doc.splitlines()[0] if doc else ""}')
  spec = config_spec(argv)
  if spec:
    config = load_config(spec)
    lines += ['', f'Fields of {spec} (--config.FIELD=VALUE):']
    for name in field_paths(config):
      value = config
      for part in name.split('.'):
        value = value[part]
      if not hasattr(value, 'items'):
        lines.append(f'  {name} = {value!r}')
  return '\n'.join(lines)


def unknown_overrides(argv: list[str]) -> list[str]:
  """One line per `--config.a.b=...` of a command line that names no field of its --config file.

  Args:
    argv: the command line.

  Returns:
    The lines, each with the closest field paths.
  """
  spec = config_spec(argv)
  if spec is None:
    return []
  path = spec.partition(':')[0]
  config = load_config(spec)
  known = field_paths(config)
  lines = []
  for a in argv:
    name = a.split('=', 1)[0].removeprefix('--').removeprefix('no')
    if name.startswith('config.') and name[len('config.'):] not in known:
      close = difflib.get_close_matches(name[len('config.'):], known, n=5, cutoff=0.6)
      lines.append(f'--{name}: {path} has no field {name[len("config."):]!r}'
                   + (f'; close matches: {", ".join(close)}' if close else ''))
  return lines


def check_workdir(workdir: str) -> None:
  """Exits with one line unless a workdir names a folder this process can write (made if absent).

  An empty --workdir= would write checkpoints and data into the current directory.

  Args:
    workdir: the --workdir value.
  """
  if not workdir or not workdir.strip():
    sys.exit('error: --workdir is empty: name a folder for the outputs (an empty one would write into the '
             'current directory)')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    sys.exit(f'error: --workdir {workdir} is a file, not a folder')
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix='.write-test.')
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    sys.exit(f'error: --workdir {workdir} is not writable ({type(e).__name__}: {e.strerror or e})')


def parse_flags(argv: list[str], doc: str = '') -> list[str]:
  """Absl's flag parsing, with one-line errors for bad overrides and workdirs; --help lists the configs.

  An unknown `--config.xxx` override and a `--workdir` that is empty, a file or not writable stop with one
  line (not a raw traceback from inside ml_collections or a failed mkdir deep in the job).

  Args:
    argv: the command line.
    doc: the entry point's docstring, for --help.

  Returns:
    The arguments absl leaves.
  """
  if any(a in ('--help', '-h', '--helpshort') for a in argv[1:]):
    print(help_text(argv, doc))
    sys.exit(0)
  try:
    rest = flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: an override naming no field of the config
    lines = unknown_overrides(argv) or [f'a --config override names no field of the config: {e}']
    sys.exit(f'error: {lines[0]}')
  except flags.Error as e:
    sys.exit(f'error: {e}')
  check_workdir(flags.FLAGS.workdir)
  return rest


def run(doc: str, job) -> None:
  """The entry point: flags (`parse_flags`), paths resolved, `job(config, workdir)`.

  A UserError is one line (module docstring).

  Args:
    doc: the entry point's docstring.
    job: a function (config, workdir) -> results.
  """
  def main(argv):
    del argv
    from saliency_jax.jobs import config_checks
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    try:
      config_checks.resolve_paths(CONFIG.value, config_flags.get_config_filename(flags.FLAGS['config']))
      job(CONFIG.value, WORKDIR.value)
    except UserError as e:  # a problem of the config, the data or the workdir, not of the code
      sys.exit(f'error: {e}')

  app.run(main, flags_parser=lambda argv: parse_flags(argv, doc))


def main(doc: str, job: str) -> None:
  """An entry point of experiments/: malloc settings, then `run` with the job module `jobs.<job>`.

  glibc's malloc settings come first (`host.keep_freed_memory`, before JAX is imported); then the job's
  `run(config, workdir)`, and its `summary(results, workdir)` printed where it has one. The module is
  imported inside the call, so that the graph cuts' worker processes, which import the entry point's
  script, start without JAX.

  Args:
    doc: the entry point's docstring.
    job: the job module's name in `saliency_jax.jobs`.
  """
  host.keep_freed_memory()

  def call(config, workdir):
    module = importlib.import_module(f'saliency_jax.jobs.{job}')
    results = module.run(config, workdir)
    text = module.summary(results, workdir) if hasattr(module, 'summary') else ''
    if text:
      print(text)

  run(doc, call)
