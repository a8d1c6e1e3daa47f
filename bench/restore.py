"""Restoration benchmark: held-out images x tasks x levels x methods, one fixed hyperparameter set per method.

Every clean image x is degraded with the true operator f of a task at a level (the robust NGD
paper's five levels XS..XL), y = f(x), and each method restores x_hat from y with its default
hyperparameters (--steps overrides the step counts of every method alike). Per case: accuracy =
LPIPS(x_hat, x), fidelity = LPIPS(f(x_hat), y) (at the observation's own size, as the reference
eval.py; sides under 32 px are upsampled for LPIPS; f is applied to the clean estimate for every
method, QC included), PSNR and SSIM against x, and
NIQE of x_hat. LPIPS is VGG-LPIPS on [-1, 1] images like the paper (--lpips-net alex for AlexNet).
Per method x task x level group: patch FID between random crops of the predictions and of the
ground truth (the paper: 1000 crops of 128 px per image, Inception pool3 features).

\b
Tasks: sr (U; the true filter is drawn per image from bilinear/bicubic/Lanczos, as the paper, seeded),
  denoise (N), jpeg (A), inpaint (P), colorize (no levels: runs once, at level "-"),
  and compositions written with + (sr+jpeg) or with the paper's letters (UA); every component is at
  the case's level and they are applied in the paper's order U -> N -> A -> P. `compositions` = the
  paper's 11: UN UA UP NA NP AP UNA UNP UAP NAP UNAP. The paper's Table 2 (every component at M) is
  `--tasks compositions --levels M`.

\b
NIQE: the pristine model is --niqe-model, else the library's default location (see
  metrics.restoration.load_niqe_model; standard 96 px patches only), else one fitted from the
  held-out clean images (saved as <outdir>/niqe_model_fitted_p<P>.npz and reused on resume).
  Images smaller than --niqe-patch-size use patches of half the image side with a model fitted
  from the held-out images (a note is printed; such scores are not comparable with the standard
  96 px NIQE); an explicit --niqe-model is then refused, as it was fitted for another patch size.
pFID: patches larger than or as large as the image are clamped to half the image side (a note is
  printed). The ground-truth statistics are computed once (cached as <outdir>/pfid_reference_*.npz)
  unless --pfid-ref gives them. A group's pFID is cached in summary.csv and recomputed only when its
  predictions or the pFID settings change; fewer than 2 patches give NaN.

\b
Outputs in --outdir:
  results.csv   one row per image x method x task x level, flushed after each case; cases already
                there are skipped, so an interrupted run resumes (older files without the newer
                columns are upgraded, missing values become NaN); each row names what made it: the
                network (spec, file, SHA-256 prefix), the LPIPS net and backbone (pretrained, random
                or the weights file, with its SHA-256 prefix), the seed, and caveats (e.g. a random
                LPIPS backbone: not comparable with published numbers)
  pred/<method>/<task>_<level>/<image>.png   every prediction (pFID is computed from these)
  summary.csv   one row per method x task x level: means and pFID
  results.md    the same as a Markdown table
  examples.png  rows: task x level of the first image; columns: GT | observation | each method

\b
Examples:
  python bench/restore.py --network init:tiny32 --data imgs/ --methods ngd,pti --tasks sr,UA \\
      --levels XS --num-images 2 --steps 2 --lpips-backbone random --no-pfid --outdir out/restore
  python bench/restore.py --network ffhq.pkl --data ffhq-x/ --methods ngd,pti,cri --levels XS,S,M,L,XL \\
      --tasks sr,denoise,jpeg,inpaint --num-images 100 --outdir out/restore
  python bench/restore.py --network ffhq.pkl --data ffhq-x/ --methods ngd --tasks compositions \\
      --levels M --num-images 100 --outdir out/restore-compositions
  python bench/restore.py --network qc.pkl --data ffhq-x/ --methods qc,ngd --encoder enc.pt --outdir out/qc
"""

import csv
import hashlib
import json
import math
import os
import sys
import time

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dnnlib  # noqa: E402
import legacy  # noqa: E402
from dnnlib import cli  # noqa: E402
from inversion import common  # noqa: E402
from inversion import methods as inversion_methods  # noqa: E402
from inversion import qc as qc_method  # noqa: E402
from inversion.operators import parse_degradation  # noqa: E402
from metrics import metric_utils  # noqa: E402
from metrics import provenance  # noqa: E402
from metrics import restoration  # noqa: E402
from metrics.frechet_inception_distance import frechet_distance  # noqa: E402
from torch_utils import devices  # noqa: E402
from torch_utils.image_utils import save_image, save_labelled_grid, to_uint8  # noqa: E402
from training.dataset import ImageFolderDataset  # noqa: E402

METHODS = tuple(inversion_methods.METHODS)
LEVELS = ('XS', 'S', 'M', 'L', 'XL')
TASKS = ('sr', 'denoise', 'jpeg', 'inpaint', 'colorize')
# Forward order of composed degradations, as inversion.operators applies them (U -> N -> A -> P,
# colorization right after resampling). Used to name a composition the same way however written.
COMPONENT_ORDER = ('sr', 'colorize', 'denoise', 'jpeg', 'inpaint')
PAPER_LETTERS = {'U': 'sr', 'N': 'denoise', 'A': 'jpeg', 'P': 'inpaint'}
COMPOSITIONS = ('UN', 'UA', 'UP', 'NA', 'NP', 'AP', 'UNA', 'UNP', 'UAP', 'NAP', 'UNAP')

CASE_METRICS = ('accuracy_lpips', 'fidelity_lpips', 'psnr', 'ssim', 'niqe', 'seconds')
# Per-row provenance (metrics.provenance): the network spec, its file and SHA-256 prefix; the metric LPIPS network,
# its backbone ('pretrained', 'random' or the weights file) and that file's SHA-256 prefix; the methods seed; and the
# caveats that make a row's numbers not comparable with published ones (e.g. a random LPIPS backbone), '; '-joined.
PROVENANCE_FIELDS = ('network', 'network_path', 'network_sha256', 'lpips_net', 'lpips_backbone', 'lpips_sha256', 'seed',
                     'caveats')
FIELDS = ('image', 'method', 'task', 'level') + CASE_METRICS + PROVENANCE_FIELDS
SUMMARY_FIELDS = ('method', 'task', 'level', 'n') + CASE_METRICS + ('pfid', 'pfid_images', 'pfid_key')
MARKDOWN_COLUMNS = (('accuracy LPIPS', 'accuracy_lpips', '.4f'), ('fidelity LPIPS', 'fidelity_lpips', '.4f'),
                    ('PSNR', 'psnr', '.2f'), ('SSIM', 'ssim', '.4f'), ('NIQE', 'niqe', '.3f'), ('pFID', 'pfid', '.2f'),
                    ('seconds', 'seconds', '.1f'))
MIN_NIQE_PATCH = 8  # below this the NIQE block statistics (AGGD fits on patch/2 blocks) are meaningless

#----------------------------------------------------------------------------
# Options.

def _split(text):
    return [t.strip() for t in str(text).split(',') if t.strip()]

def _task_error(task, why):
    return click.BadParameter(f'unknown task "{task}" ({why}); valid: {", ".join(TASKS)}, compositions with + '
                              f'(sr+jpeg), paper letters U=sr N=denoise A=jpeg P=inpaint (UA, UNAP, ...), or '
                              f'"compositions" (all 11)', param_hint='--tasks')

def canonical_task(task):
    """'sr+jpeg', 'jpeg+sr', 'UA' -> 'sr+jpeg'; 'sr' -> 'sr'. Raises click.BadParameter."""
    if all(ch in PAPER_LETTERS for ch in task):
        parts = [PAPER_LETTERS[ch] for ch in task]
    else:
        parts = [p.strip().lower() for p in task.split('+')]
    for p in parts:
        if p not in TASKS:
            raise _task_error(task, f'"{p}" is not a task' if p else 'empty part')
    if len(set(parts)) != len(parts):
        raise _task_error(task, 'a component is repeated')
    return '+'.join(sorted(parts, key=COMPONENT_ORDER.index))

def parse_tasks(text):
    """--tasks -> canonical task names, duplicates removed, in the given order."""
    tasks = []
    for item in _split(text):
        names = COMPOSITIONS if item.lower() == 'compositions' else [item]
        for name in names:
            task = canonical_task(name)
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise click.BadParameter('no task given', param_hint='--tasks')
    return tasks

def parse_levels(text):
    levels = []
    for lv in _split(text):
        if lv.upper() not in LEVELS:
            raise click.BadParameter(f'unknown level "{lv}"; valid: {", ".join(LEVELS)}', param_hint='--levels')
        if lv.upper() not in levels:
            levels.append(lv.upper())
    if not levels:
        raise click.BadParameter('no level given', param_hint='--levels')
    return levels

def parse_methods(text):
    methods = []
    for m in _split(text):
        if m not in METHODS:
            raise click.BadParameter(f'unknown method "{m}"; valid: {", ".join(METHODS)}', param_hint='--methods')
        if m not in methods:
            methods.append(m)
    if not methods:
        raise click.BadParameter('no method given', param_hint='--methods')
    return methods

def task_spec(task, level):
    """Degradation spec of a task at a level (colorize takes none). SR draws its true resampling
    filter per image from {bilinear, bicubic, Lanczos}, as the paper (seeded by the case seed)."""
    return '+'.join(part if part == 'colorize' else f'{part}:{level}:random' if part == 'sr' else f'{part}:{level}'
                    for part in task.split('+'))

def task_levels(task, levels):
    """The levels a task runs at: a task without leveled parts (colorize) runs once, at level '-'."""
    return levels if any(part != 'colorize' for part in task.split('+')) else ['-']

def paper_name(task):
    """'sr+jpeg' -> 'UA' for the paper's compositions, else None."""
    letters = {v: k for k, v in PAPER_LETTERS.items()}
    parts = task.split('+')
    if len(parts) < 2 or any(p not in letters for p in parts):
        return None
    return ''.join(letters[p] for p in parts)

def group_sort_key(group):
    """(method, task, level) -> method, then single tasks before compositions, then XS..XL."""
    method, task, level = group
    parts = task.split('+')
    task_key = (len(parts), [COMPONENT_ORDER.index(p) for p in parts]) if all(p in TASKS for p in parts) else (99, [])
    return (method, task_key, task, LEVELS.index(level) if level in LEVELS else 99)

#----------------------------------------------------------------------------
# Data.

def load_images(data, num_images, resolution):
    """The first `num_images` images of a folder (sorted, not recursive) or dataset zip, center-cropped
    and area-resized to the network resolution like the paper's loader -> ([(name, [1, 3, R, R] in
    [-1, 1])], notes)."""
    notes = []
    if os.path.isdir(data):
        paths = common.list_images(data)
        entries = [(os.path.splitext(os.path.basename(p))[0], p) for p in paths]
    else:
        dataset = ImageFolderDataset(path=data)
        fnames = [dataset._image_fnames[i] for i in dataset._raw_idx]  # pylint: disable=protected-access
        entries = [(os.path.splitext(os.path.basename(f))[0], (dataset, i)) for i, f in enumerate(fnames)]
    images, resized, unreadable = [], 0, []
    for name, source in entries:
        if len(images) >= num_images:
            break
        if isinstance(source, str):
            try:
                array, _ = common.load_image(source)
            except ValueError:
                unreadable.append(os.path.basename(source))
                continue
        else:
            array = np.asarray(source[0][source[1]][0], dtype=np.float32).transpose(1, 2, 0) / 255
            array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
        if array.shape[:2] != (resolution, resolution):
            resized += 1
        array, _ = common.fit_image(array, resolution)
        images.append((name, torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None] * 2 - 1))
    if resized:
        notes.append(f'{resized} image(s) center-cropped and resized to {resolution}x{resolution} (the network resolution)')
    if unreadable:
        notes.append(f'skipped {len(unreadable)} unreadable file(s): {", ".join(unreadable[:5])}')
    if len({name for name, _ in images}) != len(images):
        raise click.ClickException(f'{data}: several images share a file name stem; rename them (results are keyed by it)')
    return images, notes

def load_png(path):
    with PIL.Image.open(path) as img:
        return np.array(img.convert('RGB'))

def prediction_path(outdir, method, task, level, image):
    return os.path.join(outdir, 'pred', method, f'{task}_{level}', f'{image}.png')

#----------------------------------------------------------------------------
# results.csv: one row per case, appended as cases finish.

def _float(row, key):
    try:
        return float(row.get(key))
    except (TypeError, ValueError):
        return math.nan

def read_rows(csv_path):
    if not os.path.isfile(csv_path):
        return []
    with open(csv_path, newline='') as f:
        return list(csv.DictReader(f))

def upgrade_csv(csv_path):
    """Rewrite a results.csv from an older version with the current columns (missing values: nan)."""
    if not os.path.isfile(csv_path) or os.path.getsize(csv_path) == 0:
        return
    with open(csv_path, newline='') as f:
        header = next(csv.reader(f), [])
    if tuple(header) == FIELDS:
        return
    rows = read_rows(csv_path)
    with dnnlib.util.atomic_write(csv_path, 'w') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction='ignore', lineterminator='\n')
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) if row.get(key) not in (None, '') else '' if key in PROVENANCE_FIELDS else 'nan'
                             for key in FIELDS})
    missing = [key for key in FIELDS if key not in header]
    print(f'Note: {csv_path} is from an older version; rewritten with the columns {", ".join(missing)} (nan for missing '
          f'metrics, empty provenance, for its {len(rows)} rows)')

def append_row(csv_path, row):
    new = not os.path.isfile(csv_path) or os.path.getsize(csv_path) == 0
    with open(csv_path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator='\n')
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())

def check_settings(outdir, settings):
    """Remember the run's settings; say so when a resumed run mixes in cases made with other ones."""
    path = os.path.join(outdir, 'settings.json')
    old = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            pass
    changed = sorted(k for k in settings if k in old and old[k] != settings[k])
    if changed:
        print(f'Warning: settings differ from the earlier run in {outdir} ({", ".join(changed)}); its cases are kept '
              f'(delete results.csv to redo them)')
    with dnnlib.util.atomic_write(path, 'w') as f:
        json.dump(dict(old, **settings), f, indent=2)

#----------------------------------------------------------------------------
# NIQE.

class NIQEScorer:
    """NIQE of uint8 HWC images with one pristine model and patch size; NaN (noted once) on failure."""

    def __init__(self, model, patch_size):
        self.model, self.patch_size, self.failed = model, patch_size, False

    def __call__(self, image_uint8):
        try:
            score = float(restoration.niqe(image_uint8, model=self.model, patch_size=self.patch_size, drange=(0, 255)))
        except (ValueError, restoration.NIQEModelError) as err:
            score = math.nan
            if not self.failed:
                print(f'Note: NIQE failed ({err}); recorded as nan')
            self.failed = True
        return score

def fitted_niqe_model(images, patch_size, outdir):
    """A pristine model fitted from the held-out clean images, cached in outdir for resumed runs."""
    path = os.path.join(outdir, f'niqe_model_fitted_p{patch_size}.npz')
    if os.path.isfile(path):
        print(f'NIQE: pristine model fitted from the held-out images by an earlier run: {path}')
        return restoration.load_niqe_model(path)
    print(f'NIQE: no pristine model given or found; fitting one from the {len(images)} held-out clean images '
          f'({patch_size} px patches), saved as {path}')
    model = restoration.fit_niqe_model([to_uint8(img)[0] for _, img in images], patch_size=patch_size)
    restoration.save_niqe_model(model, path)
    return model

def check_niqe_patch_size(patch_size):
    if patch_size % 2 or patch_size < MIN_NIQE_PATCH:
        raise click.BadParameter(f'must be even and at least {MIN_NIQE_PATCH}, got {patch_size}', param_hint='--niqe-patch-size')

def setup_niqe(model_path, patch_size, images, resolution, outdir):
    """The NIQE scorer: pristine model and patch size as the module docstring says (None: no NIQE)."""
    if patch_size > resolution:
        if model_path is not None:
            raise click.UsageError(f'--niqe-model: the {resolution}x{resolution} images are smaller than --niqe-patch-size '
                                   f'{patch_size}; pass a smaller --niqe-patch-size with a model fitted for it, or omit '
                                   f'--niqe-model to fit one from the held-out images')
        scaled = resolution // 2 // 2 * 2
        if scaled < MIN_NIQE_PATCH:
            print(f'Note: NIQE skipped (nan): {resolution}x{resolution} images are too small for its patches')
            return None
        print(f'Note: NIQE uses {scaled} px patches (half the image side) instead of {patch_size}: the images are only '
              f'{resolution}x{resolution}; scores are not comparable with standard NIQE')
        return NIQEScorer(fitted_niqe_model(images, scaled, outdir), scaled)
    if model_path is not None:
        try:
            model = restoration.load_niqe_model(model_path)
        except restoration.NIQEModelError as err:
            raise click.BadParameter(str(err).split('. ')[0], param_hint='--niqe-model')
        if model['mu'].size != restoration.NIQE_NUM_FEATURES:
            raise click.BadParameter(f'"{model_path}" has {model["mu"].size} features, NIQE needs '
                                     f'{restoration.NIQE_NUM_FEATURES}', param_hint='--niqe-model')
        return NIQEScorer(model, patch_size)
    if patch_size == restoration.NIQE_PATCH_SIZE:  # the default-location model is the standard 96 px one
        try:
            model = restoration.load_niqe_model()
            print('NIQE: pristine model from the default location')
            return NIQEScorer(model, patch_size)
        except restoration.NIQEModelError:
            pass
    return NIQEScorer(fitted_niqe_model(images, patch_size, outdir), patch_size)

#----------------------------------------------------------------------------
# Patch FID.

def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

def _file_id(path):
    st = os.stat(path)
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]

def _source_id(spec):
    """A path or URL, plus size and mtime for local files (a replaced file is a new source)."""
    spec = str(spec)
    return [os.path.abspath(spec)] + _file_id(spec) if os.path.isfile(spec) else [spec]

class PatchFID:
    """pFID of prediction groups against ground-truth patch statistics (computed at most once)."""

    def __init__(self, detector_spec, patch_size, patches_per_image, ref_path, images, data, outdir, seed, device, enabled):
        self.enabled = enabled
        self.detector_spec, self.patch_size, self.patches_per_image = detector_spec, patch_size, patches_per_image
        self.ref_path, self.images, self.outdir, self.seed, self.device = ref_path, images, outdir, seed, device
        self.detector, self._ref = None, None
        if ref_path is not None:
            ref = ['file'] + _source_id(ref_path)
        else:
            ref = ['gt', os.path.abspath(data), [name for name, _ in images], self.images[0][1].shape[-1]]
        self.settings = dict(detector=_source_id(detector_spec), patch=patch_size, per_image=patches_per_image, seed=seed,
                             ref=ref)

    def load_detector(self):
        try:
            self.detector = metric_utils.get_feature_detector(self.detector_spec, device=self.device)
        except dnnlib.DownloadError as err:
            raise click.ClickException(f'--detector: {err} (or run with --no-pfid)')

    def key(self, files):
        return _digest(dict(self.settings, files=[_file_id(f) for f in files]))

    def _stats(self, images, seed):
        return restoration.patch_feature_stats(images, patch_size=self.patch_size, patches_per_image=self.patches_per_image,
                                               detector=self.detector, device=self.device, seed=seed, drange=(0, 255))

    def reference(self):
        if self._ref is None and self.ref_path is not None:
            self._ref = restoration.load_patch_stats(self.ref_path)
        if self._ref is None:
            path = os.path.join(self.outdir, f'pfid_reference_{_digest(self.settings)}.npz')
            if os.path.isfile(path):
                self._ref = restoration.load_patch_stats(path)
            else:
                print(f'pFID: ground-truth statistics of {len(self.images)} images x {self.patches_per_image} patches')
                # Other crops than the predictions' (seed + 1), as metrics.restoration.patch_fid does.
                self._ref = self._stats([to_uint8(img)[0] for _, img in self.images], self.seed + 1)
                restoration.save_patch_stats(path, *self._ref)
        return self._ref

    def __call__(self, files):
        if self.detector is None:
            self.load_detector()
        try:
            mu, sigma = self._stats([load_png(f) for f in files], self.seed)
        except ValueError:  # fewer than 2 patches
            return math.nan
        mu_ref, sigma_ref = self.reference()
        if mu_ref.shape != mu.shape:
            raise click.ClickException(f'--pfid-ref has {mu_ref.shape[0]}-d statistics but the detector gives {mu.shape[0]}-d features')
        return frechet_distance(mu, sigma, mu_ref, sigma_ref)

def check_pfid_ref(path):
    try:
        restoration.load_patch_stats(path)
    except (OSError, ValueError, dnnlib.DownloadError) as err:
        raise click.BadParameter(f'cannot read "{path}": {err}'.splitlines()[0], param_hint='--pfid-ref')

def pfid_patch_size(patch_size, resolution, verbose):
    if patch_size < resolution:
        return patch_size
    clamped = max(resolution // 2, 1)
    if verbose:
        print(f'Note: pFID uses {clamped} px patches (half the image side) instead of {patch_size}: the images are only '
              f'{resolution}x{resolution} and crops must differ')
    return clamped

#----------------------------------------------------------------------------
# Summary: means per method x task x level, pFID per group.

def summarize(rows, outdir, pfid, old_summary):
    """Group rows -> list of summary dicts. A group's pFID comes from the old summary.csv when its key
    (prediction files + pFID settings) is unchanged, else it is computed from the saved predictions
    (unless pFID is disabled: nan)."""
    groups = {}
    for r in rows:
        groups.setdefault((r['method'], r['task'], r['level']), []).append(r)
    cached = {(s['method'], s['task'], s['level']): s for s in old_summary}
    out = []
    for group in sorted(groups, key=group_sort_key):
        rs = groups[group]
        entry = dict(method=group[0], task=group[1], level=group[2], n=len(rs))
        for m in CASE_METRICS:
            vals = [v for v in (_float(r, m) for r in rs) if math.isfinite(v)]
            entry[m] = float(np.mean(vals)) if vals else math.nan
        files = [p for p in (prediction_path(outdir, *group, r['image']) for r in rs) if os.path.isfile(p)]
        key = pfid.key(files) if files else ''
        entry.update(pfid=math.nan, pfid_images=len(files), pfid_key='')
        if files and cached.get(group, {}).get('pfid_key') == key:
            entry.update(pfid=_float(cached[group], 'pfid'), pfid_key=key)
        elif files and pfid.enabled:
            t0 = time.time()
            entry.update(pfid=pfid(files), pfid_key=key)
            print(f'pFID {" ".join(group)}: {entry["pfid"]:.3f} ({len(files)} images, {time.time() - t0:.1f}s)')
        out.append(entry)
    return out

def write_summary_csv(summary, path):
    with dnnlib.util.atomic_write(path, 'w') as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, lineterminator='\n')
        writer.writeheader()
        for s in summary:
            writer.writerow({k: (f'{s[k]:.6g}' if isinstance(s[k], float) else s[k]) for k in SUMMARY_FIELDS})

def _cell(value, fmt):
    return format(value, fmt) if math.isfinite(value) else 'n/a'

def write_markdown(summary, path, notes):
    lines = ['| method | task | level | n | ' + ' | '.join(c[0] for c in MARKDOWN_COLUMNS) + ' |',
             '|' + '---|' * (4 + len(MARKDOWN_COLUMNS))]
    for s in summary:
        letters = paper_name(s['task'])
        task = f'{s["task"]} ({letters})' if letters else s['task']
        cells = [_cell(s[key], fmt) for _, key, fmt in MARKDOWN_COLUMNS]
        lines.append(f'| {s["method"]} | {task} | {s["level"]} | {s["n"]} | ' + ' | '.join(cells) + ' |')
    lines += [''] + [f'{n}  ' for n in notes]
    with dnnlib.util.atomic_write(path, 'w') as f:
        f.write('\n'.join(lines).rstrip() + '\n')

def write_examples(examples, methods, outdir, image_name, resolution):
    """Rows: task x level of the first image; columns: GT | observation | each method (black if missing)."""
    black = np.zeros([resolution, resolution, 3], dtype=np.uint8)
    tiles = []
    for (task, level), (gt, obs) in examples.items():
        tiles += [to_uint8(gt)[0], to_uint8(obs)[0]]
        for method in methods:
            path = prediction_path(outdir, method, task, level, image_name)
            tiles.append(load_png(path) if os.path.isfile(path) else black)
    width = 2 + len(methods)
    save_labelled_grid(np.stack(tiles), os.path.join(outdir, 'examples.png'), grid_size=(width, len(examples)),
                       col_labels=['ground truth', 'observation'] + list(methods),
                       row_labels=[f'{task} {level}' for task, level in examples], title=f'{image_name}: restorations')

#----------------------------------------------------------------------------
# One case.

def run_case(method, net, clean, y, degradation, lpips, metric_lpips, steps, encoder, seed, niqe_scorer):
    """Restore y with one method -> (prediction as uint8 [R, R, 3], metrics dict). The metrics are taken
    on the float prediction, NIQE on the 8-bit one (what is saved and what pFID sees)."""
    res = clean.shape[-1]
    torch.manual_seed(seed)
    t0 = time.time()
    encoder = encoder if 'encoder' in inversion_methods.get(method).takes else None  # --encoder is for qc only here
    out = inversion_methods.run(method=method, G=net['G'], target=y, degradation=degradation, lpips=lpips, steps=steps,
                                D=net['D'], encoder=encoder, seed=seed)
    seconds = time.time() - t0
    pred = out.restored[:1].detach().clamp(-1, 1)
    pred_uint8 = to_uint8(pred)[0]
    with torch.no_grad():
        torch.manual_seed(seed)
        redeg = common.degrade(degradation, pred, true=True)  # at the observation's size, as the reference eval.py
        metrics = dict(accuracy_lpips=float(metric_lpips(pred, clean).reshape(-1)[0]),
                       fidelity_lpips=float(metric_lpips(redeg, y).reshape(-1)[0]),
                       psnr=float(restoration.psnr_torch((pred + 1) / 2, (clean + 1) / 2, 1.0)[0]),
                       ssim=float(restoration.ssim_torch((pred + 1) / 2, (clean + 1) / 2, 1.0)[0]),
                       niqe=niqe_scorer(pred_uint8) if niqe_scorer is not None else math.nan,
                       seconds=seconds)
    return pred_uint8, metrics

def format_row(image, method, task, level, m, prov=None):
    """A results.csv row; `prov` is `row_provenance(...)` (empty provenance columns if None)."""
    return dict(image=image, method=method, task=task, level=level, accuracy_lpips=f'{m["accuracy_lpips"]:.6f}',
                fidelity_lpips=f'{m["fidelity_lpips"]:.6f}', psnr=f'{m["psnr"]:.4f}', ssim=f'{m["ssim"]:.6f}',
                niqe=f'{m["niqe"]:.4f}', seconds=f'{m["seconds"]:.3f}', **{k: (prov or {}).get(k, '') for k in PROVENANCE_FIELDS})

def row_provenance(network_spec, metric_lpips, seed):
    """The PROVENANCE_FIELDS values of this run's rows, from `metrics.provenance` records (None -> '')."""
    record = provenance.build(network=network_spec, lpips=[metric_lpips], seed=seed)
    net, lp = record['network'], record['lpips'][0]
    backbone = lp['path'] if lp['backbone'] == 'file' else lp['backbone']
    values = dict(network=net['spec'], network_path=net['path'], network_sha256=net['sha256'], lpips_net=lp['net'],
                  lpips_backbone=backbone, lpips_sha256=lp['sha256'], seed=seed, caveats='; '.join(record['caveats']))
    return {k: '' if v is None else str(v) for k, v in values.items()}

#----------------------------------------------------------------------------

def load_encoder(path, methods, G, device):
    if path is None:
        return None
    if 'qc' not in methods:
        raise click.UsageError('--encoder is only used by the qc method: add qc to --methods or drop --encoder')
    try:
        return inversion_methods.load_encoder(path, G=G, device=device)
    except inversion_methods.MethodError as err:
        raise click.ClickException(f'--encoder: {err}')

def load_benchmark_network(spec, methods, device):
    try:
        data = legacy.load_network(spec, device=device, verbose=False)
    except (legacy.NetworkLoadError, dnnlib.DownloadError, OSError) as err:
        raise click.ClickException(f'--network: {err}'.splitlines()[0])
    G = data['G_ema'].eval()
    for method in methods:
        try:
            inversion_methods.check_network(method, G, spec)
        except inversion_methods.MethodError:
            raise click.UsageError(f'--methods {method} needs a QC-StyleGAN network (q_dim > 0); {spec} is a plain StyleGAN2 one') from None
    return dict(G=G, D=data.get('D'))

def build_lpips_modules(methods, lpips_net, backbone, seed=0):
    """The LPIPS networks the methods use (see `inversion.methods`) and the metric's. A random
    backbone is drawn from `seed`, so runs with one --seed give the same numbers; `backbone` is a
    --lpips-backbone value ('pretrained', 'random' or PATH)."""
    modules = inversion_methods.build_lpips_modules(methods, random_backbone=backbone, extra=[lpips_net], seed=seed)
    return modules, common.safe_lpips(modules[lpips_net])

@click.command(help=__doc__)
@click.option('--network', 'network_spec', required=True, help='Network: pickle or weights file, URL, zoo name or init:PRESET', metavar='NETWORK')
@click.option('--data', required=True, help='Held-out clean images: folder of images or dataset .zip')
@click.option('--methods', default='ngd,pti', show_default=True, help='Comma list of ' + ','.join(METHODS))
@click.option('--tasks', default='sr,denoise,jpeg,inpaint', show_default=True,
              help='Comma list of ' + ','.join(TASKS) + ', A+B compositions, paper letters (UA, ...) or "compositions"')
@click.option('--levels', default='XS,M,XL', show_default=True, help='Comma list of ' + ','.join(LEVELS))
@click.option('--num-images', type=click.IntRange(min=1), default=10, show_default=True, help='First N images of --data')
@click.option('--steps', default=None, help='Steps per phase (N or comma list, as in invert.py); method defaults if unset')
@click.option('--encoder', 'encoder_path', default=None, help='pSp encoder checkpoint for the qc method (gives w, q)')
@click.option('--outdir', required=True, help='Output folder (results.csv, summary.csv, results.md, settings.json, provenance.json, predictions)')
@click.option('--device', default='auto', show_default=True, help=devices.DEVICE_HELP)
@click.option('--lpips-net', type=click.Choice(['vgg', 'alex']), default='vgg', show_default=True,
              help='LPIPS network of the accuracy / fidelity metrics (the paper: vgg)')
@click.option('--lpips-backbone', default='pretrained', show_default=True, metavar='pretrained|random|PATH',
              help='LPIPS backbone: "pretrained" (torchvision ImageNet weights in torch hub\'s cache), "random" (tests/demos: numbers not comparable), or PATH (a torchvision weights file, or a folder holding them)')
@click.option('--niqe-model', default=None, help='Pristine NIQE model (.npz mu/cov or MATLAB .mat)')
@click.option('--niqe-patch-size', type=int, default=96, show_default=True, help='NIQE patch size (even)')
@click.option('--no-niqe', is_flag=True, help='Skip NIQE (recorded as nan)')
@click.option('--detector', '--detector-inception', 'detector', default=None,
              help='Inception feature detector for pFID (path or URL)  [default: $QCGAN_DETECTOR_INCEPTION or the NVlabs URL]')
@click.option('--pfid-patch', type=click.IntRange(min=1), default=128, show_default=True, help='pFID crop size')
@click.option('--pfid-patches-per-image', type=click.IntRange(min=1), default=1000, show_default=True, help='pFID crops per image')
@click.option('--pfid-ref', default=None, help='Ground-truth patch statistics .npz (mu, sigma) instead of computing them')
@click.option('--no-pfid', is_flag=True, help='Skip computing pFID (values cached in summary.csv are kept)')
@click.option('--seed', type=int, default=0, show_default=True, help='Methods seed; image i is degraded with seed + i')
@cli.trust_pickle_option
@cli.os_errors_as_one_line
def main(network_spec, data, methods, tasks, levels, num_images, steps, encoder_path, outdir, device, lpips_net,
         lpips_backbone, niqe_model, niqe_patch_size, no_niqe, detector, pfid_patch, pfid_patches_per_image, pfid_ref,
         no_pfid, seed):

    # Check every option before any work.
    try:
        device = devices.parse_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--device')
    try:
        lpips_backbone = restoration.check_lpips_backbone(lpips_backbone)
    except FileNotFoundError as err:
        raise click.BadParameter(str(err), param_hint='--lpips-backbone')
    methods, tasks, levels = parse_methods(methods), parse_tasks(tasks), parse_levels(levels)
    if encoder_path is not None and 'qc' not in methods:
        raise click.UsageError('--encoder is only used by the qc method: add qc to --methods or drop --encoder')
    try:
        dnnlib.util.check_output_dir(outdir, '--outdir')
    except OSError as err:
        raise click.ClickException(err.strerror)
    try:
        step_kwargs = {m: inversion_methods.parse_steps(m, steps) for m in methods}
    except inversion_methods.MethodError as err:
        raise click.BadParameter(str(err), param_hint='--steps')
    if not os.path.exists(data):
        raise click.BadParameter(f'"{data}" does not exist: pass a folder of images or a dataset .zip', param_hint='--data')
    if pfid_ref is not None and not no_pfid:
        check_pfid_ref(pfid_ref)
    if not no_niqe:
        check_niqe_patch_size(niqe_patch_size)
    net = load_benchmark_network(network_spec, methods, device)
    res = net['G'].synthesis.img_resolution
    try:
        images, notes = load_images(data, num_images, res)
    except (ValueError, OSError) as err:  # DatasetError, no images in the folder
        raise click.BadParameter(str(err).splitlines()[0], param_hint='--data')
    if not images:
        raise click.BadParameter(f'no readable images in "{data}"', param_hint='--data')
    for note in notes:
        print(f'Note: {note}')
    encoder = load_encoder(encoder_path, methods, net['G'], device)
    if 'qc' in methods and encoder is None:
        print(f'Warning: the qc method runs without --encoder: {qc_method.ENCODER_FREE_NOTE}')
    detector = detector or os.environ.get(metric_utils.DETECTOR_ENV_VARS['inception']) or metric_utils.INCEPTION_URL
    pfid = PatchFID(detector, pfid_patch_size(pfid_patch, res, not no_pfid), pfid_patches_per_image, pfid_ref, images,
                    data, outdir, seed, device, enabled=not no_pfid)
    if pfid.enabled:
        pfid.load_detector()  # fail now rather than after hours of restoration
    niqe_scorer = None if no_niqe else setup_niqe(niqe_model, niqe_patch_size, images, res, outdir)
    os.makedirs(outdir, exist_ok=True)
    lpips, metric_lpips = build_lpips_modules(methods, lpips_net, lpips_backbone, seed)
    lpips = {k: (v.to(device) if v is not None else None) for k, v in lpips.items()}
    metric_lpips = metric_lpips.to(device)
    settings = dict(network=str(network_spec), steps=steps, seed=seed, lpips_net=lpips_net, lpips_backbone=lpips_backbone)
    if 'qc' in methods:  # the encoder matters to qc cases only
        settings['encoder'] = encoder_path
    check_settings(outdir, settings)
    prov = provenance.build(network=network_spec, lpips=[metric_lpips] + [v for v in lpips.values() if v is not None],
                            detectors=[detector] if pfid.enabled else [], method=','.join(methods), seed=seed,
                            settings=dict(settings, tasks=list(tasks), levels=levels, niqe_model=niqe_model))
    with dnnlib.util.atomic_write(os.path.join(outdir, 'provenance.json'), 'w') as f:
        json.dump(prov, f, indent=2)
    lpips_mark = ' (random LPIPS backbone)' if lpips_backbone == 'random' else ''
    row_prov = row_provenance(network_spec, metric_lpips, seed)

    csv_path = os.path.join(outdir, 'results.csv')
    upgrade_csv(csv_path)
    done = {(r['image'], r['method'], r['task'], r['level']) for r in read_rows(csv_path)}
    cases = [(name, m, t, lv) for name, _ in images for t in tasks for lv in task_levels(t, levels) for m in methods]
    total, todo = len(cases), sum(case not in done for case in cases)
    print(f'{total} case(s): {todo} to run, {total - todo} already in {csv_path}')
    examples = {}  # (task, level) -> (GT, observation at image size) of the first image
    ran = 0
    for index, (name, clean) in enumerate(images):
        clean = clean.to(device)
        case_seed = seed + index  # a new stroke mask / noise per image, the same for every method
        for task in tasks:
            for level in task_levels(task, levels):
                pending = [m for m in methods if (name, m, task, level) not in done]
                if not pending and index > 0:
                    continue
                spec = task_spec(task, level)
                degradation = parse_degradation(spec, res, device=device, seed=case_seed)
                torch.manual_seed(case_seed)
                with torch.no_grad():
                    y = common.degrade(degradation, clean, true=True)
                if index == 0:
                    examples[(task, level)] = (clean, common.to_image_size(degradation, y, res))
                for method in pending:
                    pred_uint8, m = run_case(method, net, clean, y, degradation, lpips, metric_lpips, step_kwargs[method],
                                             encoder, seed, niqe_scorer)
                    # The PNG first: a row in results.csv promises that its prediction is on disk.
                    save_image(pred_uint8, prediction_path(outdir, method, task, level, name))
                    append_row(csv_path, format_row(name, method, task, level, m, row_prov))
                    done.add((name, method, task, level))
                    ran += 1
                    print(f'[{ran}/{todo}] {name} {method} {spec}: LPIPS {m["accuracy_lpips"]:.4f} fidelity '
                          f'{m["fidelity_lpips"]:.4f}{lpips_mark} PSNR {m["psnr"]:.2f} SSIM {m["ssim"]:.4f} NIQE {m["niqe"]:.3f} '
                          f'({m["seconds"]:.1f}s)', flush=True)

    rows = read_rows(csv_path)
    summary_path = os.path.join(outdir, 'summary.csv')
    summary = summarize(rows, outdir, pfid, read_rows(summary_path))
    write_summary_csv(summary, summary_path)
    niqe_note = f'NIQE: {niqe_scorer.patch_size} px patches' if niqe_scorer else 'NIQE: not computed'
    pfid_note = (f'pFID: {pfid.patch_size} px crops, {pfid.patches_per_image} per image, detector '
                 f'{os.path.basename(str(detector))}, reference {pfid_ref or "the ground truth"}' if pfid.enabled
                 else 'pFID: not computed this run (earlier values kept where unchanged)')
    md_notes = [f'Means over n images. LPIPS: {lpips_net} ({lpips_backbone} backbone). {niqe_note}. {pfid_note}. '
                f'Lower is better except PSNR and SSIM.', provenance.mark(
                    f'Network {prov["network"]["spec"]} (sha256 {prov["network"]["sha256"]}), seed {seed}; details in provenance.json.', prov)]
    write_markdown(summary, os.path.join(outdir, 'results.md'), md_notes)
    write_examples(examples, methods, outdir, images[0][0], res)
    print(f'Ran {ran} case(s); wrote {csv_path} ({len(rows)} rows), summary.csv, results.md, examples.png')

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
