"""Custom ops: each has a pure-PyTorch reference path and, where it pays off, a CUDA kernel."""
