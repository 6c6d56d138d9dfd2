"""Train the paper's own 8-layer net on ImageNet, then its saliency, localisation and Sect. 4 summary.

  python experiments/reproduce.py --config configs/ilsvrc2013_paper_net.py:gpu \
      --workdir runs/ilsvrc2013_paper_net --config.data.data_dir=/path/to/tensorflow_datasets

For GPU / TPU hosts with a prepared tfds `imagenet2012` (and the ILSVRC val box XMLs in
`data.boxes_dir`). PaperConvNet (conv64-conv256x4-full4096x2-full1000, PAPER.md section 1) at
224 px, SGD with momentum 0.9, weight decay 5e-4, learning rate 0.01 divided by 10 twice (step
schedule), batch 256, dropout 0.5: the paper's recipe (its reference point: 39.7% top-1 error).
The training split is read on demand (`data.stream`: a thread pool decodes each batch); the test
split (`validation[:5000]`, about 1 GB at 256 px) is held in memory for the saliency and
localisation stages. Checkpoints every 5,000 steps; resumes. Not run
here (no ImageNet and no accelerator).
"""

import ml_collections

from saliency_jax import defaults


def get_config(arg: str = 'gpu'):
  if arg not in ('cpu', 'gpu', 'tpu'):
    raise ValueError(f"variant must be 'cpu', 'gpu' or 'tpu', got {arg!r}")
  config = defaults.main_job()
  config.name = 'ilsvrc2013_paper_net'
  config.num_classes = 1000
  config.data = ml_collections.ConfigDict({
      'name': 'tfds', 'dataset': 'imagenet2012', 'data_dir': None, 'boxes_dir': None,
      'train_split': 'train', 'test_split': 'validation[:5000]', 'image_size': 256, 'stream': True,
      'skip_bad': True, 'mean': (0.485, 0.456, 0.406), 'std': (1.0, 1.0, 1.0),  # zero-centred, as the paper
  })
  config.model = ml_collections.ConfigDict({'name': 'PaperConvNet', 'input_size': 224, 'dropout': 0.5})
  config.train = ml_collections.ConfigDict({
      'optimizer': 'sgd', 'learning_rate': 0.01, 'momentum': 0.9, 'weight_decay': 5e-4, 'schedule': 'step',
      'warmup_steps': 0, 'steps': 300_000, 'batch_size': 256, 'max_shift': 0, 'crop': 224,
      'checkpoint_every': 5000, 'log_every': 100,
  })
  config.crop_size = 224
  config.chunk_size = 64
  config.eval_chunk = 640  # a multiple of every variant's chunk_size
  config.workers = 16
  config.num_deconvnet = 4
  if arg == 'cpu':  # a smoke test of the wiring at 2 CPU cores
    config.data.train_split, config.data.test_split = 'train[:512]', 'validation[:64]'
    config.data.image_size = 128
    config.model.input_size = 112
    config.crop_size = 112
    config.train.steps, config.train.batch_size, config.train.crop = 20, 16, 112
    config.chunk_size, config.workers = 8, 2
  return config
