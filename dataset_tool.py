"""Build a training dataset: a ZIP (or folder) of same-size, square, uncompressed PNGs plus dataset.json.

\b
Sources:
  a folder of images (searched recursively), or a .zip of images; a dataset.json with labels
  ({"labels": [["name.png", label], ...]}) next to the images is carried over;
  builtin:lfw-faces  the 100 face crops of skimage.data.lfw_subset() (25x25 gray; default
                     --resolution 32, replicated to RGB unless --channels 1).
\b
Output: images named 00000/img00000000.png, 00000/img00000001.png, ... and dataset.json
({"labels": null} when some image has no label). A .zip dest is replaced atomically; a folder
dest must be empty or not exist.
\b
Examples:
  python dataset_tool.py --source builtin:lfw-faces --dest datasets/lfw32.zip
  python dataset_tool.py --source ~/photos --dest datasets/photos256.zip --transform center-crop --resolution 256
  python dataset_tool.py --source ffhq1024.zip --dest datasets/ffhq256.zip --resolution 256 --resize-filter box
"""

import io
import json
import os
import shutil
import sys
import tempfile
import zipfile

import click
import numpy as np
import PIL.Image
import PIL.ImageOps

import dnnlib
from training import dataset as dataset_lib

#----------------------------------------------------------------------------
# Sources: each yields (name, load) pairs, where load() returns a PIL image (and may raise).

def _load_lfw_faces():
    try:
        import skimage.data
    except ImportError:
        raise click.ClickException('builtin:lfw-faces needs scikit-image: pip install scikit-image') from None
    faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the last 100 are not
    faces = np.rint(np.clip(faces, 0, 1) * 255).astype(np.uint8)
    return [(f'lfw-faces/{idx:03d}', (lambda a=array: PIL.Image.fromarray(a, 'L'))) for idx, array in enumerate(faces)]

# name -> (loader, defaults)
BUILTIN_SOURCES = {
    'lfw-faces': (_load_lfw_faces, dict(resolution=32, channels=3)),
}

class _Source:
    """Image source: a folder, a zip or a builtin set. `items` are (name, load) pairs; `labels` maps name -> label."""

    def __init__(self, spec):
        self.spec = spec
        self.labels = {}
        self.defaults = {}
        self._zip = None
        if spec.startswith('builtin:'):
            key = spec[len('builtin:'):]
            if key not in BUILTIN_SOURCES:
                known = ', '.join(f'builtin:{k}' for k in sorted(BUILTIN_SOURCES))
                raise click.ClickException(f'Unknown builtin source "{spec}"; known ones: {known}')
            loader, self.defaults = BUILTIN_SOURCES[key]
            self.items = loader()
            return
        if not os.path.exists(spec):
            raise click.ClickException(f'--source "{spec}" does not exist: pass a folder of images, a .zip or builtin:NAME')
        if os.path.isdir(spec):
            names = []
            for root, dirs, files in os.walk(spec, followlinks=True):
                dirs.sort()
                names += [os.path.relpath(os.path.join(root, f), spec).replace(os.sep, '/') for f in files]
            opener = lambda name: open(os.path.join(spec, name), 'rb')
        elif os.path.splitext(spec)[1].lower() == '.zip':
            try:
                self._zip = zipfile.ZipFile(spec)
                names = [n for n in self._zip.namelist() if not n.endswith('/')]
            except (zipfile.BadZipFile, OSError) as err:
                raise click.ClickException(f'--source "{spec}" is not a readable zip file ({err})') from None
            opener = lambda name: self._zip.open(name, 'r')
        else:
            raise click.ClickException(f'--source "{spec}" must be a folder of images, a .zip or builtin:NAME')

        def make_loader(name):
            def load():
                with opener(name) as f:
                    image = PIL.Image.open(io.BytesIO(f.read()))
                    image.load()
                return image
            return load
        extensions = dataset_lib.image_extensions()
        self.items = [(n, make_loader(n)) for n in sorted(names) if dataset_lib.is_image_file_name(n, extensions)]
        if 'dataset.json' in names:
            self.labels = self._read_labels(opener)

    def _read_labels(self, opener):
        try:
            with opener('dataset.json') as f:
                data = json.load(f)
        except (ValueError, OSError) as err:
            raise click.ClickException(f'{self.spec}: dataset.json cannot be read ({err}); fix or delete it') from None
        labels = data.get('labels') if isinstance(data, dict) else None
        if labels is None:
            return {}
        try:
            pairs = labels.items() if isinstance(labels, dict) else labels
            return {str(k).replace('\\', '/').removeprefix('./'): v for k, v in pairs}
        except (TypeError, ValueError):
            raise click.ClickException(f'{self.spec}: "labels" in dataset.json must be a list of [file name, label] pairs') from None

    def close(self):
        if self._zip is not None:
            self._zip.close()
            self._zip = None

#----------------------------------------------------------------------------
# Image conversion

_FILTERS = {'box': PIL.Image.Resampling.BOX, 'lanczos': PIL.Image.Resampling.LANCZOS}

MAX_RESOLUTION = 8192  # 8192^2 RGB is 200 MB per uncompressed image; larger is a typo, not a GAN dataset

def _resolution_option(ctx, param, value):
    """click callback of --resolution: a usage error (exit code 2) for values no dataset can have."""
    _ = ctx
    if value is not None:
        if value > MAX_RESOLUTION:
            raise click.BadParameter(f'{value} is above the limit of {MAX_RESOLUTION}', param=param)
        if value < 4 or (value & (value - 1)) != 0:
            raise click.BadParameter(f'{value} is not a power of two between 4 and {MAX_RESOLUTION}', param=param)
    return value

def _check_power_of_two(value, what):
    if value > MAX_RESOLUTION:
        raise click.ClickException(f'{what} {value} is above the limit of {MAX_RESOLUTION}: pass --resolution {MAX_RESOLUTION} or less to resize')
    if value < 4 or (value & (value - 1)) != 0:
        lower = 1 << max(2, value.bit_length() - 1)
        raise click.ClickException(f'{what} {value} is not a power of two >= 4: pass --resolution {lower} '
                                   f'(or {lower * 2}) to resize')

class _Converter:
    """Turns source images into uint8 HWC arrays of one resolution and channel count."""

    def __init__(self, resolution, transform, resize_filter, channels):
        self.resolution = resolution            # None: taken from the first image
        self.transform = transform
        self.filter = _FILTERS[resize_filter]
        self.channels = channels                # None: taken from the first image
        self.first_name = None
        self._auto_resolution = resolution is None
        self._auto_channels = channels is None

    def __call__(self, name, image):
        """Returns the converted array, or None when the image is dropped (too small for center-crop-wide)."""
        if self.first_name is None:
            self.first_name = name
        image = PIL.ImageOps.exif_transpose(image)  # camera JPEGs: apply the orientation tag
        array = dataset_lib.pil_to_uint8(image)
        if self.channels is None:
            self.channels = array.shape[2]
        if array.shape[2] != self.channels:
            if self._auto_channels:
                raise click.ClickException(f'"{name}" has {array.shape[2]} channel(s) but "{self.first_name}" has '
                                           f'{self.channels}: pass --channels 3 (or 1) to convert all images')
            array = _convert_channels(array, self.channels)
        image = PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        w, h = image.size

        if self.transform is None:
            if w != h:
                raise click.ClickException(f'"{name}" is {w}x{h}, not square: pass --transform center-crop '
                                           f'(or center-crop-wide) and --resolution N')
            if self.resolution is None:
                _check_power_of_two(w, f'"{name}" is {w}x{h}; the resolution')
                self.resolution = w
            if self._auto_resolution and w != self.resolution:
                raise click.ClickException(f'"{name}" is {w}x{h} but "{self.first_name}" is {self.resolution}x{self.resolution}: '
                                           f'pass --resolution N to resize all images')
        elif self.transform == 'center-crop':
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
            if self.resolution is None:
                _check_power_of_two(side, f'"{name}" center-crops to {side}x{side}; the resolution')
                self.resolution = side
        elif self.transform == 'center-crop-wide':
            if self.resolution is None:
                _check_power_of_two(w, f'"{name}" is {w} pixels wide; the resolution')
                self.resolution = w
            res = self.resolution
            if w < res:
                return None  # too small: would have to be upscaled
            new_h = max(1, int(round(h * res / w)))
            image = image.resize((res, new_h), self.filter)
            if new_h > res:  # taller than wide: keep the centre
                top = (new_h - res) // 2
                image = image.crop((0, top, res, top + res))
            else:  # letterbox onto a black square
                canvas = PIL.Image.new(image.mode, (res, res))
                canvas.paste(image, (0, (res - new_h) // 2))
                image = canvas
        else:
            raise click.ClickException(f'Unknown --transform "{self.transform}"')

        if image.size != (self.resolution, self.resolution):
            image = image.resize((self.resolution, self.resolution), self.filter)
        array = np.asarray(image)
        return array[:, :, np.newaxis] if array.ndim == 2 else array

def _convert_channels(array, channels):
    if channels == 3:
        return np.repeat(array, 3, axis=2)
    return np.asarray(PIL.Image.fromarray(array, 'RGB').convert('L'))[:, :, np.newaxis]

def _encode_png(array):
    image = PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format='PNG', compress_level=0, optimize=False)
    return buffer.getvalue()

#----------------------------------------------------------------------------
# Writers

def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

class _ZipWriter:
    def __init__(self, f):
        self._zip = zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED)

    def add(self, name, data):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible archives
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self):
        self._zip.close()

class _FolderWriter:
    def __init__(self, root):
        self._root = root

    def add(self, name, data):
        path = os.path.join(self._root, *name.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def close(self):
        pass

#----------------------------------------------------------------------------

def _progress(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit='img', file=sys.stderr, disable=None, leave=False)

def convert_dataset(source, dest, max_images=None, resolution=None, transform=None, resize_filter='lanczos', channels=None,
                    skip_images=0):
    """Convert `source` into `dest` (see the module docstring); returns a summary EasyDict.

    Raises `click.ClickException` with a one-line message for every user error.
    """
    dest = os.fspath(dest)
    dest_is_zip = os.path.splitext(dest)[1].lower() == '.zip'
    if resolution is not None:
        _check_power_of_two(resolution, '--resolution')
    if dest_is_zip:
        if os.path.isdir(dest):
            raise click.ClickException(f'--dest "{dest}" is a folder; a .zip dest must be a file path')
        if os.path.exists(source) and os.path.exists(dest) and os.path.samefile(source, dest):
            raise click.ClickException(f'--dest "{dest}" is the source itself: choose another file name')
    else:
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise click.ClickException(f'--dest "{dest}" exists and is not a folder: pass a .zip path or an empty/new folder')
        if os.path.isdir(dest) and os.listdir(dest):
            raise click.ClickException(f'--dest folder "{dest}" is not empty: choose a new folder or a .zip path')
        if os.path.isdir(source):
            src_abs, dest_abs = os.path.realpath(source), os.path.realpath(dest)
            if os.path.commonpath([src_abs, dest_abs]) == src_abs:
                raise click.ClickException(f'--dest folder "{dest}" is inside the source folder: put it elsewhere')

    src = _Source(source)
    try:
        if not src.items:
            raise click.ClickException(f'No image files found in --source "{source}"')
        if skip_images:
            if skip_images >= len(src.items):
                raise click.ClickException(f'--skip-images {skip_images} skips all {len(src.items)} source images')
            src.items = src.items[skip_images:]
        if resolution is None:
            resolution = src.defaults.get('resolution')
        if channels is None:
            channels = src.defaults.get('channels')
        converter = _Converter(resolution, transform, resize_filter, channels)

        def run(writer):
            labels, unreadable, dropped = [], [], 0
            progress = _progress(len(src.items) if max_images is None else min(max_images, len(src.items)))
            try:
                for name, load in src.items:
                    if max_images is not None and len(labels) >= max_images:
                        break
                    try:
                        image = load()
                    except Exception as err:  # PIL raises many types for bad files
                        unreadable.append((name, err))
                        continue
                    array = converter(name, image)
                    if array is None:
                        dropped += 1
                        continue
                    archive_name = f'{len(labels) // 1000:05d}/img{len(labels):08d}.png'
                    writer.add(archive_name, _encode_png(array))
                    labels.append([archive_name, src.labels.get(name)])
                    if progress is not None:
                        progress.update(1)
            finally:
                if progress is not None:
                    progress.close()
            if not labels:
                why = f' ({len(unreadable)} unreadable, {dropped} too small)' if unreadable or dropped else ''
                raise click.ClickException(f'No images were written from --source "{source}"{why}')
            has_labels = all(label is not None for _, label in labels)
            meta = {'labels': labels if has_labels else None}
            writer.add('dataset.json', json.dumps(meta).encode('utf-8'))
            return dnnlib.EasyDict(num_images=len(labels), has_labels=has_labels, unreadable=unreadable, dropped=dropped)

        if dest_is_zip:
            with dnnlib.util.atomic_write(dest, 'wb') as f:
                writer = _ZipWriter(f)
                try:
                    summary = run(writer)
                finally:
                    writer.close()  # also on failure, before the temp file is closed and removed
        else:
            parent = os.path.dirname(os.path.abspath(dest))
            os.makedirs(parent, exist_ok=True)
            tmp_dir = tempfile.mkdtemp(prefix='.' + os.path.basename(os.path.abspath(dest)) + '.', suffix='.tmp', dir=parent)
            try:
                os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes 0700; the dataset is an ordinary folder
                summary = run(_FolderWriter(tmp_dir))
                if os.path.isdir(dest):
                    os.rmdir(dest)  # empty (checked above)
                os.replace(tmp_dir, dest)
            except BaseException:
                shutil.rmtree(tmp_dir, ignore_errors=True)
                raise
    finally:
        src.close()

    summary.update(resolution=converter.resolution, channels=converter.channels, dest=dest)
    return summary

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--source', help='Folder or .zip of images, or builtin:lfw-faces', required=True, metavar='PATH')
@click.option('--dest', help='Output .zip or (empty/new) folder', required=True, metavar='PATH')
@click.option('--max-images', type=click.IntRange(min=1), help='Write at most this many images')
@click.option('--skip-images', type=click.IntRange(min=0), default=0, help='Skip the first N source images (e.g. to hold them out)')
@click.option('--resolution', type=int, callback=_resolution_option, help=f'Output resolution (power of two, 4..{MAX_RESOLUTION}) [default: the data\'s own; 32 for builtin:lfw-faces]')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']),
              help='center-crop: largest centred square; center-crop-wide: fit the width, letterbox on black (narrower images are dropped)')
@click.option('--resize-filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True,
              help='Resampling filter (box reproduces the paper\'s FFHQ-256 FIDs)')
@click.option('--channels', type=click.Choice(['1', '3']), help='Output channels [default: the data\'s own; 3 for builtin:lfw-faces]')
def dataset_tool_main(source, dest, max_images, skip_images, resolution, transform, resize_filter, channels):
    try:
        if os.path.splitext(dest)[1].lower() == '.zip':
            dnnlib.util.check_output_path(dest, '--dest')
        else:  # a folder: its parent must be writable
            dnnlib.util.check_output_dir(os.path.dirname(os.path.abspath(dest)), '--dest')
    except OSError as err:
        raise click.ClickException(err.strerror) from None
    try:
        summary = convert_dataset(source, dest, max_images=max_images, skip_images=skip_images, resolution=resolution, transform=transform,
                                  resize_filter=resize_filter, channels=None if channels is None else int(channels))
    except OSError as err:
        raise click.ClickException(f'cannot write --dest "{dest}": {dnnlib.util.describe_os_error(err)}; '
                                   f'nothing partial was left behind') from None
    if summary.unreadable:
        shown = ', '.join(f'"{name}"' for name, _ in summary.unreadable[:5]) + (', ...' if len(summary.unreadable) > 5 else '')
        click.echo(f'warning: skipped {len(summary.unreadable)} unreadable image file(s): {shown}', err=True)
    if summary.dropped:
        click.echo(f'warning: dropped {summary.dropped} image(s) narrower than {summary.resolution} pixels (center-crop-wide)', err=True)
    kind = 'RGB' if summary.channels == 3 else 'grayscale'
    click.echo(f'Wrote {summary.num_images} images, {summary.resolution}x{summary.resolution}, {summary.channels} channel(s) ({kind}), '
               f'labels: {"yes" if summary.has_labels else "no"}, to {dest}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    dataset_tool_main()  # pylint: disable=no-value-for-parameter
