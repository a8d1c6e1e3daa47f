"""Small general-purpose helpers shared by qcgan and by the code embedded in
StyleGAN2-ADA / QC-StyleGAN network pickles.

Pickles refer to ``dnnlib.util.EasyDict`` by that exact dotted path, and the
source code embedded in them calls several functions of this module by name,
so the public names here form a compatibility surface and must stay put.

This module deliberately imports nothing heavy (no torch, no numpy).
"""

import contextlib
import errno
import fnmatch
import glob
import hashlib
import html
import http.client
import importlib
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, List, Optional, Tuple

__all__ = [
    'EasyDict', 'Logger', 'DownloadError',
    'format_time', 'format_time_brief',
    'set_cache_dir', 'make_cache_dir_path',
    'is_url', 'open_url', 'url_cache_path',
    'get_module_from_obj_name', 'get_obj_from_module', 'get_obj_by_name',
    'call_func_by_name', 'construct_class_by_name', 'get_top_level_function_name',
    'list_dir_recursively_with_ignore', 'copy_files_and_create_dirs',
    'TRUST_PICKLE_ENV', 'TRUST_HINT', 'UntrustedFileError', 'trust_pickle_enabled', 'set_trust_pickle',
    'click_trust_pickle', 'allow_class_module', 'resolve_allowed_class', 'construct_allowed_class',
    'atomic_write', 'remove_stale_tmp_files', 'make_run_dir', 'next_run_dir', 'carry_over_jsonl',
]


# ---------------------------------------------------------------------------
# EasyDict
# ---------------------------------------------------------------------------

class EasyDict(dict):
    """A ``dict`` whose keys can also be read and written as attributes.

    A missing attribute raises ``AttributeError`` (never ``KeyError``), which
    keeps ``hasattr``, ``getattr(obj, name, default)``, ``copy`` and ``pickle``
    working as they do for ordinary objects.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self):
        keys = [k for k in self.keys() if isinstance(k, str) and k.isidentifier()]
        return sorted(set(super().__dir__()) | set(keys))


# ---------------------------------------------------------------------------
# Logger: tee stdout / stderr into a file
# ---------------------------------------------------------------------------

class _TeeStream:
    """Forwards writes to a stream and to the owning Logger's file."""

    def __init__(self, logger: 'Logger', stream):
        self._logger = logger
        self._stream = stream

    def write(self, text: str) -> int:
        return self._logger._tee(self._stream, text)

    def flush(self) -> None:
        self._logger._flush_one(self._stream)

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty, fileno, errors, ... come from the wrapped stream.
        stream = self.__dict__.get('_stream')
        if stream is None:
            raise AttributeError(name)
        return getattr(stream, name)


class Logger:
    """Tee everything printed to ``sys.stdout`` and ``sys.stderr`` into a file.

    While active, ``sys.stdout`` is this object and ``sys.stderr`` is a small
    companion object; text written to either still reaches the original stream.
    ``close()`` (or leaving the ``with`` block) restores the streams it
    replaced. Loggers can be nested; each one restores what it saw.
    """

    def __init__(self, file_name: Optional[str] = None, file_mode: str = 'w', should_flush: bool = True):
        self.file = None
        if file_name is not None:
            self.file = open(file_name, file_mode, encoding='utf-8', errors='replace')
        self.should_flush = should_flush
        self._lock = threading.RLock()
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        self._stderr_tee = _TeeStream(self, self.stderr)
        sys.stdout = self
        sys.stderr = self._stderr_tee

    # context manager -----------------------------------------------------
    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    # stream protocol -----------------------------------------------------
    def _tee(self, stream, text) -> int:
        if isinstance(text, bytes):
            text = text.decode('utf-8', errors='replace')
        if len(text) == 0:  # print() and some libraries emit empty writes
            return 0
        with self._lock:
            if self.file is not None:
                self.file.write(text)
            if stream is not None:
                stream.write(text)
            if self.should_flush:
                self._flush_unlocked(stream)
        return len(text)

    def _flush_unlocked(self, stream) -> None:
        if self.file is not None:
            self.file.flush()
        if stream is not None:
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass

    def _flush_one(self, stream) -> None:
        with self._lock:
            self._flush_unlocked(stream)

    def write(self, text: str) -> int:
        return self._tee(self.stdout, text)

    def flush(self) -> None:
        with self._lock:
            self._flush_unlocked(self.stdout)
            if self.stderr is not None and self.stderr is not self.stdout:
                try:
                    self.stderr.flush()
                except (AttributeError, ValueError, OSError):
                    pass

    def isatty(self) -> bool:
        try:
            return bool(self.stdout.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def __getattr__(self, name: str) -> Any:
        # encoding, fileno, errors, ... come from the original stdout.
        stdout = self.__dict__.get('stdout')
        if stdout is None:
            raise AttributeError(name)
        return getattr(stdout, name)

    def close(self) -> None:
        with self._lock:
            self.flush()
            # Restore only what we replaced; a newer Logger may still be active.
            if sys.stdout is self:
                sys.stdout = self.stdout
            if sys.stderr is self._stderr_tee:
                sys.stderr = self.stderr
            if self.file is not None:
                self.file.close()
                self.file = None
        # After close(), writes still reach the original streams (this matters
        # when a nested Logger created later still forwards to this one).


# ---------------------------------------------------------------------------
# Time formatting
# ---------------------------------------------------------------------------

def _split_seconds(seconds: float) -> Tuple[str, int, int, int, int]:
    total = int(round(seconds))
    sign = '-' if total < 0 else ''
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    return sign, days, hours, minutes, secs


def format_time(seconds: float) -> str:
    """``12s``, ``3m 04s``, ``2h 05m 00s`` or ``1d 02h 03m``."""
    sign, d, h, m, s = _split_seconds(seconds)
    if d == 0 and h == 0 and m == 0:
        return f'{sign}{s}s'
    if d == 0 and h == 0:
        return f'{sign}{m}m {s:02d}s'
    if d == 0:
        return f'{sign}{h}h {m:02d}m {s:02d}s'
    return f'{sign}{d}d {h:02d}h {m:02d}m'


def format_time_brief(seconds: float) -> str:
    """Two most significant units only: ``12s``, ``3m 04s``, ``2h 05m``, ``1d 02h``."""
    sign, d, h, m, s = _split_seconds(seconds)
    if d == 0 and h == 0 and m == 0:
        return f'{sign}{s}s'
    if d == 0 and h == 0:
        return f'{sign}{m}m {s:02d}s'
    if d == 0:
        return f'{sign}{h}h {m:02d}m'
    return f'{sign}{d}d {h:02d}h'


# ---------------------------------------------------------------------------
# Cache directory
# ---------------------------------------------------------------------------

_cache_dir_override: Optional[str] = None


def set_cache_dir(path: Optional[str]) -> None:
    """Override the cache root for this process (``None`` removes the override).

    The override wins over ``$DNNLIB_CACHE_DIR``.
    """
    global _cache_dir_override
    _cache_dir_override = None if path is None else os.fspath(path)


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the dnnlib cache root; the directory is not created.

    Root: ``set_cache_dir()`` override, else ``$DNNLIB_CACHE_DIR``, else
    ``$HOME/.cache/dnnlib`` (``%USERPROFILE%`` on Windows), else a folder in
    the system temp dir.
    """
    if _cache_dir_override is not None:
        root = _cache_dir_override
    elif os.environ.get('DNNLIB_CACHE_DIR'):
        root = os.environ['DNNLIB_CACHE_DIR']
    elif os.environ.get('HOME'):
        root = os.path.join(os.environ['HOME'], '.cache', 'dnnlib')
    elif os.environ.get('USERPROFILE'):
        root = os.path.join(os.environ['USERPROFILE'], '.cache', 'dnnlib')
    else:
        root = os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib')
    return os.path.join(root, *paths)


# ---------------------------------------------------------------------------
# Looking up objects by dotted name
# ---------------------------------------------------------------------------

def _missing_module(exc: ModuleNotFoundError, module_name: str) -> bool:
    """True if ``exc`` says that ``module_name`` (or a parent of it) is absent,
    as opposed to an import failing *inside* an existing module."""
    missing = getattr(exc, 'name', None)
    if not missing:
        return True
    return module_name == missing or module_name.startswith(missing + '.')


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Follow a dotted attribute path (``''`` returns the module itself)."""
    obj = module
    if obj_name:
        for part in obj_name.split('.'):
            obj = getattr(obj, part)
    return obj


def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Split ``'pkg.mod.Class.attr'`` into (imported module, ``'Class.attr'``).

    The longest importable module prefix whose remainder resolves wins.
    Single names (no dot) are looked up in ``__main__`` and then ``builtins``.
    Raises ``ImportError`` naming ``obj_name`` when nothing resolves.
    """
    if not isinstance(obj_name, str) or not obj_name or obj_name.startswith('.') or obj_name.endswith('.') or '..' in obj_name:
        raise ImportError(f'Invalid object name {obj_name!r}: expected a dotted name such as "package.module.Class"')

    parts = obj_name.split('.')
    candidates = [('.'.join(parts[:i]), '.'.join(parts[i:])) for i in range(len(parts), 0, -1)]
    if len(parts) == 1:
        candidates = [('__main__', obj_name), ('builtins', obj_name)]

    imported_any = False
    for module_name, local_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if _missing_module(exc, module_name):
                continue
            raise  # an import inside that module failed: surface the real error
        imported_any = True
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            continue
        return module, local_name

    if imported_any:
        raise ImportError(f'Cannot find object "{obj_name}": the module was found but has no attribute for the rest of the name', name=obj_name)
    raise ImportError(f'Cannot find object "{obj_name}": no module along that dotted name can be imported', name=obj_name)


def get_obj_by_name(name: str) -> Any:
    """Resolve ``'package.module.obj'`` to the object."""
    module, local_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, local_name)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Look up ``func_name`` and call it with the remaining arguments."""
    if func_name is None:
        raise ValueError('call_func_by_name() needs func_name="package.module.function"')
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise ValueError(f'"{func_name}" is not callable (it is a {type(func_obj).__name__})')
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Look up ``class_name`` and instantiate it with the remaining arguments."""
    if class_name is None:
        raise ValueError('construct_class_by_name() needs class_name="package.module.Class"')
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_top_level_function_name(obj: Callable) -> str:
    """Dotted name under which ``get_obj_by_name`` finds ``obj`` again.

    For objects defined in ``__main__`` the script's file name stands in for
    the module name, so the name still resolves in another process that
    imports that script as a module.
    """
    module = getattr(obj, '__module__', None)
    qualname = getattr(obj, '__qualname__', None) or getattr(obj, '__name__', None)
    if module is None or qualname is None:
        raise ValueError(f'{obj!r} has no module or name')
    if '<locals>' in qualname or '<lambda>' in qualname:
        raise ValueError(f'{module}.{qualname} is not reachable by name (nested function or lambda)')
    if module == '__main__':
        main_file = getattr(sys.modules.get('__main__'), '__file__', None)
        if main_file:
            module = os.path.splitext(os.path.basename(main_file))[0]
    return f'{module}.{qualname}'


# ---------------------------------------------------------------------------
# Trust: code named or embedded in a file runs only when the user opts in
# ---------------------------------------------------------------------------

TRUST_PICKLE_ENV = 'QCGAN_TRUST_PICKLE'
TRUST_HINT = 'if you trust this file, pass --trust-pickle (or set QCGAN_TRUST_PICKLE=1)'


class UntrustedFileError(ValueError):
    """A file asks to run code (a pickle global, embedded source, a class name) that loading it does not need."""


def trust_pickle_enabled() -> bool:
    """True when the user opted in to running code from the files they load (`--trust-pickle` or
    `QCGAN_TRUST_PICKLE=1`). Kept in the environment so that worker processes inherit it."""
    return os.environ.get(TRUST_PICKLE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def set_trust_pickle(enabled: bool = True) -> None:
    if enabled:
        os.environ[TRUST_PICKLE_ENV] = '1'
    else:
        os.environ.pop(TRUST_PICKLE_ENV, None)


def click_trust_pickle(ctx, param, value):
    """click callback of every script's `--trust-pickle` flag (declare it with `expose_value=False`)."""
    _ = ctx, param
    if value:
        set_trust_pickle(True)
    return value


# Modules whose classes may be named by files (checkpoint options, training_options.json, encoder and
# identity-network files). Classes must be defined in these modules (re-exports do not count), so a name
# such as "training.training_loop.os.system" or "subprocess.run" never resolves.
_ALLOWED_CLASS_MODULES = {
    'training.networks', 'training.loss', 'training.augment', 'training.dataset', 'training.encoders',
    'training.qc', 'training.ranger',
}


def allow_class_module(module_name: str) -> None:
    """Let files name the classes defined in `module_name` (for this project's own extensions)."""
    _ALLOWED_CLASS_MODULES.add(module_name)


def resolve_allowed_class(class_name: Any, what: str = 'class_name') -> type:
    """Resolve a class name read from a file, through the allow-list.

    Accepts this project's classes (defined in `_ALLOWED_CLASS_MODULES`), `torch.optim` optimizers and
    stock `torch.nn` layers (constructing them runs no code from the file); with `--trust-pickle` any
    importable class. Raises `UntrustedFileError` (one line, naming `what`)
    for everything else and `ImportError` for names that do not resolve.
    """
    if not isinstance(class_name, str) or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+', class_name):
        raise UntrustedFileError(f'{what}: {class_name!r} is not a dotted class name such as "training.loss.StyleGAN2Loss"')
    trusted = trust_pickle_enabled()
    module_name = class_name.rsplit('.', 1)[0]
    in_project = module_name in _ALLOWED_CLASS_MODULES
    is_optim = class_name.startswith('torch.optim.') and class_name.count('.') <= 3
    is_layer = class_name.startswith('torch.nn.') and class_name.count('.') <= 4
    if not (in_project or is_optim or is_layer or trusted):
        raise UntrustedFileError(f'{what}: refusing class "{class_name}": only this project\'s classes, torch.optim '
                                 f'optimizers and torch.nn layers may be named by a file; {TRUST_HINT}')
    obj = get_obj_by_name(class_name)
    if not trusted:
        ok = isinstance(obj, type) and f'{obj.__module__}.{obj.__qualname__}' == class_name if in_project else False
        if is_optim or is_layer:
            import torch  # pylint: disable=import-outside-toplevel
            ok = isinstance(obj, type) and (issubclass(obj, torch.optim.Optimizer) if is_optim else
                                            issubclass(obj, torch.nn.Module) and obj.__module__.startswith('torch.nn.modules.'))
        if not ok:
            raise UntrustedFileError(f'{what}: refusing "{class_name}": not a class defined in this project, a torch.optim '
                                     f'optimizer or a torch.nn layer; {TRUST_HINT}')
    if not callable(obj):
        raise UntrustedFileError(f'{what}: "{class_name}" is not a class')
    return obj


def construct_allowed_class(*args, class_name: str = None, what: str = 'class_name', **kwargs) -> Any:
    """`construct_class_by_name` for names that come from files: resolves through `resolve_allowed_class`."""
    return resolve_allowed_class(class_name, what)(*args, **kwargs)


# ---------------------------------------------------------------------------
# File-system helpers
# ---------------------------------------------------------------------------

def list_dir_recursively_with_ignore(dir_path: str, ignores: Optional[List[str]] = None,
                                     add_base_to_relative: bool = False) -> List[Tuple[str, str]]:
    """All files under ``dir_path`` as ``(absolute_path, relative_path)`` pairs.

    ``ignores`` are ``fnmatch`` patterns matched against file and directory
    names; an ignored directory is not descended into. With
    ``add_base_to_relative`` the relative paths start with the base name of
    ``dir_path``. The result is sorted by relative path.
    """
    if not os.path.isdir(dir_path):
        raise NotADirectoryError(errno.ENOTDIR, 'Not a directory', dir_path)
    ignores = list(ignores or [])
    base_name = os.path.basename(os.path.normpath(dir_path))

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in ignores)

    result = []
    for root, dirs, files in os.walk(dir_path):
        dirs[:] = sorted(d for d in dirs if not ignored(d))
        for name in sorted(files):
            if ignored(name):
                continue
            abs_path = os.path.join(root, name)
            rel_path = os.path.relpath(abs_path, dir_path)
            if add_base_to_relative:
                rel_path = os.path.join(base_name, rel_path)
            result.append((abs_path, rel_path))
    result.sort(key=lambda pair: pair[1])
    return result


def copy_files_and_create_dirs(files: List[Tuple[str, str]]) -> None:
    """Copy each ``(src, dst)`` pair, creating the destination folders."""
    for src, dst in files:
        dst_dir = os.path.dirname(dst)
        if dst_dir:
            os.makedirs(dst_dir, exist_ok=True)
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------------------
# URLs, downloads and the download cache
# ---------------------------------------------------------------------------

class DownloadError(OSError):
    """A URL could not be fetched and no cached copy exists.

    ``str(err)`` is a single line naming the URL, the reason and the path the
    file would be read from next time (``err.cache_path``).
    """

    def __init__(self, message: str, url: Optional[str] = None, cache_path: Optional[str] = None,
                 reason: Optional[str] = None):
        super().__init__(message)
        self.url = url
        self.cache_path = cache_path
        self.reason = reason


# Seconds to sleep before retry k (0-based) is min(base * 2**k, cap). Module
# level so tests (and impatient users) can shorten them.
RETRY_BACKOFF_BASE_S = 0.5
RETRY_BACKOFF_CAP_S = 8.0
# Connection-level failures (refused, DNS, unreachable) usually mean "offline";
# retry them only this many times in total so an offline run fails fast.
MAX_CONNECT_ATTEMPTS = 3
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_SIZE = 1 << 20
_USER_AGENT = 'qcgan-dnnlib/1.0 (+python urllib)'


def _offline() -> bool:
    value = os.environ.get('DNNLIB_OFFLINE', '').strip().lower()
    return value not in ('', '0', 'false', 'no', 'off')


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True for ``scheme://host/...`` strings (``file://`` only if allowed)."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    try:
        parsed = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    if not parsed.scheme or not re.fullmatch(r'[A-Za-z][A-Za-z0-9+.\-]*', parsed.scheme):
        return False
    if parsed.scheme.lower() == 'file':
        return bool(allow_file_urls and parsed.path)
    return bool(parsed.netloc)


def _file_url_to_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    netloc = parsed.netloc
    path = parsed.path
    if netloc and netloc.lower() != 'localhost':
        path = '//' + netloc + path  # UNC-style file://server/share/...
    return urllib.request.url2pathname(path)


def _safe_basename(url: str) -> str:
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    name = re.sub(r'[^0-9A-Za-z._-]', '_', name).strip('.')
    if not name:
        name = 'download'
    return name[-128:]


def url_cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """Where ``open_url`` stores (and first looks for) the download of ``url``."""
    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    return os.path.join(os.fspath(cache_dir), f'{url_md5}_{_safe_basename(url)}')


def _find_cached(url: str, cache_dir: str) -> Optional[str]:
    expected = url_cache_path(url, cache_dir)
    if os.path.isfile(expected):
        return expected
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    # Any '<md5>_<name>' file counts (e.g. written by another dnnlib version).
    matches = sorted(p for p in glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')) if os.path.isfile(p))
    return matches[0] if matches else None


class _Transient(Exception):
    """Internal: a failure worth retrying."""


class _Permanent(Exception):
    """Internal: a failure retrying cannot fix."""


def _one_line(text: str) -> str:
    return ' '.join(str(text).split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f'HTTP {exc.code} {exc.reason}'
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return _one_line(reason if isinstance(reason, str) else f'{type(reason).__name__}: {reason}')
    return _one_line(f'{type(exc).__name__}: {exc}')


def _classify(exc: BaseException) -> Tuple[str, str]:
    """('http'|'connect'|'transfer'|'permanent', description)."""
    desc = _describe(exc)
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code in (408, 425, 429) or 500 <= exc.code < 600:
            return 'http', desc
        return 'permanent', desc
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, (socket.timeout, TimeoutError)):
            return 'transfer', desc
        return 'connect', desc
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return 'connect', desc
    return 'transfer', desc


_DRIVE_HOSTS = ('drive.google.com', 'docs.google.com', 'drive.usercontent.google.com')


def _google_drive_confirm_url(page: str, base_url: str) -> Optional[str]:
    """Follow-up URL hidden in a Google Drive 'cannot scan for viruses' page."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S | re.I)
    if form is None:
        form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S | re.I)
    if form is not None:
        action = html.unescape(form.group(1))
        fields = []
        for tag in re.findall(r'<input[^>]*>', form.group(2), re.I):
            if not re.search(r'type="hidden"', tag, re.I):
                continue
            name = re.search(r'name="([^"]*)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name:
                fields.append((html.unescape(name.group(1)), html.unescape(value.group(1)) if value else ''))
        target = urllib.parse.urljoin(base_url, action)
        if fields:
            target += ('&' if '?' in target else '?') + urllib.parse.urlencode(fields)
        return target
    link = re.search(r'href="(/uc\?export=download[^"]*confirm=[^"]*)"', page)
    if link is not None:
        return urllib.parse.urljoin(base_url, html.unescape(link.group(1)))
    return None


def _fetch(url: str, sink, verbose: bool, label: str, timeout: float) -> None:
    """Stream ``url`` into the binary file object ``sink``. Raises on failure."""
    current = url
    for _hop in range(4):
        request = urllib.request.Request(current, headers={'User-Agent': _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            host = (urllib.parse.urlparse(response.geturl()).hostname or '').lower()
            content_type = (response.headers.get('Content-Type') or '').lower()
            if host in _DRIVE_HOSTS and content_type.startswith('text/html'):
                page = response.read(1 << 20).decode('utf-8', errors='replace')
                if 'quota exceeded' in page.lower():
                    raise _Permanent('Google Drive download quota exceeded, try again later')
                follow = _google_drive_confirm_url(page, response.geturl())
                if follow is None or follow == current:
                    raise _Permanent('Google Drive returned an HTML page instead of the file')
                current = follow
                continue

            length = response.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
            progress = None
            if verbose:
                try:
                    from tqdm import tqdm
                    progress = tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024,
                                    desc=f'Downloading {label}', leave=False)
                except Exception:  # tqdm missing or unusable
                    print(f'Downloading {current} ...', end='', flush=True)
            received = 0
            try:
                while True:
                    chunk = response.read(_CHUNK_SIZE)
                    if not chunk:
                        break
                    sink.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
            finally:
                if progress is not None:
                    progress.close()
                elif verbose:
                    print(' done' if total is None or received == total else ' failed', flush=True)
            if total is not None and received != total:
                raise _Transient(f'incomplete transfer: got {received} of {total} bytes')
            return
    raise _Permanent('too many Google Drive confirmation pages')


def _download_with_retries(url: str, make_sink, discard_sink, num_attempts: int, verbose: bool,
                           timeout: float):
    """Run ``_fetch`` with retries. ``make_sink()`` gives a fresh sink for each
    attempt and ``discard_sink(sink)`` throws a failed one away. Returns the
    sink of the successful attempt, or raises ``_Permanent(reason)``."""
    label = _safe_basename(url)
    connect_failures = 0
    last_reason = 'no attempt made'
    for attempt in range(num_attempts):
        sink = make_sink()
        try:
            _fetch(url, sink, verbose, label, timeout)
            return sink
        except _Permanent as exc:
            discard_sink(sink)
            raise _Permanent(_one_line(exc)) from None
        except _Transient as exc:
            discard_sink(sink)
            last_reason = _one_line(exc)
        except (urllib.error.URLError, OSError, ValueError, EOFError, http.client.HTTPException) as exc:
            discard_sink(sink)
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # release the error response's connection
            if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
                raise _Permanent(_describe(exc)) from None  # e.g. malformed URL
            kind, last_reason = _classify(exc)
            if kind == 'permanent':
                raise _Permanent(last_reason) from None
            if kind == 'connect':
                connect_failures += 1
                if connect_failures >= MAX_CONNECT_ATTEMPTS:
                    break
        except BaseException:
            discard_sink(sink)
            raise
        if attempt + 1 < num_attempts:
            time.sleep(min(RETRY_BACKOFF_BASE_S * (2 ** attempt), RETRY_BACKOFF_CAP_S))
    raise _Permanent(f'{last_reason} (after {attempt + 1} attempt{"s" if attempt else ""})')


def _download_error(url: str, cache_path: Optional[str], reason: str) -> DownloadError:
    reason = _one_line(reason)
    if cache_path is not None:
        where = (f'download it by other means and save it as "{cache_path}" so it is found next time, '
                 f'or pass a local file path instead of the URL')
    else:
        where = 'download it by other means and pass the local file path instead of the URL'
    message = f'Could not download "{url}": {reason}. To use it offline, {where}.'
    return DownloadError(message, url=url, cache_path=cache_path, reason=reason)


def open_url(url, cache_dir: Optional[str] = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, timeout: float = None):
    """Open a local path, ``file://`` URL or ``http(s)://`` URL for binary reading.

    * Local paths and ``file://`` URLs are opened directly (or returned as a
      path with ``return_filename=True``); a missing file raises
      ``FileNotFoundError``.
    * http(s) URLs are cached as ``<cache_dir>/<md5(url)>_<name>``, where
      ``cache_dir`` defaults to ``make_cache_dir_path('downloads')``. A cached
      copy is used without touching the network. Downloads go to a temp file
      in the cache folder and are renamed into place only when complete.
    * ``$DNNLIB_OFFLINE=1`` allows cached copies only.
    * Failure raises ``DownloadError`` (an ``OSError``) with a one-line
      message that names the URL, the reason and the cache path to fill by
      hand.
    * ``cache=False`` downloads into memory and returns an ``io.BytesIO``
      (incompatible with ``return_filename=True``).
    """
    if num_attempts < 1:
        raise ValueError('num_attempts must be at least 1')
    if timeout is None:
        timeout = DOWNLOAD_TIMEOUT_S
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if isinstance(url, bytes):
        url = os.fsdecode(url)
    if not isinstance(url, str):
        raise TypeError(f'open_url() expects a path or URL string, got {type(url).__name__}')

    # Local files ---------------------------------------------------------
    if not is_url(url, allow_file_urls=True):
        return _open_local(url, return_filename)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme == 'file':
        return _open_local(_file_url_to_path(url), return_filename, shown_as=url)
    if scheme not in ('http', 'https'):
        raise ValueError(f'open_url() cannot fetch "{url}": unsupported URL scheme "{scheme}" '
                         f'(use http, https, file:// or a local path)')

    # Uncached download -----------------------------------------------------
    if not cache:
        if return_filename:
            raise ValueError('open_url(): return_filename=True requires cache=True')
        if _offline():
            raise _download_error(url, None, 'network access is disabled by DNNLIB_OFFLINE')
        try:
            buffer = _download_with_retries(url, io.BytesIO, lambda sink: None, num_attempts, verbose, timeout)
        except _Permanent as exc:
            raise _download_error(url, None, str(exc)) from None
        buffer.seek(0)
        return buffer

    # Cached download ------------------------------------------------------
    cache_dir = make_cache_dir_path('downloads') if cache_dir is None else os.fspath(cache_dir)
    cache_path = url_cache_path(url, cache_dir)
    cached = _find_cached(url, cache_dir)
    if cached is not None:
        return cached if return_filename else open(cached, 'rb')
    if _offline():
        raise _download_error(url, cache_path, 'network access is disabled by DNNLIB_OFFLINE and there is no cached copy')

    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as exc:
        raise _download_error(url, cache_path, f'cannot create cache folder: {_describe(exc)}') from None

    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()

    def make_sink():
        fd, tmp_path = tempfile.mkstemp(prefix=f'.tmp-{url_md5}-', suffix='.part', dir=cache_dir)
        os.close(fd)
        return open(tmp_path, 'wb')  # reopened by path so that sink.name is the path

    def discard_sink(sink):
        try:
            sink.close()
        finally:
            try:
                os.unlink(sink.name)
            except OSError:
                pass

    try:
        sink = _download_with_retries(url, make_sink, discard_sink, num_attempts, verbose, timeout)
    except _Permanent as exc:
        raise _download_error(url, cache_path, str(exc)) from None
    except OSError as exc:  # temp file could not be created in the cache folder
        raise _download_error(url, cache_path, _describe(exc)) from None

    try:
        sink.flush()
        os.fsync(sink.fileno())
        sink.close()
        os.replace(sink.name, cache_path)
    except BaseException:
        discard_sink(sink)
        raise
    return cache_path if return_filename else open(cache_path, 'rb')


def _open_local(path: str, return_filename: bool, shown_as: Optional[str] = None):
    if not os.path.isfile(path):
        what = 'No such file or directory' if not os.path.exists(path) else 'Not a regular file'
        if shown_as is not None:
            what += f' (opened as {shown_as})'
        raise FileNotFoundError(errno.ENOENT, what, path)
    return path if return_filename else open(path, 'rb')


# ------------------------------------------------------------------------------------------
# Atomic file writes


_umask_lock = threading.Lock()


def _current_umask() -> int:
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make a rename or creation inside `folder` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """Open a temporary file next to `path` for writing; on success rename it over `path`.

    Readers never see a half-written file, and a failure (exception, full disk, Ctrl-C)
    leaves any previous version of `path` untouched and removes the temporary file.
    The file gets the normal permissions of a new file (0666 & ~umask), and the folder is
    fsynced after the rename so the new name survives a crash. A temporary file left by a
    killed process is named `.NAME.*.tmp`; `remove_stale_tmp_files` cleans those up.
    """
    assert mode in ('w', 'wb'), 'atomic_write only supports "w" and "wb"'
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **({'encoding': 'utf-8'} if mode == 'w' else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def describe_os_error(err: OSError) -> str:
    """A short reason for a failed write: "the disk is full", "permission denied", ..."""
    if err.errno == errno.ENOSPC:
        return 'the disk is full; free space and try again'
    if err.errno == errno.EDQUOT:
        return 'the disk quota is exceeded'
    if err.errno in (errno.EACCES, errno.EPERM):
        return 'permission denied'
    if err.errno == errno.EROFS:
        return 'the file system is read-only'
    return err.strerror or str(err)


def check_output_dir(folder: str, what: str = '--outdir') -> None:
    """Raise `OSError` with one clear line unless `folder` exists (or can be created) and is writable.

    Creates nothing: the nearest existing ancestor must be a writable folder.
    """
    folder = os.path.abspath(os.fspath(folder))
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OSError(errno.ENOTDIR, f'{what} "{folder}": "{probe}" is not a folder')
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f'{what} "{folder}": cannot write to "{probe}" (permission denied); choose another folder')


def check_output_path(path: str, what: str = '--dest') -> None:
    """`check_output_dir` for the folder of the file `path`; also refuses an existing folder at `path`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, f'{what} "{path}" is a folder; give a file name')
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OSError(errno.EACCES, f'{what} "{path}": the file is not writable (permission denied)')
    check_output_dir(os.path.dirname(os.path.abspath(path)), what)


_STALE_TMP_RE = re.compile(r'^\..+\.tmp$')


def remove_stale_tmp_files(folder: str) -> List[str]:
    """Delete the `.NAME.*.tmp` files that `atomic_write` left in `folder` when its process was killed.

    Call it only where no other process is writing (at the start or resume of a run). Returns the
    removed paths.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if _STALE_TMP_RE.match(name) and os.path.isfile(path):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


# ------------------------------------------------------------------------------------------
# Run directories


def _run_ids(outdir: str) -> List[int]:
    """Leading numbers of the run folders in `outdir`, and of the `.runid-N` reservations."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = re.match(r'^\.runid-(\d+)$', name)
            if m is not None:
                ids.append(int(m.group(1)))
                continue
            m = re.match(r'^\d+', name)
            if m is not None and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(m.group()))
    return ids


def next_run_dir(outdir: str, desc: str) -> str:
    """`outdir/NNNNN-desc` with NNNNN one more than the largest leading number among the folders
    already in `outdir` (the NVlabs run-folder convention). Does not create the folder; use
    `make_run_dir` to create one safely when several runs start at once."""
    return os.path.join(outdir, f'{max(_run_ids(outdir), default=-1) + 1:05d}-{desc}')


def make_run_dir(outdir: str, desc: str, max_attempts: int = 1000) -> str:
    """Create and return a new run folder `outdir/NNNNN-desc` atomically.

    The number is reserved with an exclusively created marker file `outdir/.runid-NNNNN` (removed
    once the folder exists), so runs started at the same moment into one `outdir` get distinct
    numbers and distinct folders, whatever their descriptions.
    """
    os.makedirs(outdir, exist_ok=True)
    for _ in range(max_attempts):
        run_id = max(_run_ids(outdir), default=-1) + 1
        marker = os.path.join(outdir, f'.runid-{run_id:05d}')
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        try:
            # A run that held this number may have made its folder and released the marker meanwhile.
            if any(re.match(rf'^0*{run_id}(?!\d)', name) and os.path.isdir(os.path.join(outdir, name))
                   for name in os.listdir(outdir)):
                continue
            path = os.path.join(outdir, f'{run_id:05d}-{desc}')
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            fsync_dir(outdir)
            return path
        finally:
            os.remove(marker)
    raise OSError(errno.EEXIST, f'could not reserve a new run folder in "{outdir}" after {max_attempts} attempts')


def continued_run_desc(ckpt_path: str) -> str:
    """Run description for continuing the run that wrote `ckpt_path`: `<desc>-continued`. A continued
    run continued again stays `<desc>-continued` (no `-continued-continued` chains): the run number
    already orders the folders, and each resumed `stats.jsonl` starts with the history it continues."""
    desc = os.path.basename(os.path.dirname(os.path.abspath(ckpt_path))).split('-', 1)[-1]
    while desc.endswith('-continued'):
        desc = desc[:-len('-continued')]
    return desc + '-continued'


def carry_over_jsonl(old_path: str, new_path: str, position: Callable[[dict], float], limit: float) -> int:
    """Start `new_path` (a resumed run's JSON-lines history, e.g. stats.jsonl) with the lines of
    `old_path` (the run it continues) whose `position(fields)` is at most `limit` (the checkpoint's
    kimg or step), so one file reads as one history. Lines after the checkpoint (which the resumed run
    repeats), torn or unreadable lines are dropped. Nothing is written when `old_path` does not exist or
    when `new_path` is another file that already exists (that folder has its own history); continuing
    in the same folder rewrites the file. Atomic. Returns the number of lines carried over."""
    if not os.path.isfile(old_path):
        return 0
    kept = []
    with open(old_path, 'rt', encoding='utf-8') as f:
        for line in f:
            try:
                pos = float(position(json.loads(line)))
            except (ValueError, KeyError, TypeError, IndexError):
                continue
            if pos <= limit + 1e-6:
                kept.append(line if line.endswith('\n') else line + '\n')
    if os.path.abspath(old_path) != os.path.abspath(new_path) and os.path.isfile(new_path):
        return 0
    with atomic_write(new_path, 'w') as f:
        f.writelines(kept)
    return len(kept)


def remove_unused_run_dir(run_dir: str, setup_files=('training_options.json', 'log.txt')) -> bool:
    """Delete the folder of a run that failed to start: one holding nothing but `setup_files` (and
    temporary files). Folders with any result are kept. Closes a `Logger` of this process that
    writes into the folder. Returns True if the folder was removed."""
    try:
        names = [n for n in os.listdir(run_dir) if not n.endswith('.tmp')]
    except OSError:
        return False
    if not set(names) <= set(setup_files):
        return False
    logger = sys.stdout
    if isinstance(logger, Logger) and logger.file is not None and \
            os.path.dirname(os.path.abspath(logger.file.name)) == os.path.abspath(run_dir):
        logger.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f'Removed the unused run folder {run_dir}')
    return True
