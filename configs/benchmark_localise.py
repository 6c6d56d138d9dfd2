"""Localisation speed per stage at 224x224, against OpenCV grabCut and scikit-learn's GaussianMixture.

  python experiments/benchmark_localise.py --config configs/benchmark_localise.py --workdir runs/benchmark

Minutes on 2 CPU cores. On `num_images` photos of the ImageNet val sample resized to
224x224, with surrogate saliency maps built from their boxes (`surrogate_saliency` of the script)
and the paper's quantile seeds: milliseconds per image (median over images of the fastest of
`repeats` runs) of each stage of `localise` (seeds, colour models + unaries on device, pairwise
weights, the cut, component and box, the whole call), the batched call with a process pool per
image, OpenCV's grabCut from the same hard seeds (1 and 5 iterations) and scikit-learn's
GaussianMixture on the same seed pixels; and the mean box IoU with the ground truth of ours and
OpenCV's. `whole_localise` is the default (the paper's single cut), `whole_localise_grabcut_3`
with 3 GrabCut re-estimation rounds. Goal: the whole localisation of one image
faster than one OpenCV grabCut iteration at equal or better box IoU. Then the segmentation stage alone
on the VOC folders of `voc_sets` (all their images, or `num_voc_images` each): box IoU of our GraphCut
and of OpenCV's grabCut (1 and 5 iterations) from the same seeds, and their masks' agreement.
Not kept in results/ yet.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.data_dir = '../shared/data'
  config.sample = 'imagenet-val-sample'
  config.num_images = 30
  config.size = 224
  config.repeats = 3
  config.seed = 0
  config.surrogate_noise = 0.5
  config.workers = 2
  config.localise = ml_collections.ConfigDict({'method': 'graphcut'})
  config.voc_sets = ('voc-raccoon', 'voc-kangaroo')  # () skips the segmentation-stage comparison
  config.num_voc_images = 0  # 0: every image of each set
  return config
