"""saliency-jax: Simonyan, Vedaldi & Zisserman (2013), class saliency, localisation and DeconvNet analysis,
and the attribution methods and metrics compared with them, in JAX / Flax NNX."""

__version__ = '0.1.0'
