"""Shared machinery of the generative metrics: options, feature detectors, feature statistics.

The pipeline follows stylegan2-ada-pytorch so that numbers are comparable with published ones:

* Images reach a detector as uint8-range NCHW RGB tensors; grayscale is repeated to 3 channels.
  Generated images are quantised with `(img * 127.5 + 128).clamp(0, 255).to(torch.uint8)`.
* The generator is called in chunks of `batch_gen` (4) images with `truncation_psi=1`,
  `noise_mode='random'`, z ~ N(0, I) and labels drawn at random from the dataset.
* Dataset features are sharded over processes (process `rank` of `num_gpus` takes items
  `(i * num_gpus + rank) % N`) and gathered on every process, interleaved back into item order.
* Dataset statistics are cached in `make_cache_dir_path('gan-metrics', ...)` under
  `<dataset name>-<detector name>-<md5>.pkl`, where the md5 covers the dataset kwargs, the detector
  (URL or file), the detector kwargs and the statistics kwargs (including `max_items`, which the
  reference leaves out of the key). Files are written atomically. Generator statistics are
  never cached.

Feature detectors are the NVlabs networks (section "detectors" below). They are loaded with
`dnnlib.util.open_url` (download + cache) from their official URLs, or from a local file or URL
given per detector in `MetricOptions(detector_overrides={'inception': PATH, 'vgg16': PATH})`
(calc_metrics.py: `--detector-inception`, `--detector-vgg`), or in the environment variables
`QCGAN_DETECTOR_INCEPTION` / `QCGAN_DETECTOR_VGG16` (which also reach metrics run by train.py). Both the TorchScript `.pt` files of
stylegan2-ada-pytorch and the pickled `.pkl` files of stylegan3 are accepted.

Quality-conditioned (QC) generators, which take a quality code `q` (`G.q_dim > 0`,
`G(z, c, q=...)`), are evaluated in sharp mode (`q = 0`) by default; `MetricOptions(q_mode=
'degraded')` draws `q ~ N(0, I)` per image instead, and `G_kwargs=dict(q=tensor)` fixes q. Only
the generated side changes: the real statistics come from whatever `dataset_kwargs` describes.
"""

import copy
import hashlib
import io
import os
import pickle
import sys
import time
import warnings

import numpy as np
import torch

import dnnlib
from torch_utils import safe_pickle

#----------------------------------------------------------------------------
# Detectors.

DETECTOR_URLS = {
    'inception': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt',
    'vgg16':     'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt',
}
# The same networks as pickles (stylegan3); accepted wherever a detector file is taken.
DETECTOR_PKL_URLS = {
    'inception': 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl',
    'vgg16':     'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl',
}
INCEPTION_URL = DETECTOR_URLS['inception']
VGG16_URL = DETECTOR_URLS['vgg16']

# Aliases accepted as keys of `detector_overrides`.
# Environment variables naming a local detector file (used when no explicit override is given;
# handy for offline clusters and for metrics evaluated inside train.py).
DETECTOR_ENV_VARS = {'inception': 'QCGAN_DETECTOR_INCEPTION', 'vgg16': 'QCGAN_DETECTOR_VGG16'}
_DETECTOR_ALIASES = {'inception': 'inception', 'inception-2015-12-05': 'inception', 'vgg': 'vgg16', 'vgg16': 'vgg16'}
_CLI_OPTION = {'inception': '--detector-inception', 'vgg16': '--detector-vgg'}


class MetricDataError(ValueError, OSError):
    """The real images cannot serve the metric (wrong size, too few, labels that do not match the
    network); the message is one line that says how to fix it."""

class DetectorError(dnnlib.DownloadError):
    """A feature detector could not be obtained or loaded (one-line message with the fix)."""


def detector_name_of(url):
    """'inception' / 'vgg16' for the official URLs (either format), else None."""
    for name, official in list(DETECTOR_URLS.items()) + list(DETECTOR_PKL_URLS.items()):
        if url == official:
            return name
    return None


def get_feature_detector_name(url):
    """Short name for cache file names: the file name without extension (`inception-2015-12-05`)."""
    base = os.path.basename(str(url).replace('\\', '/').rstrip('/').split('?')[0])
    name = os.path.splitext(base)[0]
    return ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in name) or 'detector'


def _local_path(url):
    """Local file path for a plain path or file:// URL, else None."""
    url = os.fspath(url)
    if not dnnlib.util.is_url(url, allow_file_urls=True):
        return url
    if url.lower().startswith('file://'):
        return dnnlib.util._file_url_to_path(url)
    return None


def _load_torchscript(data):
    """`torch.jit.load` of TorchScript archive bytes (the one callable a detector pickle may name)."""
    if isinstance(data, io.BytesIO):
        data = data.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit deprecation notice
        return torch.jit.load(io.BytesIO(bytes(data)), map_location='cpu')


class _DetectorUnpickler(safe_pickle.RestrictedUnpickler):
    """Detector pickles hold TorchScript modules: tensors plus TorchScript archives, loaded with
    `torch.jit.load` (TorchScript is not Python; loading it runs no code from the file). Any other
    callable needs the user's opt-in (`--trust-pickle`)."""
    what = 'a feature detector file'
    extra_globals = {
        ('torch.jit', 'load'): _load_torchscript,
        ('torch.jit._serialization', 'load'): _load_torchscript,
        ('_io', 'BytesIO'): io.BytesIO,
        ('io', 'BytesIO'): io.BytesIO,
    }


def _load_detector_file(f, shown_as):
    """A detector from an open binary file: TorchScript archive (zip) or a pickle of a TorchScript
    module (the stylegan3 `.pkl` detectors). Pickles naming other code are refused unless trusted."""
    data = f.read()
    if data[:4] == b'PK\x03\x04':  # zip archive: TorchScript (.pt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', FutureWarning)  # torch.jit deprecation notice
                return torch.jit.load(io.BytesIO(data), map_location='cpu')
        except Exception as err:  # pylint: disable=broad-except
            reason = ' '.join(str(err).split())[:300]
            raise DetectorError(f'Cannot load feature detector "{shown_as}": it is a zip archive but not a TorchScript '
                                f'module ({type(err).__name__}: {reason})', url=shown_as) from None
    try:
        obj = _DetectorUnpickler(io.BytesIO(data)).load()
    except dnnlib.util.UntrustedFileError as err:
        raise DetectorError(f'Cannot load feature detector "{shown_as}": {err}', url=shown_as) from None
    except Exception as err:  # pylint: disable=broad-except
        reason = ' '.join(str(err).split())[:300]
        raise DetectorError(f'Cannot load feature detector "{shown_as}": neither a TorchScript .pt nor a pickle '
                            f'({type(err).__name__}: {reason}); re-download it', url=shown_as) from None
    if isinstance(obj, dict):  # tolerate {'model': module}-style wrappers
        for key in ('model', 'detector', 'module'):
            if isinstance(obj.get(key), torch.nn.Module):
                obj = obj[key]
                break
    if not isinstance(obj, torch.nn.Module):
        raise DetectorError(f'Cannot load feature detector "{shown_as}": the pickle holds a {type(obj).__name__}, '
                            f'not a torch.nn.Module', url=shown_as)
    return obj


_feature_detector_cache = dict()

def get_feature_detector(url, device=torch.device('cpu'), num_gpus=1, rank=0, verbose=False):
    """Load (once per (url, device) and process) the detector network at `url`.

    `url` is an http(s) URL (downloaded through `dnnlib.util.open_url` and cached), a file://
    URL or a local path; TorchScript archives and pickles are both accepted. With several
    processes rank 0 loads first (so only it downloads). Raises `DetectorError`.
    """
    assert 0 <= rank < num_gpus
    url = os.fspath(url)
    device = torch.device(device)
    local = _local_path(url)
    key = (url, str(device))
    if local is not None and os.path.isfile(local):
        st = os.stat(local)
        key += (st.st_size, st.st_mtime_ns)
    if key in _feature_detector_cache:
        return _feature_detector_cache[key]

    is_leader = (rank == 0)
    if not is_leader and num_gpus > 1:
        torch.distributed.barrier()  # the leader downloads first
    try:
        detector = _open_detector(url, local, verbose and is_leader)
    finally:
        if is_leader and num_gpus > 1:
            torch.distributed.barrier()
    detector = detector.eval()
    for param in detector.parameters():  # ScriptModules lack requires_grad_()
        param.requires_grad_(False)
    detector = detector.to(device)
    _feature_detector_cache[key] = detector
    return detector


def _open_detector(url, local, verbose):
    name = detector_name_of(url)
    hint = ''
    if name is not None:
        hint = (f' Alternatively pass a local copy of the detector with {_CLI_OPTION[name]} PATH '
                f'(or ${DETECTOR_ENV_VARS[name]}=PATH, or MetricOptions(detector_overrides={{"{name}": PATH}})).')
    if local is not None and not os.path.isfile(local):
        raise DetectorError(f'Feature detector file not found: "{local}"' +
                            (f' (given for "{url}")' if local != url else '') +
                            '; pass the path of an existing .pt or .pkl detector file', url=url)
    try:
        with dnnlib.util.open_url(url, verbose=verbose) as f:
            return _load_detector_file(f, url)
    except DetectorError:
        raise
    except dnnlib.DownloadError as err:
        raise DetectorError(f'{err}{hint}', url=err.url, cache_path=err.cache_path, reason=err.reason) from None
    except OSError as err:
        raise DetectorError(f'Cannot read feature detector "{url}": {err}.{hint}', url=url) from None

#----------------------------------------------------------------------------
# Options.

class MetricOptions:
    """Everything a metric needs to know about what to evaluate and where.

    Args:
        G:                  Generator (moved to `device` by the metrics; not modified).
        G_kwargs:           Extra keyword arguments for `G(z, c, ...)` (e.g. `dict(q=q)`).
        dataset_kwargs:     `dnnlib.util.construct_class_by_name` kwargs of the real dataset.
        num_gpus, rank:     Process count and this process's rank (torch.distributed must be up
                            when num_gpus > 1).
        device:             Device of this process (default: cuda:rank if available, else cpu).
        progress:           `ProgressMonitor` (default: a silent one).
        cache:              Use the dataset-statistics cache.
        detector_overrides: `{'inception'|'vgg16'|official URL: local path or URL}`; without one,
                            `$QCGAN_DETECTOR_INCEPTION` / `$QCGAN_DETECTOR_VGG16` are used if set.
        q_mode:             For QC generators: None (default: sharp when `G.q_dim > 0`),
                            'sharp' (q = 0) or 'degraded' (q ~ N(0, I) per image).
        data_loader_kwargs: DataLoader options for the real images (default: 3 workers and pinned
                            memory on CUDA, in-process loading on CPU).
    """

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None, progress=None,
                 cache=True, detector_overrides=None, q_mode=None, data_loader_kwargs=None):
        assert 0 <= rank < num_gpus
        if q_mode not in (None, 'sharp', 'degraded'):
            raise ValueError(f'q_mode must be None, "sharp" or "degraded", got {q_mode!r}')
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs)
        self.dataset_kwargs = dnnlib.EasyDict(copy.deepcopy(dict(dataset_kwargs or {})))
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = progress.sub() if progress is not None and rank == 0 else ProgressMonitor()
        self.cache = cache
        self.detector_overrides = {}
        for key, value in (detector_overrides or {}).items():
            if value is None:
                continue
            key = _DETECTOR_ALIASES.get(key, key)
            if key not in DETECTOR_URLS and not dnnlib.util.is_url(key, allow_file_urls=True):
                raise ValueError(f'detector_overrides: unknown detector "{key}"; use one of {", ".join(DETECTOR_URLS)} '
                                 f'or an official detector URL')
            self.detector_overrides[key] = os.fspath(value)
        self.q_mode = q_mode
        self.data_loader_kwargs = data_loader_kwargs
        self._dataset = None
        self.detectors_used = {}  # official URL -> URL or path actually loaded (provenance)

    def resolve_detector(self, url):
        """The URL or path actually loaded for the official detector `url` (overrides applied)."""
        self.detectors_used[url] = resolved = self._resolve_detector(url)
        return resolved

    def _resolve_detector(self, url):
        if url in self.detector_overrides:
            return self.detector_overrides[url]
        name = detector_name_of(url)
        if name is not None and name in self.detector_overrides:
            return self.detector_overrides[name]
        if name is not None and os.environ.get(DETECTOR_ENV_VARS[name]):
            return os.environ[DETECTOR_ENV_VARS[name]]
        return url

    def get_dataset(self):
        """The real dataset (constructed once), checked against the generator's resolution."""
        if self._dataset is None:
            self._dataset = open_dataset(self.dataset_kwargs, self.G)
        return self._dataset


def open_dataset(dataset_kwargs, G=None):
    """Construct the dataset and check its image size against `G` (one-line `MetricDataError`s)."""
    if not dataset_kwargs or 'class_name' not in dataset_kwargs:
        raise ValueError('this metric needs the real images: pass dataset_kwargs (calc_metrics.py: --data PATH)')
    kwargs = dict(dataset_kwargs)
    requested = kwargs.get('resolution', None)
    if requested is not None:
        kwargs['resolution'] = None  # checked below, with a message that names the network too
    dataset = dnnlib.util.construct_allowed_class(**kwargs, what='dataset_kwargs')
    path = dataset_kwargs.get('path', dataset.name)
    shape = dataset.image_shape
    for want, what in [(getattr(G, 'img_resolution', None), 'the network generates'), (requested, 'the metric options ask for')]:
        if want is not None and (shape[1], shape[2]) != (want, want):
            raise MetricDataError(f'Dataset "{path}" has {shape[2]}x{shape[1]} images but {what} {want}x{want} images: '
                               f'run dataset_tool.py --source {path} --dest NEW.zip --resolution {want} to resize it')
    if len(dataset) == 0:
        raise MetricDataError(f'Dataset "{path}" is empty')
    return dataset


def check_num_items(opts, num_items, min_items, metric, what='real images'):
    """Raise `MetricDataError` when fewer than `min_items` items are available for `metric`."""
    if num_items < min_items:
        path = opts.dataset_kwargs.get('path', '?')
        raise MetricDataError(f'{metric} needs at least {min_items} {what} but dataset "{path}" provides {num_items}; '
                           f'use a dataset with at least {min_items} images')

#----------------------------------------------------------------------------
# Generator calls.

def make_G_kwargs(opts, G, batch_size, device):
    """Keyword arguments for `G(z, c, **kwargs)` for a batch: `opts.G_kwargs` plus the QC code q."""
    kwargs = dict(opts.G_kwargs)
    q_dim = int(getattr(G, 'q_dim', 0) or 0)
    if 'q' in kwargs and kwargs['q'] is not None:
        q = torch.as_tensor(kwargs['q'], dtype=torch.float32, device=device)
        if q.ndim == 1:
            q = q.unsqueeze(0)
        kwargs['q'] = q.expand(batch_size, -1) if q.shape[0] == 1 else q
        return kwargs
    mode = opts.q_mode
    if q_dim > 0:
        mode = mode or 'sharp'
        if mode == 'sharp':
            kwargs['q'] = torch.zeros([batch_size, q_dim], device=device)
        else:
            kwargs['q'] = torch.randn([batch_size, q_dim], device=device)
    elif mode == 'degraded':
        raise ValueError('q_mode="degraded" needs a quality-conditioned generator (G.q_dim > 0); '
                         'this generator has no quality code')
    return kwargs


def random_labels(opts, G, batch_size):
    """Labels `[batch_size, c_dim]` drawn at random from the dataset (zeros without conditioning)."""
    if G.c_dim == 0:
        return torch.zeros([batch_size, 0], device=opts.device)
    dataset = opts.get_dataset()
    c = [dataset.get_label(np.random.randint(len(dataset))) for _ in range(batch_size)]
    c = torch.from_numpy(np.stack(c)).to(opts.device)
    if c.shape[1] != G.c_dim:
            raise MetricDataError(f'The network is conditional with {G.c_dim} classes but dataset '
                           f'"{opts.dataset_kwargs.get("path", "?")}" gives labels of size {c.shape[1]}; '
                           f'use a dataset with matching labels in dataset.json (use_labels=True)')
    return c


def to_uint8_images(img):
    """Generator output in [-1, 1] -> uint8 NCHW, as the reference quantises it."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_detector_input(images):
    """uint8 NCHW -> detector input: grayscale is repeated to 3 channels."""
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images

#----------------------------------------------------------------------------

class FeatureStats:
    """Accumulates feature vectors: all of them (`capture_all`) and/or their running sums
    (`capture_mean_cov`, float64), up to `max_items`."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features):
        if self.num_features is not None:
            assert num_features == self.num_features, f'feature size changed from {self.num_features} to {num_features}'
        else:
            self.num_features = num_features
            self.all_features = []
            self.raw_mean = np.zeros([num_features], dtype=np.float64)
            self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self):
        return (self.max_items is not None) and (self.num_items >= self.max_items)

    def append(self, x):
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2, f'features must be [N, D], got shape {x.shape}'
        if (self.max_items is not None) and (self.num_items + x.shape[0] > self.max_items):
            if self.num_items >= self.max_items:
                return
            x = x[:self.max_items - self.num_items]
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x, num_gpus=1, rank=0):
        """Append a per-process batch; with several processes the batches of all ranks are gathered
        and interleaved (rank 0's item, rank 1's item, ...), so every rank sees the same stream."""
        assert isinstance(x, torch.Tensor) and x.ndim == 2
        assert 0 <= rank < num_gpus
        if num_gpus > 1:
            parts = []
            for src in range(num_gpus):
                y = x.clone()
                torch.distributed.broadcast(y, src=src)
                parts.append(y)
            x = torch.stack(parts, dim=1).flatten(0, 1)
        self.append(x.detach().float().cpu().numpy())

    def get_all(self):
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """Mean and biased (1/N) covariance, as the reference computes them."""
        assert self.capture_mean_cov
        if self.num_items == 0:
            raise ValueError('no features were collected')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items
        cov = cov - np.outer(mean, mean)
        return mean, cov

    def save(self, pkl_file):
        state = dict(self.__dict__)
        if state.get('all_features'):
            state['all_features'] = [self.get_all()]
        with dnnlib.util.atomic_write(pkl_file, 'wb') as f:
            pickle.dump(state, f)

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, 'rb') as f:
            state = dnnlib.EasyDict(safe_pickle.RestrictedUnpickler(f).load())
        obj = FeatureStats(capture_all=state.capture_all, max_items=state.max_items)
        obj.__dict__.update(state)
        return obj

#----------------------------------------------------------------------------

class ProgressMonitor:
    """Progress of a long computation: periodic one-line reports (rank 0, when verbose) and an
    optional `progress_fn(done, total)` callback mapped into [pfn_lo, pfn_hi] of pfn_total.

    `sub(tag, num_items, rel_lo, rel_hi)` makes a child covering a slice of this one's range.
    """

    def __init__(self, tag=None, num_items=None, flush_interval=1000, verbose=False, progress_fn=None,
                 pfn_lo=0, pfn_hi=1000, pfn_total=1000, file=None):
        self.tag = tag
        self.num_items = num_items
        self.verbose = verbose
        self.flush_interval = flush_interval
        self.progress_fn = progress_fn
        self.pfn_lo = pfn_lo
        self.pfn_hi = pfn_hi
        self.pfn_total = pfn_total
        self.file = file
        self.start_time = time.time()
        self.batch_time = self.start_time
        self.batch_items = 0
        if self.progress_fn is not None:
            self.progress_fn(self.pfn_lo, self.pfn_total)

    def update(self, cur_items):
        assert (self.num_items is None) or (cur_items <= self.num_items), f'{cur_items} > {self.num_items}'
        if (cur_items < self.batch_items + self.flush_interval) and (self.num_items is None or cur_items < self.num_items):
            return
        cur_time = time.time()
        total_time = cur_time - self.start_time
        time_per_item = (cur_time - self.batch_time) / max(cur_items - self.batch_items, 1)
        if self.verbose and self.tag is not None:
            of = f'/{self.num_items}' if self.num_items is not None else ''
            print(f'{self.tag:<19s} items {cur_items:>7d}{of:<8s} time {dnnlib.util.format_time(total_time):<12s} '
                  f'ms/item {time_per_item * 1e3:.2f}', file=self.file or sys.stdout, flush=True)
        self.batch_time = cur_time
        self.batch_items = cur_items
        if (self.progress_fn is not None) and (self.num_items is not None):
            done = self.pfn_lo + (self.pfn_hi - self.pfn_lo) * (cur_items / max(self.num_items, 1))
            self.progress_fn(done, self.pfn_total)

    def sub(self, tag=None, num_items=None, flush_interval=1000, rel_lo=0, rel_hi=1):
        return ProgressMonitor(
            tag=tag, num_items=num_items, flush_interval=flush_interval, verbose=self.verbose,
            progress_fn=self.progress_fn,
            pfn_lo=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_lo,
            pfn_hi=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_hi,
            pfn_total=self.pfn_total, file=self.file)

#----------------------------------------------------------------------------
# Feature statistics of the dataset and of the generator.

def _broadcast_flag(flag, opts):
    if opts.num_gpus > 1:
        value = torch.as_tensor(float(flag), dtype=torch.float32, device=opts.device)
        torch.distributed.broadcast(tensor=value, src=0)
        flag = float(value.cpu()) != 0
    return bool(flag)


def dataset_cache_file(opts, dataset, detector_url, detector_kwargs, stats_kwargs):
    """Cache path of the dataset statistics for these options."""
    detector = opts.resolve_detector(detector_url)
    detector_id = detector
    local = _local_path(detector)
    if local is not None and os.path.isfile(local):  # a local file: its identity is path + size + mtime
        st = os.stat(local)
        detector_id = (os.path.abspath(local), st.st_size, st.st_mtime_ns)
    args = dict(dataset_kwargs=dict(opts.dataset_kwargs), detector_url=detector_id,
                detector_kwargs=dict(detector_kwargs), stats_kwargs=dict(stats_kwargs))
    md5 = hashlib.md5(repr(sorted(args.items())).encode('utf-8')).hexdigest()
    tag = f'{dataset.name}-{get_feature_detector_name(detector)}-{md5}'
    return dnnlib.make_cache_dir_path('gan-metrics', tag + '.pkl')


def _dataset_feature_batches(opts, dataset, num_items, batch_size, data_loader_kwargs):
    """Yields uint8 image batches of this rank's shard: items `(i * num_gpus + rank) % num_items`."""
    per_rank = (num_items - 1) // opts.num_gpus + 1
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range(per_rank)]
    degraded = getattr(dataset, 'has_degradation', False)
    if degraded:  # the real side is the degraded images, each keyed by its index (reproducible, cacheable)
        item_subset = [(i, i) for i in item_subset]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size, **data_loader_kwargs)
    for batch in loader:
        yield batch[1] if degraded else batch[0]


def _default_loader_kwargs(opts):
    if opts.data_loader_kwargs is not None:
        return dict(opts.data_loader_kwargs)
    if opts.device.type == 'cuda':
        return dict(pin_memory=True, num_workers=3, prefetch_factor=2)
    return dict(num_workers=0)


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                      data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """Features of (at most `max_items` of) the real images; cached. Returns a `FeatureStats`.

    `max_items` is an upper bound: a smaller dataset contributes all of its images (the
    reference semantics); metrics that need a minimum check it themselves.
    """
    dataset = opts.get_dataset()
    if data_loader_kwargs is None:
        data_loader_kwargs = _default_loader_kwargs(opts)
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)

    cache_file = None
    if opts.cache:
        cache_file = dataset_cache_file(opts, dataset, detector_url, detector_kwargs,
                                        dict(stats_kwargs, max_items=max_items))
        hit = _broadcast_flag(os.path.isfile(cache_file) if opts.rank == 0 else False, opts)
        if hit:
            try:
                return FeatureStats.load(cache_file)
            except Exception as err:  # pylint: disable=broad-except
                print(f'Warning: ignoring unreadable metric cache file "{cache_file}" ({type(err).__name__}: {err}); '
                      f'recomputing', file=sys.stderr)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    progress = opts.progress.sub(tag='dataset features', num_items=num_items, rel_lo=rel_lo, rel_hi=rel_hi)
    detector = get_feature_detector(opts.resolve_detector(detector_url), device=opts.device, num_gpus=opts.num_gpus,
                                    rank=opts.rank, verbose=progress.verbose)
    with torch.no_grad():
        for images in _dataset_feature_batches(opts, dataset, num_items, batch_size, data_loader_kwargs):
            images = to_detector_input(images.to(opts.device))
            features = detector(images, **detector_kwargs)
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            progress.update(stats.num_items)

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                        batch_gen=None, **stats_kwargs):
    """Features of `stats_kwargs['max_items']` generated images (all processes together)."""
    if batch_gen is None:
        batch_gen = min(batch_size, 4)
    assert batch_size % batch_gen == 0
    if opts.G is None:
        raise ValueError('this metric needs a generator (MetricOptions(G=...))')

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None, 'max_items is required for generator statistics'
    progress = opts.progress.sub(tag='generator features', num_items=stats.max_items, rel_lo=rel_lo, rel_hi=rel_hi)
    detector = get_feature_detector(opts.resolve_detector(detector_url), device=opts.device, num_gpus=opts.num_gpus,
                                    rank=opts.rank, verbose=progress.verbose)
    with torch.no_grad():
        while not stats.is_full():
            images = []
            for _ in range(batch_size // batch_gen):
                z = torch.randn([batch_gen, G.z_dim], device=opts.device)
                c = random_labels(opts, G, batch_gen)
                kwargs = dict(noise_mode='random')
                kwargs.update(make_G_kwargs(opts, G, batch_gen, opts.device))
                img = G(z, c, **kwargs)
                if isinstance(img, (tuple, list)):
                    img = img[0]
                images.append(to_uint8_images(img))
            images = to_detector_input(torch.cat(images))
            features = detector(images, **detector_kwargs)
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            progress.update(stats.num_items)
    return stats
