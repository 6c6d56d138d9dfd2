"""The XLA compiler options the package's programs are compiled with.

Fields of XLA's DebugOptions, passed as `jax.jit(..., compiler_options=...)`; backends other than
XLA:CPU ignore them.
"""

# XLA:CPU's newer fusion emitters turn the backward pass of a MobileNet (depthwise layers written as
# taps, relu6) into code several times slower than the older emitters; on the other models the older
# ones are as fast or slightly faster. The colour models of the GraphCut pipeline: the same costs, bit
# for bit on the ILSVRC config's maps, compiled in 2.3 s instead of 3.9 and computed 8% faster.
COMPILER_OPTIONS = {'xla_cpu_use_fusion_emitters': False}

# The sequential kernels (`saliency.each`) also turn off XLA:CPU's YNNPACK fusions, which slow these
# one-image programs down (measured by hand on a MobileNet's 10 crops x 5 classes at 224 px).
# Other kernels, other float round-off: where a ReLU's (or relu6's) input lies within round-off of its
# kink, its gate, and so the map at the pixels behind it, can differ from the vmapped kernel's.
SEQUENTIAL_OPTIONS = {**COMPILER_OPTIONS, 'xla_cpu_experimental_ynn_fusion_type': ''}
