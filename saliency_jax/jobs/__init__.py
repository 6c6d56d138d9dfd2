"""Jobs: experiments as code. Each job takes a config and a workdir, calls the core modules of
`saliency_jax` and the shared stages (`stages`: data, trained net, maps, localisation, scores), and
writes its JSON and markdown to the workdir. Jobs never import one another.

  pipeline           the main job (reproduce.py): train or import, maps, localisation, Sect. 4 summary,
                     class models, report (configs/cifar_resnet_imagenet_sample.py:variants: the
                     GraphCut variants on real photos with a pretrained net)
  sweep              localisation settings chosen on a selection part, reported on a report part
  comparison         every attribution method: localisation, pointing, faithfulness, sanity
  equivalence        Sect. 4: gradient vs DeconvNet, layer by layer and on whole networks
  stages, chunks     shared machinery: the stages above, and the main job's evaluation on disk chunk by
                     chunk (atomic, resumable, shared between processes)
"""
