"""Jobs: experiments as code, each a `run(config, workdir)`.

Each job checks its config (`config_checks`), reads it once into the protocol's settings (`settings`),
calls the protocol (`saliency_jax.protocol`) and the core, and writes its JSON, markdown and figures to
the workdir. Jobs never import one another.

  pipeline           the main job (reproduce.py): train or import, maps, localisation, Sect. 4 summary,
                     class models, report
  sweep              localisation settings chosen on a selection part, reported on a report part
  comparison         every attribution method: localisation, pointing, faithfulness, sanity
  equivalence        Sect. 4: gradient vs DeconvNet, layer by layer and on whole networks
  images             your own photos (explain_images.py): a pretrained net's top-k classes, maps,
                     overlays and boxes for every photo of a folder, no annotations
  benchmark*, cifar_resnets   the speed, memory and import checks (experiments/benchmark*.py,
                     evaluate_cifar_resnets.py)
  settings           a config read into the protocol's settings (data, checkpoint, maps, cuts, names)
  config_checks      a job's whole config checked before any work; relative paths resolved
"""
