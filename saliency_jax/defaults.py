"""Default settings of the experiments, importing nothing but ml_collections.

Configs (configs/*.py) start from these, so loading a config does not import JAX, Flax, optax or
orbax. The modules that use the settings refer here: `pipeline.default_config` is `main_job`,
`localise.standard_methods` is `localise_methods`, `comparison.default_settings` is `comparison`.
"""

import ml_collections


def localise_methods() -> dict[str, dict]:
  """The localisation methods an experiment compares (`localise.settings` fields).

  The pipeline (the paper's, the defaults), two variants (soft seeds; foreground seeds also >= 50% of the
  maximum), and the baselines (thresholds at 15% and 20% of the maximum, the full image, a centred half
  box).

  Returns:
    {name: settings dict}.
  """
  return {
      'graphcut': {'method': 'graphcut'},
      'graphcut_soft_seeds': {'method': 'graphcut', 'seeds': 'soft'},
      'graphcut_fg_floor_50': {'method': 'graphcut', 'fg_floor': 0.5},
      'threshold_15': {'method': 'threshold', 'threshold': 0.15},
      'threshold_20': {'method': 'threshold', 'threshold': 0.2},
      'full_image': {'method': 'full'},
      'centre': {'method': 'centre', 'centre_fraction': 0.5},
  }


def main_job() -> ml_collections.ConfigDict:
  """The settings every main-job config shares, with their defaults.

  Configs add data, model, train (or checkpoint) and change what they need.

  Returns:
    An `ml_collections.ConfigDict`.
  """
  config = ml_collections.ConfigDict()
  config.name = 'experiment'
  config.seed = 0
  config.num_eval = 0  # test images to map and localise (0: all)
  config.top_k = 5  # classes per image for the ILSVRC localisation error
  config.crop_size = 0  # 10-crop maps from crops of this size (0: the whole image, one map)
  config.localise_size = 0  # localise on the test images at this size (0: data.image_size)
  config.chunk_size = 100  # images per saliency call
  # the compiler options the programs whose time is their backward pass add to theirs
  # (`xla.BACKWARD_OPTIONS`; the entry points run the job under them)
  config.backward_options = 'no_ynn_convolutions'
  # the gradient maps' kernels take a chunk's images and their k classes one after another inside the
  # call instead of vmapped (`saliency.each`): on CPU faster for big nets at 224 px (MobileNet),
  # the same maps to float round-off (`saliency.SEQUENTIAL_OPTIONS`); on accelerators vmapped is faster
  config.sequential_maps = False
  # test records per evaluation chunk (read, mapped, localised, written to disk, then dropped): what
  # bounds the main job's memory; a multiple of chunk_size keeps every saliency call full
  config.eval_chunk = 200
  config.localise = localise_methods()
  # the method drawn in localisation.png ('': the selected method, else 'graphcut', else the first)
  config.figure_method = ''
  # the key of config.localise that a localisation sweep chose on the selection part
  # (jobs/sweep.py; '' none), named in metrics.json as 'selected_method'
  config.selected_method = ''
  config.workers = 2  # processes for the graph cuts
  config.num_deconvnet = 16  # test images for the Sect. 4 summary
  config.pointing_tolerance = 2.0  # pixels (synthetic masks only)
  config.num_figure = 8
  config.class_names = ()
  # a pretrained net instead of training config.model: kind '' (train), 'cifar_resnet',
  # 'torchvision_vgg16', 'tfjs_layers' or 'python' ('file.py:function' or 'module:function' returning any
  # JAX callable), and its path; eval_crop: the centred crop test accuracy is measured on (0: the image)
  config.checkpoint = ml_collections.ConfigDict({'kind': '', 'path': ''})
  config.eval_crop = 0
  # other maps to localise beside the paper's gradient maps ({name: {'method', 'crops', settings}}), named
  # by a config.localise method's 'map'
  config.maps = ml_collections.ConfigDict()
  # a true class among the top-k takes that class's map and box (no second pass, no second cut)
  config.share_true_maps = False
  # metrics.json 'failures': why each method's top-k guesses fail, and the oracle over the methods
  config.failure_analysis = False
  # several processes (`parallel.initialize`, jax.distributed): training runs on the global mesh of all
  # their devices; in the evaluation process p takes chunks p, p + P, ... and process 0 waits for all
  # chunks (workdir/evaluation), merges them and writes the metrics and report; timeout_s: how long
  # process 0 waits for the others' chunks, and they for process 0 at exit
  config.distributed = ml_collections.ConfigDict({'coordinator_address': '', 'num_processes': 1,
                                                  'process_id': 0, 'timeout_s': 3600})
  # class model images (paper Sect. 2), `class_models.visualise` settings; steps 0 skips the stage
  config.class_models = ml_collections.ConfigDict({
      'classes': (), 'steps': 300, 'l2_weight': 0.3, 'learning_rate': 0.1, 'optimizer': 'adam',
      'momentum': 0.9, 'objective': 'score', 'jitter': 0, 'blur_every': 0, 'blur_sigma': 0.5,
      'tv_weight': 0.0,
  })
  return config


def images_job() -> ml_collections.ConfigDict:
  """The settings of the photos job (`jobs.images`, experiments/explain_images.py), with their defaults.

  Configs add data (name 'images', data_dir, labels, image_size, mean / std), num_classes, checkpoint
  and change what they need.

  Returns:
    An `ml_collections.ConfigDict`.
  """
  config = ml_collections.ConfigDict()
  config.name = 'your_images'
  config.seed = 0
  config.num_classes = 1000
  config.class_names = ()
  # a text file of the class names in index order: synset_words.txt, a TF.js metadata.json, or one per line
  config.class_names_file = ''
  config.checkpoint = ml_collections.ConfigDict({'kind': '', 'path': ''})
  config.top_k = 5
  config.crop_size = 0  # 10-crop scores and maps (0: the whole photo, one map)
  config.localise_size = 0  # localise on the photo at this side (0: data.image_size); boxes in its pixels
  config.chunk_size = 8
  config.sequential_maps = False  # faster on CPU (saliency.each); False on accelerators
  config.eval_chunk = 64  # photos per chunk kept on disk (a rerun resumes at the first chunk not there)
  config.num_images = 0  # 0: every photo of the folder
  config.workers = 2
  config.overlays = True  # images/<photo>.<map>.png
  config.maps = ml_collections.ConfigDict()  # other maps beside the gradient ({name: {'method', ...}})
  config.localise = ml_collections.ConfigDict({'graphcut': localise_methods()['graphcut']})
  return config


def comparison() -> ml_collections.ConfigDict:
  """config.compare of the attribution comparison: which methods with which settings, and images per metric.

  Returns:
    An `ml_collections.ConfigDict`.
  """
  return ml_collections.ConfigDict({
      'methods': {
          'gradient': {}, 'gradient_x_input': {}, 'smoothgrad': {'samples': 25, 'noise': 0.15},
          'integrated_gradients': {'steps': 32}, 'gradient_shap': {'samples': 25}, 'guided_backprop': {},
          'deconvnet': {}, 'grad_cam': {},
          'cam': {}, 'occlusion': {'patch': 8, 'stride': 4},
          'grad_cam_plus_plus': {}, 'xgrad_cam': {}, 'layer_cam': {}, 'hires_cam': {}, 'eigen_cam': {},
          'score_cam': {'channel_chunk': 32}, 'ablation_cam': {'channel_chunk': 32},
          # fewer masks / steps than TorchRay's (8000 masks) and PAIR's (100 / 200 / 100 steps) defaults, to
          # keep the comparison's 200 images, 3 timed runs and randomisation check in minutes on 2 CPU cores
          'rise': {'num_masks': 500, 'mask_chunk': 50},
          'blur_ig': {'max_sigma': 50.0, 'steps': 25}, 'guided_ig': {'steps': 50}, 'xrai': {'steps': 25},
          # LRP with Zennit's composite for ReLU nets (z+ on convolutions, epsilon on dense layers): the
          # epsilon rule alone is gradient x input on such a net, up to its stabiliser
          'deeplift': {}, 'lrp': {'composite': 'epsilon_plus'},
      },
      'num_images': 200,  # test images every metric sees
      'localise': {'graphcut': {'method': 'graphcut'},
                   'threshold_15': {'method': 'threshold', 'threshold': 0.15}},
      'deletion_steps': 64,
      'insertion_blur': 5.0,  # px, at the net's input size
      'num_sanity': 16,  # images for the randomisation check (one map per layer group and method)
      'num_figure': 6,
      'timing_repeats': 3,  # seconds per image: the median of this many runs over all images
      'seed': 0,
  })
