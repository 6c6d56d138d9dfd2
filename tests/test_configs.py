"""Every config loads; the experiment configs' variants build their models."""

import pathlib

import jax
import pytest
from conftest import ROOT, load_config
from flax import nnx

from saliency_jax import train

CONFIGS = sorted(p.stem for p in (ROOT / 'configs').glob('*.py'))
VARIANTS = ('cpu', 'gpu', 'tpu')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_with_a_docstring_naming_its_command(name):
  config = load_config(name)
  assert config.to_dict()
  text = (ROOT / 'configs' / f'{name}.py').read_text()
  assert f'configs/{name}.py' in text.split('"""')[1], 'the docstring gives the exact command'


def _experiment_configs():
  return [n for n in CONFIGS if 'model' in load_config(n)]


# What a hardware variant may change: sizes, counts and parallelism, never the method or the protocol.
SIZES = {'chunk_size', 'crop_size', 'eval_chunk', 'workers', 'model.input_size', 'data.image_size',
         'data.num_test', 'data.num_train', 'data.test_split', 'data.train_split', 'train.batch_size',
         'train.crop', 'train.steps'}


def _changed(a: dict, b: dict, prefix: str = '') -> set[str]:
  """The dotted keys whose values differ between two config dicts (a key in one only counts)."""
  out = set()
  for k in set(a) | set(b):
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      out |= _changed(a[k], b[k], f'{prefix}{k}.')
    elif a.get(k, KeyError) != b.get(k, KeyError):
      out.add(prefix + k)
  return out


def test_changed_keys_are_found_at_any_depth():
  a = {'seed': 0, 'localise': {'graphcut': {'method': 'graphcut'}}, 'workers': 2}
  b = {'seed': 0, 'localise': {'graphcut': {'method': 'threshold'}}, 'workers': 8, 'top_k': 5}
  assert _changed(a, b) == {'localise.graphcut.method', 'workers', 'top_k'} and not _changed(a, a)


@pytest.mark.parametrize('name', _experiment_configs())
@pytest.mark.parametrize('variant', VARIANTS)
def test_variants_change_only_sizes_and_build_the_model(name, variant):
  base, config = load_config(name), load_config(name, variant)
  changed = _changed(base.to_dict(), config.to_dict())
  assert changed <= SIZES, f'the {variant} variant changes more than sizes: {sorted(changed - SIZES)}'
  abstract = nnx.eval_shape(lambda: train.make_model(config, config.num_classes))  # no weights allocated
  graphdef, state = nnx.split(abstract)
  size = config.crop_size or config.data.image_size
  scores = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                          jax.ShapeDtypeStruct((1, size, size, 3), 'float32'))
  assert scores.shape == (1, config.num_classes)


def test_unknown_variant_is_named():
  with pytest.raises(ValueError, match="variant must be"):
    load_config('quickstart', 'fpga')


def test_experiment_configs_exist():
  assert {'quickstart', 'voc_raccoon_kangaroo', 'ilsvrc2012_vgg16', 'ilsvrc2013_paper_net',
          'cifar_resnet_imagenet_sample', 'ilsvrc_mobilenet_sample'} <= set(CONFIGS)
  assert pathlib.Path(ROOT / 'experiments' / 'reproduce.py').is_file()


def test_loading_a_config_imports_no_jax_flax_optax_or_orbax():
  """Configs start from `saliency_jax.defaults` (ml_collections only): loading one is cheap."""
  import subprocess
  import sys
  code = ('import importlib.util, pathlib, sys\n'
          f'for path in sorted(pathlib.Path({str(ROOT / "configs")!r}).glob("*.py")):\n'
          '  spec = importlib.util.spec_from_file_location(path.stem, path)\n'
          '  module = importlib.util.module_from_spec(spec)\n'
          '  spec.loader.exec_module(module)\n'
          '  module.get_config()\n'
          'print(sorted(m for m in ("jax", "flax", "optax", "orbax") if m in sys.modules))\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT)
  assert out.stdout.strip() == '[]', out.stdout + out.stderr


def test_the_package_has_the_installed_version():
  import importlib.metadata

  import saliency_jax
  assert saliency_jax.__version__ == importlib.metadata.version('saliency-jax')


@pytest.mark.parametrize('name', [n for n in CONFIGS if {'data', 'localise'} <= set(load_config(n))])
def test_every_job_config_passes_its_checks(name):
  from saliency_jax.jobs import config_checks
  config = load_config(name)
  check = config_checks.check_images_job if config.data.name == 'images' else config_checks.check_main_job
  check(config)


def test_the_protocol_benchmark_runs_this_code_on_the_before_commits_methods(tmp_path):
  """configs/benchmark_protocol.py's `same_methods` are the maps and cuts of `before_commit`'s ILSVRC
  config, read from the repository's history; the config file the benchmark writes runs them."""
  import importlib.util
  import subprocess

  from saliency_jax.jobs import benchmark_protocol
  bench = load_config('benchmark_protocol')
  where = f'{bench.before_commit}:configs/ilsvrc_mobilenet_sample.py'
  shown = subprocess.run(['git', '-C', str(ROOT), 'show', where], capture_output=True, text=True)
  if shown.returncode:
    pytest.skip(f'commit {bench.before_commit} is not in this clone: {shown.stderr.strip()}')
  before_file = tmp_path / 'before.py'
  before_file.write_text(shown.stdout)

  def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()

  before = load(before_file)
  same = load(benchmark_protocol.same_methods_config(tmp_path, bench.same_methods))
  assert same.localise.to_dict() == before.localise.to_dict() and not same.maps and not before.get('maps')
  assert same.selected_method == before.selected_method and same.figure_method == before.figure_method
  now = load_config('ilsvrc_mobilenet_sample')  # everything else is this commit's config
  changed = {key.split('.')[0] for key in _changed(now.to_dict(), same.to_dict())}
  assert changed == {'maps', 'localise', 'selected_method', 'figure_method'}
