"""The scale-out benchmark: throughput of every stage, scaling, memory against chunk size.

  python experiments/benchmark.py --config configs/benchmark.py --workdir runs/benchmark

Minutes on 2 CPU cores (the PyTorch / Captum and OpenCV parts, when those extras are installed,
take about half of it; `--config.external=False` skips them). On `num_images` synthetic test
images at `image_size` px with the quickstart's SmallConvNet (random weights; the cost does not
depend on them): images/s (median of `repeats` runs after a warm-up) of the forward pass, saliency
maps, 10-crop maps, the paper's top-5 10-crop maps (one forward, five backward passes),
GraphCut localisation with 0 / 1 / 2 worker processes, and the whole pipeline (top-5 10-crop maps
and the localisation of all five); top-5 throughput and compiled memory (XLA's temporary buffers
for one call) against chunk size; saliency and top-5 throughput with the CPU split into 1, 2, 4
and 8 host devices (each in its own process); and, in the same run, `benchmark_saliency` (PyTorch
autograd / Captum on the same weights) and `benchmark_localise` (OpenCV grabCut). Writes
benchmark.json and benchmark.md. Not kept in results/ yet (docs/experiments.md).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 64
  config.crop_size = 56
  config.num_images = 100
  config.top_k = 5
  config.chunk_size = 50
  config.repeats = 3
  config.workers = (0, 1, 2)
  config.chunk_sizes = (5, 10, 25, 50, 100)
  config.host_devices = (1, 2, 4, 8)
  config.external = True  # PyTorch / Captum and OpenCV, when installed
  config.localise = ml_collections.ConfigDict({'method': 'graphcut'})
  config.child = False  # internal: one device count's stages, printed as JSON (device scaling)
  return config
