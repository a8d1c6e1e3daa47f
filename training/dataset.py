"""Training datasets: the `Dataset` base class and `ImageFolderDataset` (a folder or a .zip of images).

The contract follows stylegan2-ada-pytorch, so `training_set_kwargs` written by the reference
(`class_name='training.dataset.ImageFolderDataset', path, use_labels, max_size, xflip,
resolution, random_seed`) construct the same dataset here:

* `dataset[i]` is `(image, label)`: a uint8 `[C, H, W]` numpy array (a copy) and a float32 label
  vector (one-hot for integer class labels, empty `[0]` without labels);
* `max_size` keeps a random but reproducible subset, `xflip` appends a mirrored copy of every image;
* the object pickles into DataLoader workers (cached labels and open zip handles are dropped);
* with `degradation=` (a preset name such as `'qc_stylegan_train'`, a .json preset path, a preset
  dict or a `training.degradation_sampler.DegradationSampler`), `dataset[i]` is
  `(sharp, degraded, label)`: the stored image and a random degradation of it (both uint8
  `[C, H, W]`). The degradation is applied to the HWC image at its stored resolution before the
  x-flip, which then mirrors both. Draws come from the sampler's own stream, seeded with the
  preset's `"seed"` or else `random_seed`; inside a DataLoader worker the sampler switches to a
  per-worker stream derived from `torch.initial_seed()` (see training/degradation_sampler.py).

Bad input is reported with one-line messages that name the file and the fix. Problems with the
data itself raise `DatasetError` (a `ValueError` and an `OSError` at the same time, so both
reference-style `except IOError` and `except ValueError` catch it); a missing path raises
`FileNotFoundError`; files that are skipped produce a single `DatasetWarning`.
"""

import io
import json
import os
import warnings
import zipfile

import numpy as np
import PIL.Image
import torch

import dnnlib
from training import degradation_sampler

try:
    import pyspng
except ImportError:
    pyspng = None

#----------------------------------------------------------------------------

class DatasetError(ValueError, OSError):
    """Bad dataset content: unreadable, inconsistent or unlabelled images (one-line message)."""

class DatasetWarning(UserWarning):
    """Something in the dataset was skipped or changed (unreadable files, dropped alpha channels)."""

# Datasets with at most this many image files are checked file by file when they are opened.
VALIDATE_MAX_FILES = 20000

# Extensions that PIL registers an opener for, minus formats that are not raster images in practice
# (video containers, PostScript that needs Ghostscript, scientific stub formats).
_NON_RASTER_EXTENSIONS = {'.mpeg', '.mpg', '.eps', '.ps', '.bufr', '.grib', '.h5', '.hdf', '.wmf', '.emf', '.fit', '.fits'}

_GRAY_MODES = {'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'}
_ALPHA_MODES = {'LA', 'La', 'PA', 'RGBA', 'RGBa'}

_image_extensions = None

def image_extensions():
    """The lower-case file extensions treated as images (`.png`, `.jpg`, `.jpeg`, `.bmp`, `.webp`, ...)."""
    global _image_extensions
    if _image_extensions is None:
        PIL.Image.init()
        exts = {ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN}
        _image_extensions = frozenset(exts - _NON_RASTER_EXTENSIONS)
    return _image_extensions

def is_image_file_name(fname, extensions=None):
    """True for names with an image extension, excluding macOS resource forks (`__MACOSX/`, `._name`)."""
    fname = fname.replace('\\', '/')
    base = fname.rsplit('/', 1)[-1]
    if base.startswith('._') or fname.startswith('__MACOSX/') or '/__MACOSX/' in fname:
        return False
    return os.path.splitext(base)[1].lower() in (image_extensions() if extensions is None else extensions)

def mode_channels(mode):
    """Channels a PIL mode maps to in a dataset: 1 (grayscale) or 3 (everything else; alpha dropped)."""
    return 1 if mode in _GRAY_MODES else 3

def pil_has_alpha(image):
    return image.mode in _ALPHA_MODES or (image.mode == 'P' and 'transparency' in image.info)

def pil_to_uint8(image):
    """A PIL image -> uint8 numpy `[H, W, C]` with C = 1 (gray modes) or 3 (colour modes, alpha dropped).

    16-bit grayscale is scaled to 8 bits; float images are taken as [0, 1] when their maximum is
    at most 1, else as [0, 255].
    """
    mode = image.mode
    if mode in ('1', 'L'):
        array = np.asarray(image.convert('L'))
    elif mode in ('LA', 'La'):
        array = np.asarray(image.convert('LA'))[:, :, 0]
    elif mode.startswith('I'):
        array = np.asarray(image).astype(np.float64)
        if mode.startswith('I;16') or array.max(initial=0) > 255:
            array = array / 257
        array = np.rint(array).clip(0, 255).astype(np.uint8)
    elif mode == 'F':
        array = np.asarray(image).astype(np.float64)
        if array.max(initial=0) <= 1:
            array = array * 255
        array = np.rint(np.nan_to_num(array)).clip(0, 255).astype(np.uint8)
    elif mode == 'RGB':
        array = np.asarray(image)
    elif pil_has_alpha(image) or mode == 'P':
        array = np.asarray(image.convert('RGBA'))[:, :, :3]
    else:  # CMYK, YCbCr, LAB, HSV, ...
        array = np.asarray(image.convert('RGB'))
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return np.ascontiguousarray(array)

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset):
    """Base class: index bookkeeping (subset, mirroring), labels and item assembly.

    Subclasses implement `_load_raw_image(raw_idx)` (uint8 `[C, H, W]`) and `_load_raw_labels()`
    (None, int64 `[N]` class indices or float32 `[N, D]` vectors), and may override `close()`.
    """

    def __init__(self,
        name,                   # Name of the dataset (used in metric cache file names).
        raw_shape,              # Shape of the raw image data [N, C, H, W].
        max_size    = None,     # Keep a random subset of at most this many images (None = all).
        use_labels  = False,    # Return real labels (True) or empty label vectors (False)?
        xflip       = False,    # Append a horizontally mirrored copy of every image?
        random_seed = 0,        # Seed for choosing the max_size subset.
        degradation = None,     # Degradation preset name/path/dict or DegradationSampler: items become (sharp, degraded, label).
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        if max_size is not None and max_size < 1:
            raise ValueError(f'max_size must be at least 1 (or None for the whole dataset), got {max_size}')
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

        self._degradation = None
        if degradation is not None:
            self._degradation = degradation_sampler.build_sampler(degradation, seed=random_seed)

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            assert isinstance(labels, np.ndarray)
            assert labels.shape[0] == self._raw_shape[0]
            assert labels.dtype in (np.float32, np.int64)
            if labels.dtype == np.int64:
                assert labels.ndim == 1
                assert np.all(labels >= 0)
            self._raw_labels = labels
        return self._raw_labels

    def close(self):  # to be overridden by subclasses
        pass

    def _load_raw_image(self, raw_idx):  # to be overridden by subclasses
        raise NotImplementedError

    def _load_raw_labels(self):  # to be overridden by subclasses
        raise NotImplementedError

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown, half-constructed object, ...
            pass

    def __len__(self):
        return self._raw_idx.size

    @property
    def has_degradation(self):
        return self._degradation is not None

    def __getitem__(self, idx):
        # `(index, position)` pairs come from `InfiniteSampler(with_positions=True)`: the position in
        # the training stream keys the degradation, so it is the same whichever worker loads the
        # sample and after an exact resume.
        position = None
        if isinstance(idx, (tuple, list)):
            idx, position = idx
        image = self._load_raw_image(self._raw_idx[idx])
        assert isinstance(image, np.ndarray)
        assert list(image.shape) == self.image_shape
        assert image.dtype == np.uint8
        if self._degradation is not None:
            rng = None if position is None else np.random.default_rng([self._degradation.seed, position])
            degraded, _ = self._degradation(image.transpose(1, 2, 0), rng=rng)  # HWC at the stored resolution
            degraded = degraded.transpose(2, 0, 1)
            if self._xflip[idx]:
                image = image[:, :, ::-1]
                degraded = degraded[:, :, ::-1]
            return image.copy(), degraded.copy(), self.get_label(idx)
        if self._xflip[idx]:
            assert image.ndim == 3  # CHW
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx):
        raw_idx = int(self._raw_idx[idx])
        return dnnlib.EasyDict(raw_idx=raw_idx, xflip=(int(self._xflip[idx]) != 0),
                               raw_label=self._get_raw_labels()[raw_idx].copy())

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        assert len(self.image_shape) == 3  # CHW
        return self.image_shape[0]

    @property
    def resolution(self):
        assert len(self.image_shape) == 3  # CHW
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels, initial=-1)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

#----------------------------------------------------------------------------

def _resize_hint(path):
    return f'run dataset_tool.py --source {path} --dest NEW.zip --resolution N to resize (add --transform center-crop for non-square images)'
_LABEL_HINT = 'add labels to dataset.json ({"labels": [["file.png", class], ...]}) or train without --cond'

# Per-process memo of file-by-file checks, so that re-opening the same unchanged dataset
# (metrics construct it at every evaluation) does not read every file again.
_scan_cache = {}

class ImageFolderDataset(Dataset):
    """Images in a folder (searched recursively) or in a .zip, optionally labelled by `dataset.json`.

    Files with an image extension (any format PIL reads: .png .jpg .jpeg .bmp .webp ...) are
    sorted by their relative path. All images must be square with the same size and the same
    channel count; grayscale gives `[1, H, W]`, colour `[3, H, W]` (an alpha channel is dropped,
    with one `DatasetWarning`). PNGs are decoded with `pyspng` when it is installed.

    `dataset.json` is `{"labels": [[relative_name, label], ...]}` or `{"labels": null}`; a label is
    an integer class index or a list of floats. It is read only when `use_labels=True`.

    Bad input:

    * `path` missing -> `FileNotFoundError`; neither a folder nor a .zip -> `DatasetError`;
    * no image files, or none readable -> `DatasetError`;
    * unreadable image files (corrupt, truncated, not an image despite the extension) are skipped
      with ONE `DatasetWarning` giving their number and first names. They are found when the
      dataset is opened if it has at most `VALIDATE_MAX_FILES` files or `validate=True` (each
      header is opened and `verify()`-ed by PIL); otherwise (or for damage that `verify()` cannot
      see, e.g. truncated JPEG data) loading such a file raises `DatasetError` naming it;
    * images of different sizes or channel counts, non-square images, or a `resolution` that
      differs from the data -> `DatasetError` naming the first offending file and the
      dataset_tool.py command that fixes it (found at load time when the check was skipped);
    * `use_labels=True` without dataset.json, with `"labels": null`, or with an image that has no
      label -> `DatasetError` naming the file, saying to add labels or to train without --cond.
    """

    def __init__(self,
        path,                   # Path to a folder or a .zip.
        resolution = None,      # Expected resolution; None = whatever the data has.
        validate   = None,      # Check every file when opening? None = only if <= VALIDATE_MAX_FILES files.
        **super_kwargs,         # Passed on to Dataset: max_size, use_labels, xflip, random_seed, degradation.
    ):
        self._path = os.fspath(path)
        self._zipfile = None
        self._zip_pid = None

        if not os.path.exists(self._path):
            raise FileNotFoundError(f'Dataset path "{self._path}" does not exist: pass a folder of images '
                                    f'or a .zip made by dataset_tool.py')
        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = self._list_dir()
        elif self._file_ext(self._path) == '.zip':
            self._type = 'zip'
            try:
                self._all_fnames = sorted(n for n in self._get_zipfile().namelist() if not n.endswith('/'))
            except (zipfile.BadZipFile, OSError) as err:
                raise DatasetError(f'Dataset "{self._path}" is not a readable zip file ({err}): rebuild it with dataset_tool.py') from None
        else:
            raise DatasetError(f'Dataset path "{self._path}" must be a folder of images or a .zip file')

        extensions = image_extensions()
        fnames = sorted(f for f in self._all_fnames if is_image_file_name(f, extensions))
        if len(fnames) == 0:
            raise DatasetError(f'No image files found in "{self._path}" (looked for {", ".join(sorted(extensions & {".png", ".jpg", ".jpeg", ".bmp", ".webp"}))}, ...)')

        if validate is None:
            validate = len(fnames) <= VALIDATE_MAX_FILES
        fnames, infos, bad = self._scan(fnames, check_all=validate)
        if bad:
            shown = ', '.join(f'"{f}"' for f, _ in bad[:5]) + (', ...' if len(bad) > 5 else '')
            warnings.warn(f'Dataset "{self._path}": skipped {len(bad)} unreadable image file(s): {shown} '
                          f'(first error: {bad[0][1]}); delete or replace them to silence this warning', DatasetWarning, stacklevel=2)
        if len(fnames) == 0:
            raise DatasetError(f'None of the {len(bad)} image files in "{self._path}" could be read: check the files or rebuild the dataset with dataset_tool.py')
        self._image_fnames = fnames

        # Consistency: square, same size, same channel count (against the first image).
        first_w, first_h, first_c, _ = infos[0]
        if first_w != first_h:
            raise DatasetError(f'Dataset "{self._path}": image "{fnames[0]}" is {first_w}x{first_h}, not square; {_resize_hint(self._path)}')
        for fname, info in zip(fnames, infos):
            if info is None:
                continue  # not checked now (large dataset): checked when loaded
            w, h, c, _ = info
            if (w, h) != (first_w, first_h):
                raise DatasetError(f'Dataset "{self._path}": image "{fname}" is {w}x{h} but "{fnames[0]}" is '
                                   f'{first_w}x{first_h}; all images must have the same size: {_resize_hint(self._path)}')
            if c != first_c:
                raise DatasetError(f'Dataset "{self._path}": image "{fname}" has {c} channel(s) but "{fnames[0]}" has {first_c}; '
                                   f'all images must match: run dataset_tool.py --source {self._path} --dest NEW.zip --channels 3 (or 1) to convert')
        with_alpha = [fname for fname, info in zip(fnames, infos) if info is not None and info[3]]
        if with_alpha:
            warnings.warn(f'Dataset "{self._path}": {len(with_alpha)} image(s) have an alpha channel (e.g. "{with_alpha[0]}"); '
                          f'it is ignored', DatasetWarning, stacklevel=2)

        if resolution is not None and resolution != first_w:
            raise DatasetError(f'Dataset "{self._path}" has {first_w}x{first_h} images but resolution {resolution} was requested: '
                               f'run dataset_tool.py --source {self._path} --dest NEW.zip --resolution {resolution} to resize')

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        raw_shape = [len(fnames), first_c, first_h, first_w]
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)
        if self._use_labels:
            self._get_raw_labels()  # fail now, not in the middle of training
        self.close()  # workers reopen the zip themselves

    # -- files -------------------------------------------------------------

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _list_dir(self):
        fnames = []
        for root, dirs, files in os.walk(self._path, followlinks=True):
            dirs.sort()
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), start=self._path)
                fnames.append(rel.replace(os.sep, '/'))
        return sorted(fnames)

    def _get_zipfile(self):
        assert self._type == 'zip'
        # A handle inherited through fork() shares its file offset with the parent: reopen it.
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None and self._zip_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zip_pid = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None, _zip_pid=None)

    # -- checking ----------------------------------------------------------

    def _signature(self, fnames):
        if self._type == 'zip':
            st = os.stat(self._path)
            return (st.st_size, st.st_mtime_ns, len(fnames))
        sig = []
        for fname in fnames:
            try:
                st = os.stat(os.path.join(self._path, fname))
                sig.append((fname, st.st_size, st.st_mtime_ns))
            except OSError:
                sig.append((fname, None, None))
        return tuple(sig)

    def _probe(self, fname):
        """(width, height, channels, has_alpha) from the header; verify() when asked. Raises on bad files."""
        with self._open_file(fname) as f:
            with PIL.Image.open(f) as image:
                info = (image.size[0], image.size[1], mode_channels(image.mode), pil_has_alpha(image))
                image.verify()
        return info

    def _scan(self, fnames, check_all):
        """Returns (readable fnames, their infos, [(bad fname, error), ...])."""
        if not check_all:
            # Probe until one image opens; the rest are checked as they are loaded.
            bad = []
            for i, fname in enumerate(fnames):
                try:
                    info = self._probe(fname)
                except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
                    bad.append((fname, _describe(err)))
                    continue
                rest = fnames[i + 1:]
                return [fname] + rest, [info] + [None] * len(rest), bad
            return [], [], bad

        key = (os.path.abspath(self._path), self._signature(fnames))
        if key in _scan_cache:
            good, infos, bad = _scan_cache[key]
            return list(good), list(infos), list(bad)
        good, infos, bad = [], [], []
        for fname in fnames:
            try:
                info = self._probe(fname)
            except Exception as err:
                bad.append((fname, _describe(err)))
                continue
            good.append(fname)
            infos.append(info)
        if len(_scan_cache) >= 8:
            _scan_cache.clear()
        _scan_cache[key] = (tuple(good), tuple(infos), tuple(bad))
        return good, infos, bad

    # -- loading -----------------------------------------------------------

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()
            image = None
            if pyspng is not None and self._file_ext(fname) == '.png':
                image = _spng_to_uint8(pyspng.load(data))
                if image is not None and image.shape[2] != self._raw_shape[1]:
                    image = None  # unusual PNG layout (palette, gray + alpha, ...): let PIL decide
            if image is None:
                with PIL.Image.open(io.BytesIO(data)) as pil_image:
                    image = pil_to_uint8(pil_image)
        except Exception as err:
            raise DatasetError(f'Cannot read image "{fname}" in dataset "{self._path}" ({_describe(err)}): '
                               f'delete or replace the file, or rebuild the dataset with dataset_tool.py') from None
        image = image.transpose(2, 0, 1)  # HWC => CHW
        if list(image.shape) != self._raw_shape[1:]:
            c, h, w = image.shape
            ec, eh, ew = self._raw_shape[1:]
            raise DatasetError(f'Dataset "{self._path}": image "{fname}" is {w}x{h} with {c} channel(s), but the dataset is '
                               f'{ew}x{eh} with {ec}; {_resize_hint(self._path)}')
        return image

    def _load_raw_labels(self):
        def fail(message):
            raise DatasetError(f'Dataset "{self._path}": {message}; {_LABEL_HINT}')

        if 'dataset.json' not in self._all_fnames:
            fail('labels were requested (--cond) but there is no dataset.json')
        try:
            with self._open_file('dataset.json') as f:
                data = json.load(f)
        except (ValueError, OSError) as err:
            fail(f'dataset.json cannot be read ({_describe(err)})')
        if not isinstance(data, dict) or 'labels' not in data:
            fail('dataset.json has no "labels" entry')
        labels = data['labels']
        if labels is None:
            fail('labels were requested (--cond) but dataset.json says "labels": null')
        try:
            labels = {_label_key(k): v for k, v in (labels.items() if isinstance(labels, dict) else labels)}
        except (TypeError, ValueError):
            fail('"labels" in dataset.json must be a list of [file name, label] pairs')

        missing = [fname for fname in self._image_fnames if labels.get(fname) is None]
        if missing:
            fail(f'image "{missing[0]}" has no label in dataset.json ({len(missing)} of {len(self._image_fnames)} images lack one)')
        values = [labels[fname] for fname in self._image_fnames]
        try:
            array = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            fail('labels in dataset.json must all be integers (class indices) or all be lists of numbers of the same length')
        if array.ndim == 1 and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            if array.min(initial=0) < 0:
                bad = self._image_fnames[int(np.argmin(array))]
                fail(f'image "{bad}" has the negative class label {int(array.min())}')
            return array.astype(np.int64)
        if array.ndim == 1:
            array = array[:, np.newaxis]  # non-integer scalars: 1-D label vectors
        if array.ndim != 2:
            fail('labels in dataset.json must be integers (class indices) or flat lists of numbers')
        return array.astype(np.float32)

#----------------------------------------------------------------------------

def _label_key(fname):
    fname = str(fname).replace('\\', '/')
    while fname.startswith('./'):
        fname = fname[2:]
    return fname

def _describe(err):
    text = str(err).strip().splitlines()
    text = text[0] if text else ''
    return f'{type(err).__name__}: {text}' if text else type(err).__name__

def _spng_to_uint8(image):
    """pyspng output (HW or HWC, uint8 or uint16) -> uint8 HWC with 1 or 3 channels, or None if unusual."""
    if image.dtype == np.uint16:
        image = np.rint(image / 257).astype(np.uint8)
    if image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.shape[2] == 2:
        image = image[:, :, :1]
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image) if image.shape[2] in (1, 3) else None

#----------------------------------------------------------------------------
