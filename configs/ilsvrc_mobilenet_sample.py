"""The paper's ILSVRC protocol (Sect. 3.2) on real ImageNet images with a real ImageNet classifier.

  python experiments/reproduce.py --config configs/ilsvrc_mobilenet_sample.py \
      --workdir runs/ilsvrc_mobilenet_sample [--config.data_dir=../shared/data]

No training: MobileNet v1 0.75 (224 px, TensorFlow.js layers model of `data_dir/imagenet-mobilenet`,
imported by `weights.load_tfjs_layers_model`) on the 650 ILSVRC-2012 val images of
`data_dir/imagenet-val-sample` (227 x 227, squashed by their redistributor) with their real boxes.
Per image: the top-5 classes by 10-crop averaged scores, the 10-crop saliency map of each (one forward
pass, five backward passes, on CPU one image and one class after another: config.sequential_maps; the
true class's map is that top-5 map when the true class is among them, else one more backward pass,
in the same call on CPU), the same classes' 10-crop Grad-CAM maps at conv_pw_12_relu (config.maps, out
of the same passes); every localisation method of `config.localise` on the 227 px photos, each on its
map; ILSVRC top-1 / top-5 localisation error, GT-known box accuracy, classification top-1 / top-5, why
the guesses fail; then the class models of Sect. 2 (ten classes of the paper's Fig. 1) on the same
net, through the layer graph read from its Keras layers. `num_eval` limits the images (e.g.
`--config.num_eval=50` for a quick look);
`--config.data.part=report` keeps the half of the images that no setting was chosen on (the numbers of
docs/results/imagenet.md), `selection` the other half. `selected_method` names the pair (map, cut) that the
cuts sweep picked on the selection half; that sweep was run after the study's report half had shown
GraphCut ahead on these maps, so its report number is a second look (the study's held-out pick: the
threshold box on the same maps).
Measured result and cost: docs/results/imagenet.md and speed.md. `:gpu` / `:tpu` raise the chunk size
and the workers.
"""

import ml_collections

from saliency_jax import defaults


def get_config(variant: str = 'cpu'):
  if variant not in ('cpu', 'gpu', 'tpu'):
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {variant!r}")
  config = defaults.main_job()
  # the compiler options of the backward passes its kept results were made under (`xla.BACKWARD_OPTIONS`)
  config.backward_options = 'ynn_convolutions'
  config.name = 'ilsvrc_mobilenet_sample'
  config.num_classes = 1000
  config.data_dir = '../shared/data'  # holds imagenet-val-sample/ and imagenet-mobilenet/
  config.data = ml_collections.ConfigDict({
      'name': 'ilsvrc', 'data_dir': config.get_ref('data_dir'), 'folder': 'imagenet-val-sample',
      'label_map': '',
      # The 227 px photos upscaled to 256 (the paper's image side), then 10 crops of 224 (the net's input).
      'image_size': 256, 'skip_bad': False, 'part': 'all',
      'mean': (0.5, 0.5, 0.5), 'std': (0.5, 0.5, 0.5),  # x / 127.5 - 1, MobileNet's preprocessing
  })
  # no config.model: the checkpoint's layer list is the architecture (`models.KerasNet`)
  config.checkpoint = ml_collections.ConfigDict({'kind': 'tfjs_layers',
                                                 'path': config.get_ref('data_dir') + '/imagenet-mobilenet'})
  config.crop_size = 224
  config.eval_crop = 224  # test accuracy on the centre crop (10-crop top-k accuracies: metrics.json)
  config.localise_size = 227  # localise on the photos as stored, maps resized onto them
  config.top_k = 5
  config.chunk_size = 8 if variant == 'cpu' else 64
  config.sequential_maps = variant == 'cpu'  # one image, one class after another: faster on CPU
  config.eval_chunk = 200 if variant == 'cpu' else 640  # a multiple of chunk_size
  config.workers = 2 if variant == 'cpu' else 8
  config.num_deconvnet = 8
  config.num_figure = 8
  # The paper's pair (its gradient maps, its GraphCut), the pair picked on the selection half of the sample
  # (docs/results/imagenet.md) by the study (`configs/localisation_sweep.py:study`: every attribution
  # method's maps x every cut) and its part on the Grad-CAM maps at conv_pw_12 (`:cuts`: GraphCut's settings
  # on them), the study's first pick (the CAM-style threshold box on the same maps), and the baselines:
  # thresholds on the paper's maps, the full image, a centred box.
  standard = defaults.localise_methods()
  config.maps = {'grad_cam_pw12': {'method': 'grad_cam', 'layer': 'conv_pw_12_relu'}}
  config.localise = {
      'graphcut': standard['graphcut'],
      'grad_cam_pw12_graphcut_fg_quantile_90': {'method': 'graphcut', 'fg_quantile': 0.9,
                                                'map': 'grad_cam_pw12'},
      'grad_cam_pw12_threshold_25': {'method': 'threshold', 'threshold': 0.25, 'map': 'grad_cam_pw12'},
      'threshold_15': standard['threshold_15'],
      'threshold_20': standard['threshold_20'],
      'full_image': standard['full_image'],
      'centre': standard['centre'],
  }
  config.selected_method = 'grad_cam_pw12_graphcut_fg_quantile_90'
  # a true class among the top-5 takes that class's map and box (no second pass, no second cut)
  config.share_true_maps = True
  # metrics.json 'failures': per method, why the top-5 guesses fail (no right class; a right class with
  # a box too small, too large or displaced), and the oracle over the methods
  config.failure_analysis = True
  config.figure_method = 'grad_cam_pw12_graphcut_fg_quantile_90'
  # Sect. 2 class models on the imported net, of the ten classes of the paper's Fig. 1 (washing machine,
  # computer keyboard, kit fox, goose, ostrich, limousine, dalmatian, bell pepper, lemon, husky),
  # at the test images' size (300 steps and a pass over the test images: minutes on 2 cores).
  config.class_models.classes = (897, 508, 278, 99, 9, 627, 251, 945, 951, 250)
  return config
