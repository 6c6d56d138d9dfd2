"""The ILSVRC protocol's cost, before and after, in one run on the same images.

  python experiments/benchmark_protocol.py --config configs/benchmark_protocol.py --workdir runs/benchmark

The main job of configs/ilsvrc_mobilenet_sample.py (maps of the top-5 classes and the true class,
then every localisation method of the config) on the first `num_images` images of the ImageNet val
sample, run `repeats` times for each of three runs, alternating, each in a child process:
  before: the code and the config of commit `before_commit` (read from this repository's history with
    `git archive`), where the protocol's speed-up started: the paper's maps of the top-5 classes and,
    apart, of the true class, cut by six localisation methods (the paper's GraphCut, the tuned
    GraphCut it then selected, thresholds 15% / 20%, full image, centre); glibc's default malloc;
  after: this commit's code and config (`configs/ilsvrc_mobilenet_sample.py`), glibc's default malloc;
  after_same_methods: this commit's code on the before commit's methods (`same_methods`: the paper's
    maps alone, cut by the same six methods; the speed-up of the code alone, like for like);
  after_keep_freed_memory: the same under the malloc settings of SALIENCY_JAX_KEEP_FREED_MEMORY=1
    (`saliency_jax/host.py`).
Each run's seconds of maps + localisation (the stages the protocol times; class models and the Sect. 4
summary are off), images/s, its localisation errors, and the median ratio of each run's images/s to
before's, to benchmark_protocol.json. About 30 minutes on 2 CPU cores.
"""

import ml_collections

from saliency_jax import defaults


def get_config():
  config = ml_collections.ConfigDict()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.data_dir = '../shared/data'
  config.num_images = 96
  config.repeats = 3
  config.before_commit = '9e90069'
  standard = defaults.localise_methods()
  config.same_methods = {  # the methods of before_commit's configs/ilsvrc_mobilenet_sample.py
      'maps': {},
      'localise': {'graphcut': standard['graphcut'],
                   'graphcut_smoothed_all_soft': {'method': 'graphcut', 'smoothing': 0.05, 'component': 'all',
                                                  'seeds': 'soft'},
                   'threshold_15': standard['threshold_15'], 'threshold_20': standard['threshold_20'],
                   'full_image': standard['full_image'], 'centre': standard['centre']},
      'selected_method': 'graphcut_smoothed_all_soft'}
  return config
