"""Random image degradations that turn sharp training images into "real degraded" ones (QC-StyleGAN).

`DegradationSampler` draws, for every call, one *base* and then runs that base's chain of
*groups* in order; each group fires with its probability `p` and, when it fires, applies ONE of
its *members* (chosen by weight, uniform by default). The released QC-StyleGAN training sampler
(`qc_stylegan_train`) has three equally likely bases, each the chain blur -> noise ->
downscale-or-JPEG, with the base's own group at p=1 and the other two at p=0.5; the pSp encoder
sampler (`qc_psp_encoder`) is one harsher chain with every group at p=0.8.

    sampler = DegradationSampler('qc_stylegan_train', seed=0)
    degraded, info = sampler(image_hwc_uint8)       # next draw of the sampler's own stream
    degraded, info = sampler(image_hwc_uint8, rng=np.random.default_rng(5))   # explicit stream

`info` is a plain (JSON-friendly) dict::

    {'base': 'blur', 'base_index': 0,
     'groups': [{'group': 'blur', 'fired': True, 'member': 'MotionBlur',
                 'params': {'ksize': 9, 'start': [0, 3], 'end': [8, 5]}},
                {'group': 'noise', 'fired': False, 'member': None, 'params': None}, ...]}

Preset schema (a JSON file in `training/degradation_presets/NAME.json`, any `.json` path, or the
same structure as a dict)::

    {
      "name": "my_preset",                       # optional, defaults to the file name
      "description": "free text",                # optional
      "jpeg_channel_order": "rgb",               # optional: "rgb" (default) or "bgr_swap"
      "seed": null,                              # optional default seed (int or null)
      "groups": {                                # named groups: a list of members each
        "blur":  [{"type": "GaussianBlur", "blur_limit": [3, 31]},
                  {"type": "MotionBlur",   "blur_limit": [3, 31], "weight": 1}],
        "noise": [{"type": "GaussNoise",   "var_limit": [10, 650]}]
      },
      "bases": [                                 # one base is drawn per sample, by weight
        {"name": "blur", "weight": 1,
         "chain": [{"group": "blur", "p": 1.0}, {"group": "noise", "p": 0.5}]}
      ]
    }

Members use the parameter names and semantics of the RELEASED code (albumentations 1.0.3):

=================  ==========================================================================
type               parameters (defaults)
=================  ==========================================================================
GaussianBlur       blur_limit [lo, hi] odd, lo >= 3; sigma_limit (0 or [lo, hi], default 0).
                   ksize = randint(lo, hi) made odd by k -> (k+1) % (hi+1), so `lo` has half
                   the weight of the other odd sizes; sigma = U(sigma_limit); sigma 0 lets
                   OpenCV pick sigma = 0.3 * ((k-1)/2 - 1) + 0.8. Applied with
                   `cv2.GaussianBlur` (implemented here, see below).
MotionBlur         blur_limit [lo, hi] odd, lo >= 3. ksize uniform over the odd sizes; a k x k
                   kernel with one `cv2.line` between random end points (distinct when the
                   x's coincide), normalised to sum 1, `cv2.filter2D` (implemented here).
MedianBlur         blur_limit [lo, hi] odd, lo >= 3. ksize uniform odd; `cv2.medianBlur`
                   (albumentations 2.x `MedianBlur`).
Blur               blur_limit [lo, hi] odd, lo >= 3. Box filter, ksize uniform odd; `cv2.blur`
                   (albumentations 2.x `Blur`).
GaussNoise         var_limit [lo, hi] >= 0 (0-255 scale), mean (0), per_channel (true).
                   var = U(var_limit), sigma = sqrt(var); N(mean, sigma) per pixel (and per
                   channel), added in float, clipped to [0, 255], truncated to uint8
                   (implemented here).
Downscale          scale_min, scale_max in (0, 1); interpolation ("nearest"; also "linear",
                   "cubic", "area", "lanczos4", "nearest_exact", "linear_exact"). scale = U;
                   `cv2.resize` down by fx=fy=scale and back up, both with `interpolation`
                   (albumentations 2.x `Downscale` with scale_range + interpolation_pair).
ImageCompression   quality_lower, quality_upper in [1, 100]. JPEG with a uniform integer
                   quality (albumentations 2.x `ImageCompression` with quality_range), in the
                   preset's `jpeg_channel_order`.
=================  ==========================================================================

Every member also takes an optional `"weight"` (> 0, default 1) for the choice inside its group.
Unknown keys, unknown member types and bad values raise `DegradationPresetError` (a
`ValueError`) with one line naming the offending key, the preset file and the allowed keys.

Where albumentations 2.x cannot express 1.0.3 exactly, the member is implemented here with
cv2/numpy; the others delegate the pixel operation to the albumentations 2.x transform's
`apply()` with parameters drawn here from the released distributions:

* GaussianBlur: 2.x builds its own float kernel from a sampled sigma and cannot use sigma=0
  (division by zero), so OpenCV's sigma rule, OpenCV's fixed 3/5/7-tap kernels for sigma 0 and
  its bit-exact uint8 path are lost. Implemented with `cv2.GaussianBlur(img, (k, k), sigma)`,
  exactly the released call. (The 2.x size rule happens to give the same k distribution.)
* MotionBlur: 2.x draws an angle/direction line kernel (optionally shifted), a different kernel
  distribution from 1.0.3's random `cv2.line` end points. Implemented with the 1.0.3 rule.
* GaussNoise: 2.x takes `std_range` as a fraction of 255 and draws sigma uniformly (1.0.3 draws
  the *variance* uniformly, so sigma is not uniform), draws the noise with `cv2.randn` from
  OpenCV's global RNG, and adds it with albucore's saturating add instead of 1.0.3's
  float add + clip + truncating cast. Implemented with numpy (float64 noise as in 1.0.3).
* Downscale: 2.x `scale_range=(scale_min, scale_max)` with `interpolation_pair` {down, up} both
  set to the released `interpolation` is exact for nearest (1.0.3 routed non-nearest uint8
  images through float32 [0, 1]; 2.x resamples the uint8 data directly, so those differ by
  rounding).
* Blur / MedianBlur: 2.x is exact (`cv2.blur` / `cv2.medianBlur`, uniform odd size).
* ImageCompression: 2.x `quality_range=(quality_lower, quality_upper)` is exact (uniform integer,
  `cv2.imencode('.jpg')` / `imdecode`); it passes the array to OpenCV as BGR like 1.0.3 did.
  `jpeg_channel_order="rgb"` reverses the channels around the call so OpenCV's chroma conversion
  sees the true colours; `"bgr_swap"` reproduces the released behaviour (RGB data treated as
  BGR: JPEG's chroma subsampling then acts on swapped colour axes). Single-channel images are
  encoded as grayscale JPEG in both modes.
* The released code drew some parameters from Python `random` and some from the global
  `np.random` (duplicated across DataLoader workers under PyTorch 1.7). Here every draw comes
  from a `numpy.random.Generator` owned by the sampler (or passed in); global `random`,
  `np.random` and OpenCV's RNG are neither used nor changed.

Randomness and DataLoader workers:

* `DegradationSampler(preset, seed)` owns a PCG64 stream seeded with `seed` (default: the
  preset's `"seed"`, else 0); `reseed(seed)` restarts it. Each call consumes, in order: one
  uniform for the base, then per chain group one uniform for `p`, and when the group fires one
  for the member plus the member's own parameter draws.
* Inside a DataLoader worker the sampler re-seeds itself on its first draw, from
  `SeedSequence([seed, torch.initial_seed()])`: PyTorch gives each worker of each iterator a
  distinct `torch.initial_seed()` (base seed + worker id, the base drawn from the main
  process's torch RNG), so workers never share a stream and a run under the same
  `torch.manual_seed` reproduces them. `seed_worker` (a DataLoader `worker_init_fn`) does the
  same eagerly and also seeds Python `random` and the global `np.random` of the worker.
* Degradation results therefore depend on which worker serves a sample and in which order;
  with `num_workers=0` they are the sampler's main stream.
"""

import copy
import json
import math
import os
import random
import sys

import numpy as np

__all__ = [
    'DegradationPresetError', 'DegradationSampler', 'PRESET_DIR', 'MEMBER_TYPES', 'JPEG_CHANNEL_ORDERS',
    'available_presets', 'resolve_preset', 'load_preset', 'build_sampler', 'seed_worker', 'jpeg_compress',
]

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'degradation_presets')
JPEG_CHANNEL_ORDERS = ('rgb', 'bgr_swap')

_TOP_KEYS = ('name', 'description', 'jpeg_channel_order', 'seed', 'groups', 'bases')
_BASE_KEYS = ('name', 'description', 'weight', 'chain')
_CHAIN_KEYS = ('group', 'p')

_INTERPOLATIONS = {  # names -> cv2 constants (values fixed by OpenCV's ABI)
    'nearest': 0, 'linear': 1, 'cubic': 2, 'area': 3, 'lanczos4': 4, 'linear_exact': 5, 'nearest_exact': 6,
}

#----------------------------------------------------------------------------
# Errors and preset files.

class DegradationPresetError(ValueError):
    """A degradation preset that cannot be used (one-line message naming the key and the file)."""

def available_presets():
    """Names of the presets shipped in `training/degradation_presets/`."""
    try:
        return sorted(os.path.splitext(f)[0] for f in os.listdir(PRESET_DIR) if f.endswith('.json'))
    except OSError:
        return []

def resolve_preset(name_or_path):
    """A preset name (`qc_stylegan_train`) or a path to a .json file -> the absolute file path."""
    text = os.fspath(name_or_path)
    if os.path.isfile(text):
        return os.path.abspath(text)
    if os.sep not in text and '/' not in text and not text.endswith('.json'):
        path = os.path.join(PRESET_DIR, text + '.json')
        if os.path.isfile(path):
            return path
    raise DegradationPresetError(f'Degradation preset "{text}" not found: give a preset name '
                                 f'({", ".join(available_presets()) or "none shipped"}) or the path of a .json preset file')

def load_preset(preset):
    """A preset name, path or dict -> a validated, normalised preset dict (a new object).

    The result has every optional key filled in, ranges as lists, and `"source"` set to the file
    it came from (or "<dict>")."""
    if isinstance(preset, dict):
        source = preset.get('source', '<dict>') if isinstance(preset.get('source'), str) else '<dict>'
        data = {k: v for k, v in preset.items() if k != 'source'}
        default_name = 'custom'
    else:
        source = resolve_preset(preset)
        try:
            with open(source, 'r', encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()
            raise DegradationPresetError(f'Degradation preset "{source}" cannot be read '
                                         f'({type(err).__name__}: {first[0] if first else ""}): fix the JSON') from None
        default_name = os.path.splitext(os.path.basename(source))[0]
    return _validate_preset(copy.deepcopy(data), source, default_name)

#----------------------------------------------------------------------------
# Validation helpers. `where` is the JSON path of the value, e.g. 'groups.blur[0].blur_limit'.

class _Checker:
    def __init__(self, source):
        self.source = source

    def fail(self, where, message):
        raise DegradationPresetError(f'Degradation preset "{self.source}": {where}: {message}')

    def keys(self, obj, where, allowed, required=()):
        if not isinstance(obj, dict):
            self.fail(where, f'must be a JSON object with keys {", ".join(allowed)}, got {_show(obj)}')
        for key in obj:
            if key not in allowed:
                self.fail(f'{where}.{key}' if where else key,
                          f'unknown key "{key}"; allowed keys: {", ".join(allowed)}')
        for key in required:
            if key not in obj:
                self.fail(where or 'preset', f'missing key "{key}"; allowed keys: {", ".join(allowed)}')

    def number(self, value, where, low=None, high=None, low_open=False, high_open=False, integer=False):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer:
            ok = float(value) == int(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            kind = 'an integer' if integer else 'a number'
            bounds = []
            if low is not None:
                bounds.append(f'{">" if low_open else ">="} {low}')
            if high is not None:
                bounds.append(f'{"<" if high_open else "<="} {high}')
            self.fail(where, f'must be {kind}{" " + " and ".join(bounds) if bounds else ""}, got {_show(value)}')
        return int(value) if integer else float(value)

    def pair(self, value, where, describe, **bounds):
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            self.fail(where, f'must be [low, high] with {describe}, got {_show(value)}')
        low = self.number(value[0], f'{where}[0]', **bounds)
        high = self.number(value[1], f'{where}[1]', **bounds)
        if low > high:
            self.fail(where, f'must be [low, high] with low <= high ({describe}), got {_show(value)}')
        return [low, high]

def _show(value):
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'

def _validate_preset(data, source, default_name):
    chk = _Checker(source)
    chk.keys(data, '', _TOP_KEYS, required=('groups', 'bases'))
    name = data.get('name', default_name)
    if not isinstance(name, str) or not name:
        chk.fail('name', f'must be a non-empty string, got {_show(name)}')
    description = data.get('description', '')
    if not isinstance(description, str):
        chk.fail('description', f'must be a string, got {_show(description)}')
    order = data.get('jpeg_channel_order', 'rgb')
    if order not in JPEG_CHANNEL_ORDERS:
        chk.fail('jpeg_channel_order', f'must be one of {", ".join(JPEG_CHANNEL_ORDERS)}, got {_show(order)}')
    seed = data.get('seed', None)
    if seed is not None:
        seed = chk.number(seed, 'seed', low=0, integer=True)

    groups = data['groups']
    if not isinstance(groups, dict) or not groups:
        chk.fail('groups', f'must be a non-empty JSON object {{"group name": [member, ...]}}, got {_show(groups)}')
    norm_groups = {}
    for gname, members in groups.items():
        where = f'groups.{gname}'
        if not isinstance(members, list) or not members:
            chk.fail(where, f'must be a non-empty list of members ({", ".join(MEMBER_TYPES)}), got {_show(members)}')
        norm_groups[gname] = [_validate_member(chk, m, f'{where}[{i}]') for i, m in enumerate(members)]

    bases = data['bases']
    if not isinstance(bases, list) or not bases:
        chk.fail('bases', f'must be a non-empty list of bases {{"name", "weight", "chain"}}, got {_show(bases)}')
    norm_bases = []
    seen = set()
    for i, base in enumerate(bases):
        where = f'bases[{i}]'
        chk.keys(base, where, _BASE_KEYS, required=('chain',))
        bname = base.get('name', f'base{i}')
        if not isinstance(bname, str) or not bname:
            chk.fail(f'{where}.name', f'must be a non-empty string, got {_show(bname)}')
        if bname in seen:
            chk.fail(f'{where}.name', f'duplicate base name "{bname}"')
        seen.add(bname)
        weight = chk.number(base.get('weight', 1), f'{where}.weight', low=0, low_open=True)
        chain = base['chain']
        if not isinstance(chain, list):
            chk.fail(f'{where}.chain', f'must be a list of {{"group": name, "p": probability}}, got {_show(chain)}')
        norm_chain = []
        for j, link in enumerate(chain):
            lwhere = f'{where}.chain[{j}]'
            chk.keys(link, lwhere, _CHAIN_KEYS, required=('group',))
            gname = link['group']
            if gname not in norm_groups:
                chk.fail(f'{lwhere}.group', f'unknown group {_show(gname)}; defined groups: {", ".join(norm_groups)}')
            p = chk.number(link.get('p', 1.0), f'{lwhere}.p', low=0, high=1)
            norm_chain.append({'group': gname, 'p': p})
        norm_bases.append({'name': bname, 'description': base.get('description', ''), 'weight': weight, 'chain': norm_chain})

    return {'name': name, 'description': description, 'jpeg_channel_order': order, 'seed': seed,
            'groups': norm_groups, 'bases': norm_bases, 'source': source}

def _odd_blur_limit(chk, value, where):
    low, high = chk.pair(value, where, 'odd integers >= 3', low=3, integer=True)
    if low % 2 == 0 or high % 2 == 0:
        chk.fail(where, f'must be [low, high] with odd integers >= 3 (kernel sizes), got {_show(value)}')
    return [low, high]

def _validate_member(chk, member, where):
    if not isinstance(member, dict):
        chk.fail(where, f'must be a JSON object {{"type": ..., parameters}}, got {_show(member)}')
    mtype = member.get('type')
    if mtype not in MEMBER_TYPES:
        chk.fail(f'{where}.type', f'unknown member type {_show(mtype)}; allowed types: {", ".join(MEMBER_TYPES)}')
    cls = MEMBER_TYPES[mtype]
    allowed = ('type', 'weight') + tuple(cls.defaults)
    chk.keys(member, where, allowed)
    params = dict(cls.defaults)
    params.update({k: v for k, v in member.items() if k not in ('type', 'weight')})
    params = cls.validate(chk, params, where)
    weight = chk.number(member.get('weight', 1), f'{where}.weight', low=0, low_open=True)
    return dict({'type': mtype, 'weight': weight}, **params)

#----------------------------------------------------------------------------
# Members. Each draws its parameters from the given Generator (`sample`) and applies them
# (`apply`); `sample` returns JSON-friendly values, which go into the info dict.

def _odd_choice(rng, low, high):
    """Uniform over the odd sizes low, low+2, ..., high (1.0.3: random.choice(np.arange(lo, hi+1, 2)))."""
    return int(low + 2 * rng.integers(0, (high - low) // 2 + 1))

def _as_2d(image):
    """OpenCV drops a trailing channel axis of size 1: work on HW and restore it afterwards."""
    return image[:, :, 0] if image.shape[2] == 1 else image

def _restore(result, like):
    if result.ndim == 2:
        result = result[:, :, np.newaxis]
    assert result.shape == like.shape, (result.shape, like.shape)
    return result

class _Member:
    type_name = None
    defaults = {}           # released parameter names -> defaults (None = required)

    def __init__(self, params):
        self.params = {k: v for k, v in params.items() if k not in ('type', 'weight')}
        self.weight = params['weight']

    @classmethod
    def validate(cls, chk, params, where):
        for key, value in params.items():
            if value is None:
                chk.fail(where, f'{cls.type_name} needs "{key}"; allowed keys: {", ".join(("type", "weight") + tuple(cls.defaults))}')
        return params

    def sample(self, rng, image):
        raise NotImplementedError

    def apply(self, image, params):
        raise NotImplementedError

class _BlurBase(_Member):
    defaults = {'blur_limit': None}

    @classmethod
    def validate(cls, chk, params, where):
        params = super().validate(chk, params, where)
        params['blur_limit'] = _odd_blur_limit(chk, params['blur_limit'], f'{where}.blur_limit')
        return params

    def sample(self, rng, image):
        return {'ksize': _odd_choice(rng, *self.params['blur_limit'])}

class _GaussianBlur(_BlurBase):
    type_name = 'GaussianBlur'
    defaults = {'blur_limit': None, 'sigma_limit': 0}

    @classmethod
    def validate(cls, chk, params, where):
        params = super().validate(chk, params, where)
        sigma = params['sigma_limit']
        if isinstance(sigma, (list, tuple)):
            params['sigma_limit'] = chk.pair(sigma, f'{where}.sigma_limit', 'sigma >= 0 (0 = OpenCV rule)', low=0)
        else:
            value = chk.number(sigma, f'{where}.sigma_limit', low=0)
            params['sigma_limit'] = [0.0, value]  # 1.0.3 to_tuple(x, 0)
        return params

    def sample(self, rng, image):
        low, high = self.params['blur_limit']
        ksize = int(rng.integers(low, high + 1))   # 1.0.3: random.randrange(low, high + 1)
        if ksize % 2 != 1:
            ksize = (ksize + 1) % (high + 1)       # 1.0.3's odd rule: `low` gets half the weight
        s_low, s_high = self.params['sigma_limit']
        sigma = float(rng.uniform(s_low, s_high)) if s_high > s_low else float(s_low)
        effective = sigma if sigma > 0 else 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
        return {'ksize': ksize, 'sigma': sigma, 'sigma_effective': effective}

    def apply(self, image, params):
        import cv2
        k = params['ksize']
        return _restore(cv2.GaussianBlur(_as_2d(image), (k, k), sigmaX=params['sigma']), image)

class _MotionBlur(_BlurBase):
    type_name = 'MotionBlur'

    def sample(self, rng, image):
        k = _odd_choice(rng, *self.params['blur_limit'])
        xs, xe = (int(v) for v in rng.integers(0, k, size=2))
        if xs == xe:
            ys, ye = (int(v) for v in rng.choice(k, size=2, replace=False))  # a line, not a dot
        else:
            ys, ye = (int(v) for v in rng.integers(0, k, size=2))
        return {'ksize': k, 'start': [xs, ys], 'end': [xe, ye]}

    @staticmethod
    def kernel(params):
        import cv2
        k = params['ksize']
        kernel = np.zeros((k, k), dtype=np.uint8)
        cv2.line(kernel, tuple(params['start']), tuple(params['end']), 1, thickness=1)
        return kernel.astype(np.float32) / np.sum(kernel)

    def apply(self, image, params):
        import cv2
        return _restore(cv2.filter2D(_as_2d(image), ddepth=-1, kernel=self.kernel(params)), image)

class _AlbuBlur(_BlurBase):
    """Blur / MedianBlur: albumentations 2.x `apply(img, kernel=k)` is the released operation."""
    albu_class = None

    def __init__(self, params):
        super().__init__(params)
        A = _albumentations()
        self._transform = getattr(A, self.albu_class)(blur_limit=tuple(self.params['blur_limit']), p=1.0)

    def apply(self, image, params):
        return _restore(self._transform.apply(image, kernel=params['ksize']), image)

class _MedianBlur(_AlbuBlur):
    type_name = 'MedianBlur'
    albu_class = 'MedianBlur'

class _BoxBlur(_AlbuBlur):
    type_name = 'Blur'
    albu_class = 'Blur'

class _GaussNoise(_Member):
    type_name = 'GaussNoise'
    defaults = {'var_limit': None, 'mean': 0, 'per_channel': True}

    @classmethod
    def validate(cls, chk, params, where):
        params = super().validate(chk, params, where)
        params['var_limit'] = chk.pair(params['var_limit'], f'{where}.var_limit', 'variances >= 0 on the 0-255 scale', low=0)
        params['mean'] = chk.number(params['mean'], f'{where}.mean')
        if not isinstance(params['per_channel'], bool):
            chk.fail(f'{where}.per_channel', f'must be true or false, got {_show(params["per_channel"])}')
        return params

    def sample(self, rng, image):
        low, high = self.params['var_limit']
        var = float(rng.uniform(low, high)) if high > low else float(low)
        return {'var': var, 'sigma': math.sqrt(var), 'mean': self.params['mean']}

    def apply(self, image, params, rng=None):
        shape = image.shape if self.params['per_channel'] else image.shape[:2] + (1,)
        gauss = rng.normal(params['mean'], params['sigma'], shape)              # float64, as 1.0.3
        noisy = image.astype(np.float32) + gauss
        return np.clip(noisy, 0, 255).astype(np.uint8)                          # truncating cast

class _Downscale(_Member):
    type_name = 'Downscale'
    defaults = {'scale_min': None, 'scale_max': None, 'interpolation': 'nearest'}

    @classmethod
    def validate(cls, chk, params, where):
        params = super().validate(chk, params, where)
        lo = chk.number(params['scale_min'], f'{where}.scale_min', low=0, high=1, low_open=True, high_open=True)
        hi = chk.number(params['scale_max'], f'{where}.scale_max', low=0, high=1, low_open=True, high_open=True)
        if lo > hi:
            chk.fail(f'{where}.scale_min', f'must be <= scale_max ({hi}), got {_show(params["scale_min"])}')
        interp = params['interpolation']
        if interp not in _INTERPOLATIONS:
            chk.fail(f'{where}.interpolation', f'must be one of {", ".join(_INTERPOLATIONS)}, got {_show(interp)}')
        params.update(scale_min=lo, scale_max=hi)
        return params

    def __init__(self, params):
        super().__init__(params)
        A = _albumentations()
        flag = _INTERPOLATIONS[self.params['interpolation']]
        self._transform = A.Downscale(scale_range=(self.params['scale_min'], self.params['scale_max']),
                                      interpolation_pair={'downscale': flag, 'upscale': flag}, p=1.0)

    def sample(self, rng, image):
        lo, hi = self.params['scale_min'], self.params['scale_max']
        return {'scale': float(rng.uniform(lo, hi)) if hi > lo else lo}

    def apply(self, image, params):
        return _restore(self._transform.apply(image, scale=params['scale']), image)

class _ImageCompression(_Member):
    type_name = 'ImageCompression'
    defaults = {'quality_lower': None, 'quality_upper': None}

    @classmethod
    def validate(cls, chk, params, where):
        params = super().validate(chk, params, where)
        lo = chk.number(params['quality_lower'], f'{where}.quality_lower', low=1, high=100, integer=True)
        hi = chk.number(params['quality_upper'], f'{where}.quality_upper', low=1, high=100, integer=True)
        if lo > hi:
            chk.fail(f'{where}.quality_lower', f'must be <= quality_upper ({hi}), got {lo}')
        params.update(quality_lower=lo, quality_upper=hi)
        return params

    def sample(self, rng, image):
        return {'quality': int(rng.integers(self.params['quality_lower'], self.params['quality_upper'] + 1))}

    def apply(self, image, params, channel_order='rgb'):
        return jpeg_compress(image, params['quality'], channel_order)

MEMBER_TYPES = {cls.type_name: cls for cls in (_GaussianBlur, _MotionBlur, _MedianBlur, _BoxBlur, _GaussNoise, _Downscale, _ImageCompression)}

#----------------------------------------------------------------------------
# albumentations (imported lazily: ~1 s, and only needed once a sampler draws).

def _albumentations():
    if 'albumentations' not in sys.modules:
        os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # no network version check at import
    import albumentations
    return albumentations

_jpeg_transform = None

def jpeg_compress(image, quality, channel_order='rgb'):
    """JPEG-compress a uint8 HWC (or HW) image at `quality` through albumentations 2.x / OpenCV.

    channel_order="rgb": the image is RGB and OpenCV is given BGR (correct colours);
    "bgr_swap": the RGB array is handed to OpenCV as if it were BGR (the released behaviour).
    One-channel images are encoded as grayscale JPEG."""
    global _jpeg_transform
    if channel_order not in JPEG_CHANNEL_ORDERS:
        raise ValueError(f'jpeg_compress: channel_order must be one of {", ".join(JPEG_CHANNEL_ORDERS)}, got {channel_order!r}')
    if _jpeg_transform is None:
        _jpeg_transform = _albumentations().ImageCompression(compression_type='jpeg', quality_range=(1, 100), p=1.0)
    squeeze = image.ndim == 2
    work = image[:, :, np.newaxis] if squeeze else image
    swap = channel_order == 'rgb' and work.shape[2] == 3
    if swap:
        work = np.ascontiguousarray(work[:, :, ::-1])
    out = _jpeg_transform.apply(work, quality=int(quality), image_type='.jpg')
    if out.ndim == 2:
        out = out[:, :, np.newaxis]
    if swap:
        out = out[:, :, ::-1]
    out = np.ascontiguousarray(out)
    return out[:, :, 0] if squeeze else out

#----------------------------------------------------------------------------

def _seed_sequence(*entropy):
    return np.random.SeedSequence([int(e) % (1 << 64) for e in entropy])

def _current_worker_seed():
    """`torch.initial_seed()` of the DataLoader worker we are in, or None outside workers."""
    torch = sys.modules.get('torch')
    if torch is None:
        return None
    info = torch.utils.data.get_worker_info()
    return None if info is None else int(info.seed)

class DegradationSampler:
    """Draws one random degradation per call from a preset (see the module docstring).

    Args:
        preset: preset name (`'qc_stylegan_train'`, `'qc_psp_encoder'`), path of a .json preset
                file, or a preset dict.
        seed:   seed of the sampler's own stream; None = the preset's `"seed"`, else 0.

    Call: `sampler(image, rng=None) -> (degraded, info)`. `image` is uint8 HWC with 1 or 3
    channels (or HW); the result has the same shape and dtype and is a new array. `rng` is a
    `numpy.random.Generator` (or an int seed) to draw from instead of the sampler's stream.

    The object pickles (its albumentations transforms are rebuilt on first use after loading).
    """

    def __init__(self, preset, seed=None):
        self._preset = load_preset(preset)
        if seed is None:
            seed = self._preset['seed'] if self._preset['seed'] is not None else 0
        self._ops = None
        self._stream_key = None
        self.reseed(seed)

    # -- properties ----------------------------------------------------------

    @property
    def name(self):
        return self._preset['name']

    @property
    def source(self):
        """The preset file this sampler was built from ("<dict>" for dict presets)."""
        return self._preset['source']

    @property
    def preset(self):
        """A copy of the validated, normalised preset dict."""
        return copy.deepcopy(self._preset)

    @property
    def seed(self):
        return self._seed

    @property
    def jpeg_channel_order(self):
        return self._preset['jpeg_channel_order']

    @property
    def base_probabilities(self):
        """{base name: probability of being drawn}."""
        total = sum(b['weight'] for b in self._preset['bases'])
        return {b['name']: b['weight'] / total for b in self._preset['bases']}

    def __repr__(self):
        return f'DegradationSampler({self.name!r}, seed={self._seed}, source={self.source!r})'

    # -- seeding -------------------------------------------------------------

    def reseed(self, seed):
        """Restart the sampler's stream from `seed` (a non-negative int)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'DegradationSampler.reseed: seed must be a non-negative integer, got {seed!r}')
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(_seed_sequence(self._seed)))
        self._stream_key = None

    def reseed_for_worker(self, worker_seed):
        """Switch to the stream of a DataLoader worker: SeedSequence([seed, worker_seed]).

        `worker_seed` is the worker's `torch.initial_seed()`. Called automatically on the first
        draw inside a worker, and by `seed_worker`."""
        self._rng = np.random.Generator(np.random.PCG64(_seed_sequence(self._seed, worker_seed)))
        self._stream_key = int(worker_seed)

    def _stream(self):
        key = _current_worker_seed()
        if key is not None and key != self._stream_key:
            self.reseed_for_worker(key)
        return self._rng

    # -- pickling ------------------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_ops'] = None  # rebuilt lazily
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # -- drawing -------------------------------------------------------------

    def _get_ops(self):
        if self._ops is None:
            self._ops = {gname: [MEMBER_TYPES[m['type']](m) for m in members]
                         for gname, members in self._preset['groups'].items()}
        return self._ops

    def __call__(self, image, rng=None):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
                or (image.ndim == 3 and image.shape[2] not in (1, 3)) or min(image.shape[:2]) < 1:
            desc = f'{image.dtype} array of shape {image.shape}' if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f'DegradationSampler: expected a uint8 HWC image with 1 or 3 channels (or HW), got a {desc}')
        if rng is None:
            rng = self._stream()
        elif isinstance(rng, np.random.RandomState):
            rng = np.random.Generator(np.random.PCG64(int(rng.randint(0, 2**63, dtype=np.int64))))
        elif not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        ops = self._get_ops()

        squeeze = image.ndim == 2
        work = np.ascontiguousarray(image[:, :, np.newaxis] if squeeze else image)

        bases = self._preset['bases']
        weights = np.array([b['weight'] for b in bases], dtype=np.float64)
        base_index = int(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(), side='right'))
        base_index = min(base_index, len(bases) - 1)
        base = bases[base_index]

        record = []
        for link in base['chain']:
            gname, p = link['group'], link['p']
            fired = bool(rng.random() < p)
            entry = {'group': gname, 'fired': fired, 'member': None, 'params': None}
            if fired:
                members = ops[gname]
                mweights = np.array([m.weight for m in members], dtype=np.float64)
                mindex = int(np.searchsorted(np.cumsum(mweights / mweights.sum()), rng.random(), side='right'))
                member = members[min(mindex, len(members) - 1)]
                params = member.sample(rng, work)
                if isinstance(member, _GaussNoise):
                    work = member.apply(work, params, rng=rng)
                elif isinstance(member, _ImageCompression):
                    params['channel_order'] = self.jpeg_channel_order
                    work = member.apply(work, params, channel_order=self.jpeg_channel_order)
                else:
                    work = member.apply(work, params)
                entry.update(member=member.type_name, params=params)
            record.append(entry)

        out = np.ascontiguousarray(work[:, :, 0] if squeeze else work)
        if out is image or np.shares_memory(out, image):
            out = out.copy()
        return out, {'base': base['name'], 'base_index': base_index, 'groups': record}

#----------------------------------------------------------------------------

def build_sampler(degradation, seed=None):
    """None -> None; a `DegradationSampler` -> itself; a preset name/path/dict -> a new sampler.

    `seed` is used for new samplers whose preset has no `"seed"` of its own."""
    if degradation is None or isinstance(degradation, DegradationSampler):
        return degradation
    if isinstance(degradation, (str, os.PathLike, dict)):
        preset = load_preset(degradation)
        if preset['seed'] is None and seed is not None:
            return DegradationSampler(preset, seed=int(seed))
        return DegradationSampler(preset)
    raise DegradationPresetError(f'degradation must be a preset name ({", ".join(available_presets())}), '
                                 f'a .json path, a preset dict or a DegradationSampler, got {type(degradation).__name__}')

def _find_samplers(obj, depth=0, seen=None):
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 3:
        return []
    seen.add(id(obj))
    if isinstance(obj, DegradationSampler):
        return [obj]
    found = []
    children = list(getattr(obj, '__dict__', {}).values())
    for value in children:
        if isinstance(value, DegradationSampler):
            found += _find_samplers(value, depth + 1, seen)
        elif hasattr(value, '__getitem__') and hasattr(value, '__len__') and hasattr(value, '__dict__') \
                and not isinstance(value, (np.ndarray, str, bytes)):
            found += _find_samplers(value, depth + 1, seen)  # wrapped datasets (Subset, ...)
        elif isinstance(value, (list, tuple)) and depth < 2:
            for item in value:
                if hasattr(item, '__getitem__') and hasattr(item, '__dict__'):
                    found += _find_samplers(item, depth + 1, seen)  # ConcatDataset.datasets
    return found

def seed_worker(worker_id):
    """DataLoader `worker_init_fn`: seeds Python `random` and the global `np.random` of the worker
    from `torch.initial_seed()` and switches every `DegradationSampler` reachable from the worker's
    dataset to its per-worker stream (what the sampler would otherwise do on its first draw)."""
    import torch
    worker_seed = int(torch.initial_seed())
    random.seed(worker_seed)
    np.random.seed(worker_seed % (1 << 32))
    info = torch.utils.data.get_worker_info()
    if info is not None:
        for sampler in _find_samplers(info.dataset):
            sampler.reseed_for_worker(worker_seed)

#----------------------------------------------------------------------------
