"""Running kernels: the reference interpreter (`interpreter`: block IR with numpy, the
reference semantics), host tensors (`host_tensor`: host arrays and `PackedArray`s as
arrays of codes) and argument binding, the CPU backend's llvmlite driver (`cpu`), the
GPU path (`nvrtc`, `cuda_build`, `cubin`, `gpu`: NVRTC, the build cache entry, cubin
resources, driver launches) and the disk cache (`cache`).
"""
