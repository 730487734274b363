"""Running kernels: the reference interpreter, host tensors, and (elsewhere in this
package) the NVRTC/llvmlite drivers, the disk cache, the autotuner and the torch bridge.

`tilelang.runtime.interpreter` executes block IR with numpy (the reference semantics);
`tilelang.runtime.host_tensor` presents host arrays and `PackedArray`s as arrays of codes.
"""
