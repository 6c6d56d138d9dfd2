"""Localisation settings chosen on a selection part of the evaluation set, reported on a separate part.

  python experiments/sweep_localisation.py --config configs/localisation_sweep.py --workdir runs/quickstart
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:imagenet \
      --workdir runs/ilsvrc_mobilenet_sample [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:study \
      --workdir runs/ilsvrc_mobilenet_study [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:cuts \
      --workdir runs/ilsvrc_mobilenet_cuts [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:methods \
      --workdir runs/ilsvrc_mobilenet_methods [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:costly \
      --workdir runs/ilsvrc_mobilenet_costly [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:masked \
      --workdir runs/ilsvrc_mobilenet_masked [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:shap \
      --workdir runs/ilsvrc_mobilenet_shap [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:rise_softmax \
      --workdir runs/ilsvrc_mobilenet_rise_softmax [--config.data_dir=../shared/data]
  python experiments/sweep_localisation.py --config configs/localisation_sweep.py:voc \
      --workdir runs/voc_raccoon_kangaroo

`saliency_jax.jobs.sweep`: the net as the main job gets it (in the main job's workdir it reuses the
trained net), the maps of each evaluation image's top-k classes and true class on both parts,
every setting of `sweep.grid` localised on both, the pick by `sweep.criterion` on the selection part
alone, and sweep.json / sweep.md with every setting on both parts and the paper's beside the pick.
Variants:
  synthetic (the default; `:cpu`, `:gpu`, `:tpu` pick the quickstart's variant): the quickstart's
    set and net; selection part: 500 images of the synthetic set's separate validation split; report
    part: the 500 test images.
  imagenet: MobileNet v1 on the ILSVRC-2012 val sample (configs/ilsvrc_mobilenet_sample.py); the
    images split half / half by a seeded hash of their file stem; a smaller grid (each setting runs
    six cuts per image on 227 px photos).
  voc: the raccoon / kangaroo net (configs/voc_raccoon_kangaroo.py); its test split halved by the
    same hash of 'folder/stem'; top-1 only (two classes).
  study: the imagenet variant's images and net, and every attribution method's maps (`config.maps`)
    crossed with the cuts (`STUDY_CUTS`): settings named 'map/cut'. Each map of the top-5 classes
    and the true class as the paper takes them (10 crops) where that is cheap enough on 2 CPU cores;
    the methods that cost many passes per class (SmoothGrad, Integrated Gradients, occlusion) and the
    ReLU-rule maps on the centre crop alone, with few samples / steps / patches (`STUDY_MAPS`). The
    thresholds cut every map; GraphCut (seconds per map, most of the study's time) the maps of
    `GRAPHCUT_MAPS`: the paper's gradient and the Grad-CAM maps, and on grad_cam_pw12 every GraphCut
    setting of `PW12_GRAPHCUTS` too.
  cuts: the study's part on the paper's pair and on grad_cam_pw12 (its thresholds and every GraphCut
    setting): `cuts_grid`, half an hour on 2 CPU cores where the study takes well over an hour.
  methods: the methods registered after the study's run (`METHODS_MAPS`), on its images, net and parts,
    beside the paper's gradient: `methods_grid`.
  costly, masked: as methods, the methods of many passes per image (`COSTLY_MAPS`; `MASKED_MAPS` on the
    first `MASKED_IMAGES` records of each part).
  shap: as methods, GradientSHAP (`SHAP_MAPS`), registered after those runs.
  rise_softmax: as masked, RISE with the RISE paper's weights, the class probability (`SOFTMAX_MAPS`).
`--config.sweep.num_images=N` takes the first N records of each part (a quick look). Cost and
results: docs/results/localisation.md and imagenet.md.
"""

import importlib.util
import pathlib

import ml_collections


def _sibling(name: str):
  """Another config file of this folder, as a module (config files are loaded by path, not imported)."""
  path = pathlib.Path(__file__).with_name(f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def one_at_a_time() -> dict:
  """The paper's setting and single changes to it (each a `localise.Settings` field)."""
  return {
      'paper': {'method': 'graphcut'},
      'pairwise_5': {'method': 'graphcut', 'pairwise_weight': 5.0},
      'pairwise_25': {'method': 'graphcut', 'pairwise_weight': 25.0},
      'pairwise_50': {'method': 'graphcut', 'pairwise_weight': 50.0},
      'fg_quantile_90': {'method': 'graphcut', 'fg_quantile': 0.90},
      'fg_quantile_80': {'method': 'graphcut', 'fg_quantile': 0.80},
      'bg_quantile_50': {'method': 'graphcut', 'bg_quantile': 0.50},
      'smoothing_5': {'method': 'graphcut', 'smoothing': 0.05},
      'component_all': {'method': 'graphcut', 'component': 'all'},
      'soft_seeds': {'method': 'graphcut', 'seeds': 'soft'},
      'grabcut_3': {'method': 'graphcut', 'iterations': 3},
      'fg_floor_30': {'method': 'graphcut', 'fg_floor': 0.3},
      'fg_floor_50': {'method': 'graphcut', 'fg_floor': 0.5},
  }


def combinations() -> dict:
  """A few changes together: those that helped on some set (docs/results/localisation.md) paired up."""
  smoothed_all = {'method': 'graphcut', 'smoothing': 0.05, 'component': 'all'}
  return {
      'smoothed_all': smoothed_all,
      'smoothed_all_soft': {**smoothed_all, 'seeds': 'soft'},
      'smoothed_all_pairwise_25': {**smoothed_all, 'pairwise_weight': 25.0},
      'fg_floor_50_soft': {'method': 'graphcut', 'fg_floor': 0.5, 'seeds': 'soft'},
      'fg_floor_50_smoothed_all': {**smoothed_all, 'fg_floor': 0.5},
  }


# The grid of each set. One setting costs 6 localisations per image of both parts (the true class
# and the top 5), most of it the two colour models of each: minutes on 2 CPU cores (GrabCut rounds:
# 4x). The synthetic and ImageNet grids keep the settings that mattered on some set (docs/results) and
# their neighbours; the VOC set is small enough for every setting.
SYNTHETIC = ('paper', 'pairwise_25', 'fg_quantile_80', 'smoothing_5', 'component_all', 'soft_seeds',
             'fg_floor_30', 'fg_floor_50', 'smoothed_all', 'fg_floor_50_soft')
IMAGENET = ('paper', 'pairwise_25', 'smoothing_5', 'component_all', 'soft_seeds', 'smoothed_all',
            'smoothed_all_soft', 'smoothed_all_pairwise_25')


# The study's maps (config.maps entries, `protocol.maps.MapSpec`): 'ten' = the paper's 10 crops of each
# image for the top-5 classes and the true class; 'centre' = the centre crop alone (one crop instead of
# ten: the methods whose cost per class is many passes, and the two ReLU rules, each a full backward
# pass per class and crop like the gradient's).
STUDY_MAPS = {
    'gradient_x_input': {'method': 'gradient_x_input', 'crops': 'centre'},
    'smoothgrad': {'method': 'smoothgrad', 'crops': 'centre', 'samples': 3, 'noise': 0.15},
    'integrated_gradients': {'method': 'integrated_gradients', 'crops': 'centre', 'steps': 3,
                             'rule': 'gauss_legendre'},
    'guided_backprop': {'method': 'guided_backprop', 'crops': 'centre'},
    'deconvnet': {'method': 'deconvnet', 'crops': 'centre'},
    'grad_cam': {'method': 'grad_cam'},  # the last convolutional layer (conv_pw_13_relu, 7 x 7)
    'grad_cam_pw12': {'method': 'grad_cam', 'layer': 'conv_pw_12_relu'},  # 7 x 7, one block earlier
    'grad_cam_pw11': {'method': 'grad_cam', 'layer': 'conv_pw_11_relu'},  # 14 x 14
    'cam': {'method': 'cam'},
    # all 25 patches in one batch, as the study's kept run computed them (occlusion's default now takes 16)
    'occlusion': {'method': 'occlusion', 'crops': 'centre', 'patch': 64, 'stride': 40, 'patch_chunk': None},
}
# The methods registered after the study's kept run (`results/localisation_study.json`), in a study of
# their own on its images, net and parts (the `methods` variant): each on the centre crop, one class at a
# time, the multiplying ones with few steps as the study's IG; beside the paper's gradient (10 crops, the
# paired reference) and cut by the thresholds.
METHODS_MAPS = {
    **{name: {'method': name, 'crops': 'centre'}
       for name in ('grad_cam_plus_plus', 'xgrad_cam', 'layer_cam', 'hires_cam', 'eigen_cam', 'ablation_cam',
                    'deeplift', 'lrp')},
    'lrp_epsilon_plus': {'method': 'lrp', 'crops': 'centre', 'composite': 'epsilon_plus'},
    'blur_ig': {'method': 'blur_ig', 'crops': 'centre', 'steps': 3},
}
# The methods of many passes per image, studied as `METHODS_MAPS` (centre crop, thresholds, beside the
# paper's gradient), the six classes of an image out of one set of passes (`attribution.class_region_maps`)
# where the passes do not depend on the class. `costly`: Guided IG (3 steps, as the study's IG) and XRAI
# (its Integrated Gradients with 3 steps; one segmentation per image) on every image. `masked`: Score-CAM
# (a forward pass per channel: 768 at the last layer) and RISE (1,000 masks, its benchmark's count; TorchRay's
# default is 8,000), each seconds per image on 2 CPU cores: on the first `MASKED_IMAGES` records of each
# part only.
COSTLY_MAPS = {
    'guided_ig': {'method': 'guided_ig', 'crops': 'centre', 'steps': 3},
    'xrai': {'method': 'xrai', 'crops': 'centre', 'steps': 3},
}
MASKED_MAPS = {
    'score_cam': {'method': 'score_cam', 'crops': 'centre'},
    'rise': {'method': 'rise', 'crops': 'centre', 'num_masks': 1000},
}
MASKED_IMAGES = 100
# GradientSHAP, registered after the runs above, studied as `METHODS_MAPS`: Captum's default of 5 draws per
# class and its default baseline here, the zero image (MobileNet's grey), without noise.
SHAP_MAPS = {'gradient_shap': {'method': 'gradient_shap', 'crops': 'centre', 'samples': 5}}
# RISE as `MASKED_MAPS`' but each mask weighed by the class probability (the RISE paper's) instead of the
# sigmoid of the class score (TorchRay's), on the same images.
SOFTMAX_MAPS = {'rise_softmax': {**MASKED_MAPS['rise'], 'score': 'softmax'}}
# The cuts: the paper's GraphCut, the tuned variant the imagenet sweep picked, the CAM-style thresholds
# (pixels >= t x max, the largest connected component) and the map-free baselines (once).
STUDY_CUTS = {
    'graphcut': {'method': 'graphcut'},
    'graphcut_smoothed_all_soft': {'method': 'graphcut', 'smoothing': 0.05, 'component': 'all',
                                   'seeds': 'soft'},
    **{f'threshold_{t}': {'method': 'threshold', 'threshold': t / 100} for t in (15, 20, 25, 30, 35, 40)},
}
# The maps GraphCut cuts in the study (the paper's GraphCut; its tuned variant the first two only).
GRAPHCUT_MAPS = ('gradient', 'grad_cam', 'grad_cam_pw12')
# GraphCut settings on the Grad-CAM maps one block before the last (the study's best maps on the
# selection part): the sweep's single changes and its tuned variant, and three neighbours of the
# foreground quantile 90%, each tried on the selection part ('grad_cam_pw12/graphcut_<name>').
PW12_GRAPHCUTS = ('soft_seeds', 'fg_floor_50', 'pairwise_25', 'grabcut_3', 'fg_quantile_90', 'fg_quantile_85',
                  'fg_quantile_80', 'bg_quantile_50', 'smoothed_all_soft', 'fg_quantile_90_soft',
                  'fg_quantile_90_bg_quantile_20')


def graphcut_settings() -> dict:
  """Every GraphCut setting the sweeps name: `one_at_a_time`, `combinations` and the foreground
  quantile's neighbours."""
  return {**one_at_a_time(), **combinations(),
          'fg_quantile_85': {'method': 'graphcut', 'fg_quantile': 0.85},
          'fg_quantile_90_soft': {'method': 'graphcut', 'fg_quantile': 0.90, 'seeds': 'soft'},
          'fg_quantile_90_bg_quantile_20': {'method': 'graphcut', 'fg_quantile': 0.90, 'bg_quantile': 0.20}}


def study_grid() -> dict:
  """Every study map crossed with every cut ('map/cut'; GraphCut on `GRAPHCUT_MAPS`, and
  `PW12_GRAPHCUTS` on grad_cam_pw12), and the full-image and centre boxes."""
  grid = {}
  for name in ('gradient', *STUDY_MAPS):
    for cut, settings in STUDY_CUTS.items():
      if cut.startswith('graphcut') and (name not in GRAPHCUT_MAPS or (
          cut != 'graphcut' and name not in GRAPHCUT_MAPS[:2])):
        continue
      grid[f'{name}/{cut}'] = {**settings, **({'map': name} if name != 'gradient' else {})}
  every = graphcut_settings()
  for cut in PW12_GRAPHCUTS:
    grid[f'grad_cam_pw12/graphcut_{cut}'] = {**every[cut], 'map': 'grad_cam_pw12'}
  grid['full_image'] = {'method': 'full'}
  grid['centre'] = {'method': 'centre', 'centre_fraction': 0.5}
  return grid


def cuts_grid() -> dict:
  """The part of `study_grid` on the paper's maps cut by the paper's GraphCut and on grad_cam_pw12 (every
  cut), and the full-image and centre boxes."""
  return {name: s for name, s in study_grid().items()
          if name in ('gradient/graphcut', 'full_image', 'centre') or name.startswith('grad_cam_pw12/')}


def methods_grid(maps=None) -> dict:
  """The paper's pair and the gradient's thresholds (`study_grid`'s), every map of `maps` (default
  `METHODS_MAPS`) cut by the thresholds, and the full-image and centre boxes."""
  grid = {name: s for name, s in study_grid().items()
          if name in ('gradient/graphcut', 'full_image', 'centre') or name.startswith('gradient/threshold')}
  for name in METHODS_MAPS if maps is None else maps:
    for cut, settings in STUDY_CUTS.items():
      if cut.startswith('threshold'):
        grid[f'{name}/{cut}'] = {**settings, 'map': name}
  return grid


def get_config(arg: str = 'synthetic'):
  """arg: 'synthetic', 'imagenet', 'study', 'cuts', 'methods', 'costly', 'masked', 'shap', 'rise_softmax' or
  'voc', optionally ':cpu' / ':gpu' / ':tpu' (the base config's variant); a variant alone means the synthetic
  set."""
  data, _, variant = arg.partition(':') if arg not in ('cpu', 'gpu', 'tpu') else ('synthetic', '', arg)
  variant = variant or 'cpu'
  every = {**one_at_a_time(), **combinations()}
  criterion = (('top5_loc_error', 'min'), ('gt_known_box_accuracy', 'max'))
  if data == 'synthetic':
    # data and net as the quickstart's (its workdir's data and checkpoints are reused); the selection
    # part: data.num_validation validation images (absent: num_test), the report part: the test split
    config = _sibling('quickstart').get_config(variant)
    # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
    config.backward_options = 'ynn_convolutions'
    grid = {name: every[name] for name in SYNTHETIC}
  elif data == 'imagenet':
    config = _sibling('ilsvrc_mobilenet_sample').get_config(variant)
    grid = {name: every[name] for name in IMAGENET}
  elif data == 'study':
    config = _sibling('ilsvrc_mobilenet_sample').get_config(variant)
    config.maps = STUDY_MAPS
    grid = study_grid()
  elif data == 'cuts':
    config = _sibling('ilsvrc_mobilenet_sample').get_config(variant)
    config.maps = {'grad_cam_pw12': STUDY_MAPS['grad_cam_pw12']}
    grid = cuts_grid()
  elif data == 'methods':
    config = _sibling('ilsvrc_mobilenet_sample').get_config(variant)
    config.maps = METHODS_MAPS
    grid = methods_grid()
  elif data in ('costly', 'masked', 'shap', 'rise_softmax'):
    config = _sibling('ilsvrc_mobilenet_sample').get_config(variant)
    config.maps = {'costly': COSTLY_MAPS, 'masked': MASKED_MAPS, 'shap': SHAP_MAPS,
                   'rise_softmax': SOFTMAX_MAPS}[data]
    grid = methods_grid(config.maps)
  elif data == 'voc':
    config = _sibling('voc_raccoon_kangaroo').get_config(variant)
    grid = every
    criterion = (('top1_loc_error', 'min'), ('gt_known_box_accuracy', 'max'))  # two classes: top-1 only
  else:
    raise ValueError("variant must be 'synthetic', 'imagenet', 'study', 'cuts', 'methods', 'costly', "
                     f"'masked', 'shap', 'rise_softmax' or 'voc' (optionally :cpu, :gpu, :tpu), got {arg!r}")
  config.name = f'localisation_sweep ({data})'
  config.sweep = ml_collections.ConfigDict({
      'grid': grid,
      # the pick: lowest top-k localisation error on the selection part, ties by GT-known box accuracy
      'criterion': criterion,
      # records of each part (0: all)
      'num_images': MASKED_IMAGES if data in ('masked', 'rise_softmax') else 0,
  })
  return config
