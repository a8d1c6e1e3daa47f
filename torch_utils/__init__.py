"""Low-level PyTorch utilities shared by networks, training and inversion.

The module paths and signatures in this package are a compatibility contract: official
stylegan2-ada-pytorch and QC-StyleGAN pickles embed network source code that imports
`torch_utils.persistence`, `torch_utils.misc` and `torch_utils.ops.*` by these names.
"""
