"""Datasets and readers: synthetic images, ImageNet (ILSVRC) samples and their annotations."""
