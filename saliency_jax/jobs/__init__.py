"""Jobs: experiments as code. Each job takes a config and a workdir, calls the core (models, saliency,
localise, metrics, data) and the main job's public stages (`pipeline.prepare`, ...), and writes its
JSON and markdown to the workdir. Jobs never import each other's internals.

  sweep: localisation settings chosen on a selection part, reported on a separate report part.
"""
