"""Released files that cannot be fetched by URL: where to put them so a short name finds them.

The QC-StyleGAN authors publish their networks, teachers and pSp encoders in a shared-drive
folder (linked from the QC-StyleGAN README's model zoo) that has no stable direct-download URL.
Each entry here names the file to download by hand; once it sits at `manual_path(name)`
(`<dnnlib cache>/manual/<file>`, the cache root being `$DNNLIB_CACHE_DIR` or
`~/.cache/dnnlib`), the short name works offline wherever a network or encoder is taken.

    path = dnnlib.zoo.resolve('qc-ffhq256')   # the cached file, or ManualDownloadError (one line)

File names follow the QC-StyleGAN README and scripts: `ffhq_256x256.pkl` (trained FFHQ network,
the one `restoration/pSp/inverse.sh` uses), `ffhq_psp.pt`, `afhq_psp.pt`,
`G_teacher_FFHQ_256x256.pth.tar`. The README swaps the descriptions of `ffhq_psp.pt` and
`afhq_psp.pt`; the names here follow the file names. The AFHQ-Cat 512 and LSUN-Church 256
network/encoder/teacher names follow the same pattern as the FFHQ ones.
"""

import os

from . import util

__all__ = ['ManualDownloadError', 'MANUAL_FILES', 'QC_STYLEGAN_SOURCE', 'manual_dir', 'manual_path', 'resolve', 'names']

QC_STYLEGAN_SOURCE = 'the model-zoo folder linked from the README of github.com/VinAIResearch/QC-StyleGAN'

class ManualDownloadError(FileNotFoundError):
    """A released file that must be downloaded by hand is not in the cache (one-line message)."""

    def __init__(self, message, name=None, filename=None, path=None):
        super().__init__(message)
        self.message = message
        self.name = name
        self.filename = filename
        self.path = path

    def __str__(self):
        return self.message

def _entry(filename, kind, description):
    return dict(filename=filename, kind=kind, description=description, source=QC_STYLEGAN_SOURCE)

# name -> {filename, kind ('network' | 'encoder' | 'teacher'), description, source}
MANUAL_FILES = {
    'qc-ffhq256':           _entry('ffhq_256x256.pkl', 'network', 'QC-StyleGAN FFHQ 256x256 (q_dim 16)'),
    'qc-afhqcat512':        _entry('afhq_512x512.pkl', 'network', 'QC-StyleGAN AFHQ-Cat 512x512 (q_dim 16)'),
    'qc-church256':         _entry('church_256x256.pkl', 'network', 'QC-StyleGAN LSUN-Church 256x256 (q_dim 16)'),
    'qc-ffhq256-psp':       _entry('ffhq_psp.pt', 'encoder', 'QC-StyleGAN pSp DoubleEncoder for qc-ffhq256'),
    'qc-afhqcat512-psp':    _entry('afhq_psp.pt', 'encoder', 'QC-StyleGAN pSp DoubleEncoder for qc-afhqcat512'),
    'qc-church256-psp':     _entry('church_psp.pt', 'encoder', 'QC-StyleGAN pSp DoubleEncoder for qc-church256'),
    'qc-ffhq256-teacher':   _entry('G_teacher_FFHQ_256x256.pth.tar', 'teacher', 'stock FFHQ 256 teacher state dict'),
    'qc-afhqcat512-teacher': _entry('G_teacher_AFHQ_512x512.pth.tar', 'teacher', 'stock AFHQ-Cat 512 teacher state dict'),
    'qc-church256-teacher': _entry('G_teacher_Church_256x256.pth.tar', 'teacher', 'stock LSUN-Church 256 teacher state dict'),
}

def names(kind=None):
    """Zoo names, optionally of one kind ('network', 'encoder' or 'teacher')."""
    return [name for name, entry in MANUAL_FILES.items() if kind is None or entry['kind'] == kind]

def manual_dir():
    """The folder released files are placed in by hand: `<dnnlib cache root>/manual`."""
    return util.make_cache_dir_path('manual')

def manual_path(name):
    """Where the file of zoo entry `name` must be saved."""
    return os.path.join(manual_dir(), MANUAL_FILES[name]['filename'])

def resolve(name):
    """The local path of zoo entry `name`; ManualDownloadError (one line: which file, from where,
    to which path) if it has not been placed in the cache yet. KeyError for unknown names."""
    entry = MANUAL_FILES[name]
    path = manual_path(name)
    if os.path.isfile(path):
        return path
    raise ManualDownloadError(f'"{name}" ({entry["description"]}) cannot be downloaded automatically: download '
                              f'"{entry["filename"]}" by hand from {entry["source"]} and save it as "{path}"; '
                              f'after that "{name}" works offline', name=name, filename=entry['filename'], path=path)
