"""dnnlib: small utilities shared by qcgan and by code embedded in network pickles.

Official StyleGAN2-ADA / QC-StyleGAN pickles reference ``dnnlib.util.EasyDict``
and their embedded code calls ``dnnlib.EasyDict``, ``dnnlib.make_cache_dir_path``
and several ``dnnlib.util`` functions, so these names are part of the pickle
compatibility surface. Importing this package stays cheap (no torch).
"""

from . import util
from .util import (
    EasyDict,
    Logger,
    DownloadError,
    make_cache_dir_path,
    set_cache_dir,
    open_url,
    is_url,
    format_time,
    get_obj_by_name,
    call_func_by_name,
    construct_class_by_name,
    atomic_write,
    make_run_dir,
    UntrustedFileError,
    trust_pickle_enabled,
)

__all__ = [
    'util', 'EasyDict', 'Logger', 'DownloadError', 'make_cache_dir_path', 'set_cache_dir',
    'open_url', 'is_url', 'format_time', 'get_obj_by_name', 'call_func_by_name',
    'construct_class_by_name', 'atomic_write', 'make_run_dir',
    'UntrustedFileError', 'trust_pickle_enabled',
]
