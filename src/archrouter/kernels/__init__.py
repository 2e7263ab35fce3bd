"""Triton kernels, each beside its plain-PyTorch reference.

Public functions pick the Triton path for CUDA tensors and the reference otherwise; tests
call the Triton path directly under TRITON_INTERPRET=1 on the CPU.
"""
