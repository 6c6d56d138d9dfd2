"""The ILSVRC protocol's cost, before and after, in one run on the same images.

  python experiments/benchmark_protocol.py --config configs/benchmark_protocol.py --workdir runs/benchmark

The main job of configs/ilsvrc_mobilenet_sample.py (maps of the top-5 classes and the true class,
then every localisation method of the config) on the first `num_images` images of the ImageNet val
sample, run `repeats` times for each of four runs, alternating, each in a child process:
  before: the config as shipped before the protocol was sped up: the six localisation methods of that
    config (the paper's GraphCut, the tuned GraphCut it then selected, thresholds 15% / 20%, full
    image, centre), every true-class map computed and cut on its own; glibc's default malloc;
  after: the config as shipped (`configs/ilsvrc_mobilenet_sample.py`), glibc's default malloc;
  after_keep_freed_memory: the same under the malloc settings of SALIENCY_JAX_KEEP_FREED_MEMORY=1
    (`saliency_jax/host.py`);
  after_keep_freed_memory_no_ynn: the same again with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
    (XLA:CPU without its YNNPACK fusions; the maps and colour models change at float round-off).
The code is this commit's in every run. Each run's seconds of maps + localisation (the stages the
protocol times; data, class models and the Sect. 4 summary are off), images/s, its localisation
errors, and the median ratio of each run's images/s to before's, to benchmark_protocol.json. About
20 minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.data_dir = '../shared/data'
  config.num_images = 96
  config.repeats = 2
  config.before_localise = {
      'graphcut': {'method': 'graphcut'},
      'graphcut_smoothed_all_soft': {'method': 'graphcut', 'smoothing': 0.05, 'component': 'all',
                                     'seeds': 'soft'},
      'threshold_15': {'method': 'threshold', 'threshold': 0.15},
      'threshold_20': {'method': 'threshold', 'threshold': 0.2},
      'full_image': {'method': 'full'},
      'centre': {'method': 'centre', 'centre_fraction': 0.5},
  }
  return config
