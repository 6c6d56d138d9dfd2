"""Jobs: experiments as code. Each job takes a config and a workdir, calls the core modules of
`saliency_jax` and the shared stages (`stages`: data, trained net, maps, localisation, scores), and
writes its JSON and markdown to the workdir. Jobs never import one another.

  pipeline           the main job (reproduce.py): train or import, maps, localisation, Sect. 4 summary,
                     class models, report (configs/cifar_resnet_imagenet_sample.py:variants: the
                     GraphCut variants on real photos with a pretrained net)
  sweep              localisation settings chosen on a selection part, reported on a report part
  comparison         every attribution method: localisation, pointing, faithfulness, sanity
  equivalence        Sect. 4: gradient vs DeconvNet, layer by layer and on whole networks
  images             your own photos (explain_images.py): a pretrained net's top-k classes, maps,
                     overlays and boxes for every photo of a folder, no annotations
  stages, chunks     shared machinery: the stages above, and the evaluation on disk chunk by chunk
                     (atomic, checked on reading, resumable, shared between processes)
  config_checks      a job's whole config checked before any work; relative paths resolved
"""
