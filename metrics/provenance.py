"""Provenance: which files and settings produced a number, recorded next to it.

Every output that holds numbers (invert.py's `results.json`, `metric-*.jsonl`, the encoder's
`val.jsonl`, the restoration benchmark's files, each run's options file) carries a
`provenance` dict built here:

    {'network':   {'spec': 'ffhq256', 'path': '/abs/file.pkl', 'sha256': '3f2a...'(16 hex)},
     'lpips':     [{'net': 'alex', 'backbone': 'pretrained'|'random'|'file', 'path', 'sha256'}],
     'detectors': [{'name': 'inception', 'source': URL or path, 'path', 'sha256', 'official': bool}],
     'method': 'pti', 'settings': {...}, 'seed': 0,
     'caveats': ['LPIPS from a random backbone: not comparable with published LPIPS', ...]}

A number computed with a random LPIPS backbone or a detector that is not the official file is
"marked": `caveats` is non-empty, and `mark(text, record)` appends them to printed lines.
Hashes are SHA-256 prefixes of the file bytes (cached per path, size and mtime).
"""

import hashlib
import os

import dnnlib
import dnnlib.zoo
from metrics import metric_utils
from metrics import restoration

__all__ = ['HASH_PREFIX', 'sha256_prefix', 'file_record', 'network_record', 'lpips_record', 'detector_record',
           'caveats', 'build', 'mark']

HASH_PREFIX = 16
_hash_cache = dict()

def sha256_prefix(path, length=HASH_PREFIX):
    """First `length` hex digits of the SHA-256 of the file at `path` (None if it is not a file)."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    if not os.path.isfile(path):
        return None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key][:length]

def file_record(path):
    """`{path (absolute), sha256}` of a local file, or `{path, sha256: None}` if it is not one."""
    if path is None:
        return None
    path = os.fspath(path)
    return dict(path=os.path.abspath(path) if os.path.exists(path) else path, sha256=sha256_prefix(path))

def _local_file_of(spec):
    """The local file behind a network spec: a path, a file:// URL, a zoo name or URL already cached."""
    spec = str(spec)
    if os.path.isfile(spec):
        return spec
    if spec in dnnlib.zoo.MANUAL_FILES:
        path = dnnlib.zoo.manual_path(spec)
        return path if os.path.isfile(path) else None
    url = spec
    if dnnlib.util.is_url(url, allow_file_urls=True):
        if url.lower().startswith('file://'):
            path = dnnlib.util._file_url_to_path(url)  # pylint: disable=protected-access
            return path if os.path.isfile(path) else None
        path = dnnlib.util.url_cache_path(url)
        return path if os.path.isfile(path) else None
    return None

def network_record(spec, resolved=None):
    """`{spec, path, sha256}` for a network given as path, URL, zoo name or `init:PRESET`;
    `resolved` is the URL or path the spec stands for (`legacy.resolve_network_spec`), if known."""
    if spec is None:
        return None
    spec = str(spec)
    if spec.startswith('init:'):
        return dict(spec=spec, path=None, sha256=None, note='freshly initialised (random weights)')
    path = _local_file_of(spec) or (_local_file_of(resolved) if resolved else None)
    record = dict(spec=spec, path=None, sha256=None)
    if path is not None:
        record.update(file_record(path))
    return record

def lpips_record(backbone, net='alex'):
    """LPIPS settings: `backbone` is 'pretrained' / None (torchvision ImageNet weights from torch hub's
    cache), 'random' (random backbone: tests and demos only), a file path, or an LPIPS module of
    `metrics.restoration` (whose `backbone` attribute says which)."""
    while hasattr(backbone, 'inner') and hasattr(backbone, 'forward'):
        backbone = backbone.inner  # wrappers (e.g. inversion.common.MinSizeLPIPS)
    if hasattr(backbone, 'net') and hasattr(backbone, 'forward'):
        net = getattr(backbone, 'net', net)
        backbone = getattr(backbone, 'backbone', 'pretrained')
    default = restoration.lpips_backbone_path(net) if net in restoration.LPIPS_BACKBONE_URLS else None
    if backbone is not None and default is not None and backbone != 'random' and \
            os.path.abspath(os.fspath(backbone)) == os.path.abspath(default):
        backbone = 'pretrained'
    if backbone in (None, 'pretrained'):
        path = None
        if net in restoration.LPIPS_BACKBONE_URLS:
            path = restoration.lpips_backbone_path(net)
        return dict(net=net, backbone='pretrained', path=path, sha256=sha256_prefix(path) if path else None)
    if backbone == 'random':
        return dict(net=net, backbone='random', path=None, sha256=None)
    return dict(net=net, backbone='file', **file_record(backbone))

def detector_record(source, name=None):
    """A feature detector (Inception / VGG16) given as its URL or a local path."""
    source = os.fspath(source)
    official_name = metric_utils.detector_name_of(source)
    official = official_name is not None
    name = name or official_name
    path = metric_utils._local_path(source)  # pylint: disable=protected-access
    if path is None:  # http(s): the cached download, if any
        path = dnnlib.util.url_cache_path(source)
    record = dict(name=name, source=source, path=None, sha256=None, official=official)
    if path is not None and os.path.isfile(path):
        record.update(path=os.path.abspath(path), sha256=sha256_prefix(path))
    return record

def caveats(record):
    """Human-readable reasons the numbers of `record` are not comparable with published ones."""
    notes = []
    for lp in record.get('lpips') or []:
        if lp and lp.get('backbone') == 'random':
            notes.append(f'LPIPS-{lp.get("net")} from a random backbone: not comparable with published LPIPS')
    for det in record.get('detectors') or []:
        if det and not det.get('official'):
            notes.append(f'{det.get("name") or "feature"} detector "{det.get("source")}" (sha256 {det.get("sha256")}) is not '
                         f'the official download: a stand-in unless it is an exact copy; scores not comparable otherwise')
    net = record.get('network') or {}
    if net.get('note'):
        notes.append(f'network {net.get("spec")}: {net["note"]}')
    return notes

def build(network=None, lpips=None, detectors=None, method=None, settings=None, seed=None, network_resolved=None, **extra):
    """The provenance dict. `network`: spec; `lpips`: list of LPIPS modules / backbone names
    (or (backbone, net) pairs); `detectors`: list of URLs / paths (or detector records)."""
    lp = []
    for item in lpips or []:
        if item is None:
            continue
        lp.append(lpips_record(*item) if isinstance(item, tuple) else lpips_record(item))
    dets = [d if isinstance(d, dict) else detector_record(d) for d in (detectors or []) if d is not None]
    record = dict(network=network_record(network, network_resolved) if not isinstance(network, dict) else network, lpips=lp,
                  detectors=dets, method=method, settings=settings, seed=seed)
    record.update(extra)
    record['caveats'] = caveats(record)
    return record

def mark(text, record):
    """`text` followed by ` [caveat; caveat]` when the record has caveats."""
    notes = caveats(record) if record else []
    return f'{text} [{"; ".join(notes)}]' if notes else text
