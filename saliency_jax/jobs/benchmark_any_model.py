"""Rules by program transformation against rules through `relu=` (configs/benchmark_any_model.py).

`run(config, workdir)`, called by experiments/benchmark_any_model.py; writes benchmark_any_model.json.
"""

import pathlib
import platform
import statistics
import time

import jax

from saliency_jax import deconvnet, report, rules, saliency, weights, xla

RULES = {'gradient': None, 'guided_backprop': deconvnet.guided_relu, 'deconvnet': deconvnet.deconvnet_relu}


@xla.under_config
def run(config, workdir, log=print) -> dict:
  """The benchmark; returns what it writes to workdir/benchmark_any_model.json.

  Args:
    config: the job's config (`configs/`).
    workdir: where it writes its files.
    log: where progress is said.

  Returns:
    What it writes as JSON.
  """
  c = config
  model = weights.load_tfjs_layers_model(pathlib.Path(c.data_dir) / 'imagenet-mobilenet' / 'model.json')
  images = jax.random.uniform(jax.random.key(0), (c.num_images, c.image_size, c.image_size, 3), minval=-1,
                              maxval=1)
  plain = rules.as_model(lambda x: model(x), images)  # noqa: PLW0108 (hides the relu argument)
  found = rules.count(plain.apply, images[:1, :c.crop_size, :c.crop_size])
  ways = {'injected': model, 'transformed': plain}
  out = {}
  for name, relu in RULES.items():
    def maps(m, relu=relu):
      return jax.block_until_ready(saliency.top_k_saliency(m, images, k=5, crop_size=c.crop_size, relu=relu))
    times = {way: [] for way in ways}
    for m in ways.values():
      maps(m)  # compile
    for _ in range(c.repeats):
      for way, m in ways.items():
        t = time.perf_counter()
        maps(m)
        times[way].append(time.perf_counter() - t)
    median = {way: statistics.median(v) for way, v in times.items()}
    out[name] = {'seconds': times, 'median_seconds': median,
                 'transformed_over_injected': median['transformed'] / median['injected']}
    log(f"{name}: injected {median['injected']:.3f} s, transformed {median['transformed']:.3f} s, "
          f"ratio {out[name]['transformed_over_injected']:.3f}")
  result = {'rules': out, 'rectifications_found': found, 'num_images': c.num_images,
            'machine': {'platform': platform.platform(), 'backend': jax.default_backend(),
                        'devices': jax.local_device_count()},
            'config': c.to_dict()}
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  report.write_json(pathlib.Path(workdir) / 'benchmark_any_model.json', result)
  return result
