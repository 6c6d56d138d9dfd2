"""saliency-jax: Simonyan, Vedaldi & Zisserman (2013) in JAX / Flax NNX.

Class saliency, localisation and DeconvNet analysis, and the attribution methods and metrics compared
with them.
"""

__version__ = '0.1.0'
