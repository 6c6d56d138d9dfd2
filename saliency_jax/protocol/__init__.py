"""The paper's evaluation protocol as config-free library calls, between the core and the jobs.

  setup         data and model: how images are read (`Data`, the photos at localise_size), the splits
                cached on disk, pretrained nets (`Checkpoint`, `load_model`), the normalisation, `prepare`
  maps          one way to make maps: `make_maps(model, x, specs=..., labels=..., top_k=...)`, `MapSpec`
  localisation  every cut (`Cut`: a map and `localise.Settings`) of every map, `localise_images`
  scores        localisation metrics, why the guesses fail, the pointing game
  cache         packing ragged arrays, digests of the code and of the weights that key kept results
  chunks        the evaluation on disk chunk by chunk (atomic, checked on reading, resumable, shared)

Settings travel as keyword arguments and dataclasses; no function here takes a config. The protocol
imports the core (`saliency_jax.*`) and never a job.
"""
