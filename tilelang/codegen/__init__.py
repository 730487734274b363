"""Code generators: thread IR as LLVM IR for the CPU backend (`tilelang.codegen.llvm`)."""

from tilelang.codegen.llvm import ENTRY, EmitError, LLVMKernel, emit_llvm, lower_to_llvm

__all__ = ["ENTRY", "EmitError", "LLVMKernel", "emit_llvm", "lower_to_llvm"]
