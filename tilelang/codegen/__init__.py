"""Code generators: thread IR as CUDA C++ (`tilelang.codegen.cuda`) and as LLVM IR for the
CPU backend (`tilelang.codegen.llvm`).

Nothing is imported here: a GPU build must not load llvmlite, nor a CPU run NVRTC's
emitter, so each user imports the emitter it needs.
"""
