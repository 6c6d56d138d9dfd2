"""The main job: data -> trained net -> saliency maps -> metrics, figure and report.

`run(config, workdir)` is what `experiments/reproduce.py` calls; every number comes from the
config (see configs/quickstart.py).
"""

import pathlib
import time

import jax
import numpy as np
from flax import nnx

from saliency_jax import metrics, models, report, saliency, train
from saliency_jax.data import synthetic


def run(config, workdir: str) -> dict:
  """Trains on the synthetic set, maps the test images' top-1 saliency; returns the metrics."""
  workdir = pathlib.Path(workdir)
  t0 = time.perf_counter()
  data = {split: synthetic.dataset(n, split=split, seed=config.seed, image_size=config.image_size,
                                   scale=tuple(config.object_scale))
          for split, n in (('train', config.num_train), ('test', config.num_test))}
  # Zero-centred inputs, as the paper's net was trained on: subtract the training mean colour.
  mean = data['train']['images'].reshape(-1, 3).mean(0) / 255.0
  prep = lambda images: (images.astype(np.float32) / 255.0 - mean).astype(np.float32)
  t_data = time.perf_counter() - t0

  model = models.SmallConvNet(len(synthetic.CLASSES), stages=config.model.stages, hidden=config.model.hidden,
                              rngs=nnx.Rngs(config.seed))
  log = train.fit(model, prep(data['train']['images']), data['train']['labels'], steps=config.steps,
                  batch_size=config.batch_size, learning_rate=config.learning_rate,
                  weight_decay=config.weight_decay, seed=config.seed)
  t_train = time.perf_counter() - t0 - t_data

  test = data['test']
  x = prep(test['images'])
  accuracy = train.accuracy(model, x, test['labels'])
  t1 = time.perf_counter()
  classes, _, maps = saliency.top_k_saliency(model, x, k=1, crop_size=config.crop_size,
                                             chunk_size=config.chunk_size)
  maps = np.asarray(jax.device_get(maps[:, 0]))
  t_saliency = time.perf_counter() - t1
  classes = np.asarray(classes[:, 0])

  hits = metrics.pointing_hits(maps, test['masks'], tolerance=config.pointing_tolerance)
  centre = np.zeros_like(maps)
  centre[:, config.image_size // 2, config.image_size // 2] = 1
  centre_hits = metrics.pointing_hits(centre, test['masks'], tolerance=config.pointing_tolerance)
  inside = metrics.mass_inside(maps, test['masks'])
  area = test['masks'].mean(axis=(1, 2))
  results = {
      'test_accuracy': accuracy,
      'train_final_loss': float(np.mean([r['loss'] for r in log[-50:]])),
      'pointing_game': float(hits.mean()),
      'pointing_game_centre_baseline': float(centre_hits.mean()),
      'saliency_mass_on_object': float(inside.mean()),
      'object_area_fraction': float(area.mean()),
      'num_test': int(len(x)),
      'seconds': {'data': t_data, 'train': t_train, 'saliency': t_saliency},
      'saliency_images_per_second': len(x) / t_saliency,
      'config': config.to_dict(),
  }
  report.write_json(workdir / 'metrics.json', results)
  n = config.num_figure
  titles = [f'true {synthetic.CLASSES[t]} / top-1 {synthetic.CLASSES[p]}'
            for t, p in zip(test['labels'][:n], classes[:n])]
  report.saliency_figure(workdir / 'saliency.png', test['images'][:n], maps[:n], titles, test['masks'][:n])
  report.write_atomic(workdir / 'report.md', _markdown(results))
  return results


def _markdown(r: dict) -> str:
  return '\n'.join([
      '# Quickstart: class saliency on the synthetic set',
      '',
      f"Test accuracy {r['test_accuracy']:.3f} on {r['num_test']} images (photos unseen in training).",
      '',
      '| measure | saliency (10-crop, top-1 class) | baseline |',
      '| --- | --- | --- |',
      f"| pointing game (max on object) | {r['pointing_game']:.3f} | centre pixel "
      f"{r['pointing_game_centre_baseline']:.3f} |",
      f"| map mass on object | {r['saliency_mass_on_object']:.3f} | uniform map "
      f"{r['object_area_fraction']:.3f} |",
      '',
      f"Saliency: {r['saliency_images_per_second']:.1f} images/s (10 crops each).",
      '',
      '![saliency](saliency.png)',
      '',
  ])
