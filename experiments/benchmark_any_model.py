"""Rules by program transformation against rules through `relu=` (configs/benchmark_any_model.py).

  python experiments/benchmark_any_model.py --config configs/benchmark_any_model.py --workdir runs/benchmark

Writes benchmark_any_model.json to the workdir.
"""

import pathlib
import platform
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from saliency_jax import deconvnet, report, rules, saliency, weights

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Benchmark config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for benchmark_any_model.json.')
flags.mark_flags_as_required(['config', 'workdir'])
RULES = {'gradient': None, 'guided_backprop': deconvnet.guided_relu, 'deconvnet': deconvnet.deconvnet_relu}


def main(argv):
  del argv
  c = _CONFIG.value
  model = weights.load_tfjs_layers_model(pathlib.Path(c.data_dir) / 'imagenet-mobilenet' / 'model.json')
  images = jax.random.uniform(jax.random.key(0), (c.num_images, c.image_size, c.image_size, 3), minval=-1,
                              maxval=1)
  plain = rules.as_model(lambda x: model(x), images)  # noqa: PLW0108 (hides the relu argument)
  found = rules.count(plain.apply, images[:1, :c.crop_size, :c.crop_size])
  ways = {'injected': model, 'transformed': plain}
  out = {}
  for name, relu in RULES.items():
    def run(m, relu=relu):
      return jax.block_until_ready(saliency.top_k_saliency(m, images, k=5, crop_size=c.crop_size, relu=relu))
    times = {way: [] for way in ways}
    for m in ways.values():
      run(m)  # compile
    for _ in range(c.repeats):
      for way, m in ways.items():
        t = time.perf_counter()
        run(m)
        times[way].append(time.perf_counter() - t)
    median = {way: statistics.median(v) for way, v in times.items()}
    out[name] = {'seconds': times, 'median_seconds': median,
                 'transformed_over_injected': median['transformed'] / median['injected']}
    print(f"{name}: injected {median['injected']:.3f} s, transformed {median['transformed']:.3f} s, "
          f"ratio {out[name]['transformed_over_injected']:.3f}", flush=True)
  result = {'rules': out, 'rectifications_found': found, 'num_images': c.num_images,
            'machine': {'platform': platform.platform(), 'backend': jax.default_backend(),
                        'devices': jax.local_device_count()},
            'config': c.to_dict()}
  report.write_json(pathlib.Path(_WORKDIR.value) / 'benchmark_any_model.json', result)


if __name__ == '__main__':
  app.run(main)
