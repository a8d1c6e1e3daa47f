"""Image restoration metrics: PSNR, SSIM, LPIPS, NIQE and patch FID.

Image layout conventions (all functions):

* a 4-D array/tensor is a batch `[N, C, H, W]` and gives one value per image (numpy `[N]`, or a
  tensor for the `*_torch` variants);
* a 3-D torch tensor is one image `[C, H, W]`; a 3-D numpy array is one image `[H, W, C]` (the
  skimage/PIL convention) unless `channel_axis=0` is given; a 2-D input is one grayscale image.
  Single images give a Python float.

PSNR and SSIM take `data_range` (the span of the value range, e.g. 1 for [0, 1], 2 for [-1, 1],
255 for uint8) as skimage does. LPIPS takes images in [-1, 1]. NIQE and patch FID take `drange`,
the (low, high) value range, and work on 8-bit levels internally.

* `psnr` / `psnr_torch`: 10 log10(data_range^2 / MSE) per image.
* `ssim` / `ssim_torch`: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, population (co)variances, averaged over the valid region and the channels; equal to
  `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=..., channel_axis=...)`. Differentiable.
* `LPIPS`: the `lpips` package (v0.1 linear weights ship inside it; alex or vgg backbone with
  torchvision's ImageNet weights from torch hub's cache). Differentiable.
* `niqe`: Mittal et al. 2013 (the reference MATLAB algorithm) against a pristine MVG model that
  the user provides (`load_niqe_model`) or fits (`fit_niqe_model`).
* `patch_fid`: FID between random square crops of two image sets (the pFID of the robust
  unsupervised inversion benchmark), with the NVlabs Inception detector of the GAN metrics.
"""

import io
import os
import warnings

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
import torch

import dnnlib
from torch_utils import misc

from . import metric_utils
from .frechet_inception_distance import frechet_distance

#----------------------------------------------------------------------------
# Input handling.

def _to_nchw(x, channel_axis=None):
    """-> (float64 tensor [N, C, H, W], batched?). Keeps autograd for torch inputs."""
    is_torch = isinstance(x, torch.Tensor)
    t = x if is_torch else torch.from_numpy(np.asarray(x))
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype != torch.float64:
        t = t.to(torch.float64)
    if t.ndim == 4:
        if channel_axis not in (None, 1, -3):
            t = t.movedim(channel_axis, 1)
        return t, True
    if t.ndim == 3:
        axis = channel_axis if channel_axis is not None else (0 if is_torch else -1)
        return t.movedim(axis, 0).unsqueeze(0), False
    if t.ndim == 2:
        return t[None, None], False
    raise ValueError(f'expected an image [H, W], [H, W, C] / [C, H, W] or a batch [N, C, H, W], got shape {tuple(t.shape)}')


def _check_pair(a, b):
    if a.shape != b.shape:
        raise ValueError(f'images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}')


def _result(values, batched):
    values = values.detach().cpu().numpy()
    return values if batched else float(values[0])

#----------------------------------------------------------------------------
# PSNR.

def psnr_torch(a, b, data_range):
    """PSNR in dB per image of two batches `[N, C, H, W]` (tensor `[N]`; inf for identical images)."""
    _check_pair(a, b)
    mse = (a.to(torch.float64) - b.to(torch.float64)).square().flatten(1).mean(1)
    return 10 * torch.log10(torch.as_tensor(float(data_range) ** 2, dtype=torch.float64, device=mse.device) / mse)


def psnr(a, b, data_range, channel_axis=None):
    """PSNR in dB (float for one image, numpy `[N]` for a batch)."""
    a, batched = _to_nchw(a, channel_axis)
    b, _ = _to_nchw(b, channel_axis)
    with torch.no_grad():
        return _result(psnr_torch(a, b, data_range), batched)

#----------------------------------------------------------------------------
# SSIM.

SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

def _gaussian_taps(sigma, radius, dtype=torch.float64, device=None):
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim_torch(a, b, data_range, win_size=SSIM_WIN_SIZE, sigma=SSIM_SIGMA, K1=SSIM_K1, K2=SSIM_K2):
    """SSIM per image of two batches `[N, C, H, W]` (tensor `[N]`, differentiable).

    Local statistics use a separable Gaussian window of `win_size` taps (valid region only, which
    equals skimage's filtered-then-cropped result); channel SSIMs are averaged.
    """
    _check_pair(a, b)
    if a.shape[-1] < win_size or a.shape[-2] < win_size:
        raise ValueError(f'SSIM needs images of at least {win_size}x{win_size} pixels, got {a.shape[-1]}x{a.shape[-2]}')
    dtype = torch.float64 if a.dtype == torch.float64 or b.dtype == torch.float64 else torch.float32
    a = a.to(dtype)
    b = b.to(dtype)
    n, c = a.shape[:2]
    g = _gaussian_taps(sigma, (win_size - 1) // 2, dtype=dtype, device=a.device)
    kh = g.reshape(1, 1, -1, 1).repeat(c * 5, 1, 1, 1)
    kw = g.reshape(1, 1, 1, -1).repeat(c * 5, 1, 1, 1)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    f = torch.nn.functional.conv2d(stack, kh, groups=c * 5)
    f = torch.nn.functional.conv2d(f, kw, groups=c * 5)
    mu_a, mu_b, aa, bb, ab = f.split(c, dim=1)
    var_a = aa - mu_a * mu_a
    var_b = bb - mu_b * mu_b
    cov_ab = ab - mu_a * mu_b
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.flatten(2).mean(2).mean(1)


def ssim(a, b, data_range, channel_axis=None):
    """SSIM (float for one image, numpy `[N]` for a batch); see `ssim_torch`."""
    a, batched = _to_nchw(a, channel_axis)
    b, _ = _to_nchw(b, channel_axis)
    with torch.no_grad():
        return _result(ssim_torch(a, b, data_range), batched)

#----------------------------------------------------------------------------
# LPIPS.

LPIPS_BACKBONE_URLS = {
    'alex': 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
    'vgg':  'https://download.pytorch.org/models/vgg16-397923af.pth',
}


class LPIPSWeightsError(dnnlib.DownloadError):
    """The ImageNet backbone weights for LPIPS are missing and cannot be downloaded."""


def lpips_backbone_path(net):
    """Where torch hub keeps (and this module looks for) the backbone weights of `net`."""
    url = LPIPS_BACKBONE_URLS[net]
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))


def _offline():
    return os.environ.get('DNNLIB_OFFLINE', '').strip().lower() not in ('', '0', 'false', 'no', 'off')


def _backbone_state(net, backbone_path):
    url = LPIPS_BACKBONE_URLS[net]
    if backbone_path is not None:
        path = os.fspath(backbone_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'LPIPS backbone weights file not found: "{path}" (expected torchvision\'s {url})')
    else:
        path = lpips_backbone_path(net)
        if not os.path.isfile(path):
            def fail(reason):
                return LPIPSWeightsError(
                    f'LPIPS-{net} needs torchvision\'s ImageNet {net} weights, expected at "{path}" ({reason}). '
                    f'Download {url} by other means and save it as that file (torch hub\'s cache, '
                    f'$TORCH_HOME/hub/checkpoints), or pass backbone_path=FILE.', url=url, cache_path=path, reason=reason)
            if _offline():
                raise fail('not found, and downloads are disabled by DNNLIB_OFFLINE')
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.hub.download_url_to_file(url, path, progress=False)
            except Exception as err:  # pylint: disable=broad-except
                raise fail(f'not found, and the download failed: {type(err).__name__}: {" ".join(str(err).split())[:200]}') from None
    try:
        state = misc.load_weights_only(path)
    except (ValueError, OSError) as err:
        raise LPIPSWeightsError(f'Cannot read the LPIPS-{net} backbone weights "{path}" ({err}); '
                                f'delete the file and download {url} again', url=url, cache_path=path) from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    return state, path


def _copy_backbone(pnet, state, net, path):
    """Fill the lpips package's slice modules (`sliceK.<features index>.*`) from a torchvision state dict."""
    with torch.no_grad():
        for name, tensor in list(pnet.named_parameters()) + list(pnet.named_buffers()):
            parts = name.split('.')  # sliceK, index, param
            key = f'features.{parts[1]}.{parts[2]}'
            if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
                raise LPIPSWeightsError(f'"{path}" is not torchvision\'s ImageNet {net} state dict '
                                        f'(missing or mismatched "{key}")', url=LPIPS_BACKBONE_URLS[net], cache_path=path)
            tensor.copy_(state[key])


LPIPS_BACKBONE_HELP = ('LPIPS backbone: "pretrained" (torchvision ImageNet weights in torch hub\'s cache), "random" '
                       '(tests/demos: numbers not comparable), or PATH (a torchvision weights file, or a folder holding them)')

def check_lpips_backbone(spec):
    """Validate a `--lpips-backbone` value ('pretrained', 'random' or an existing file/folder); returns it."""
    if spec in (None, 'pretrained', 'random'):
        return spec or 'pretrained'
    if not os.path.exists(os.fspath(spec)):
        raise FileNotFoundError(f'LPIPS backbone "{spec}" is neither "pretrained", "random" nor an existing file or folder')
    return os.fspath(spec)

def _weights_net(path):
    """'alex' / 'vgg' for a torchvision AlexNet / VGG16 weights file (by its first conv), else None."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # pylint: disable=broad-except
        return None
    first = state.get('features.0.weight') if isinstance(state, dict) else None
    if first is None or first.ndim != 4:
        return None
    return {11: 'alex', 3: 'vgg'}.get(int(first.shape[-1]))

def build_lpips(net='alex', backbone='pretrained', **kwargs):
    """`LPIPS(net)` for a `--lpips-backbone` value: 'pretrained', 'random', or PATH. PATH is a folder
    holding torchvision's files (`alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`) or one weights
    file, used for the LPIPS net it belongs to (the other net keeps the default location)."""
    backbone = check_lpips_backbone(backbone)
    if backbone == 'random':
        return LPIPS(net=net, pnet_rand=True, **kwargs)
    path = None
    if backbone != 'pretrained':
        if os.path.isdir(backbone):
            path = os.path.join(backbone, os.path.basename(LPIPS_BACKBONE_URLS[net]))
        elif _weights_net(backbone) == net:
            path = backbone
    return LPIPS(net=net, backbone_path=path, **kwargs)


class LPIPS(torch.nn.Module):
    """LPIPS distance (Zhang et al. 2018) through the `lpips` package: `lpips(a, b) -> [N]`.

    Inputs are image batches `[N, 3, H, W]` in [-1, 1]. `net` is 'alex' or 'vgg'. The package's
    learned linear layers (v0.1) are always loaded from the files shipped inside the package. The
    backbone gets torchvision's ImageNet weights from `backbone_path`, or from torch hub's cache
    (downloaded there when missing, unless `DNNLIB_OFFLINE=1`); a missing file raises one
    `LPIPSWeightsError` naming the expected path and URL. `pnet_rand=True` keeps a random
    backbone (tests). Parameters are frozen; gradients flow to the inputs.
    """

    def __init__(self, net='alex', version='0.1', pnet_rand=False, backbone_path=None, spatial=False):
        super().__init__()
        if net not in LPIPS_BACKBONE_URLS:
            raise ValueError(f'LPIPS net must be one of {", ".join(LPIPS_BACKBONE_URLS)}, got "{net}"')
        try:
            import lpips as lpips_package
        except ImportError:
            raise ImportError('LPIPS needs the lpips package: pip install lpips') from None
        state = path = None
        if not pnet_rand:
            state, path = _backbone_state(net, backbone_path)  # fail before building anything
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torchvision's 'pretrained' deprecation, torch.load notes
            self.model = lpips_package.LPIPS(net=net, version=version, pretrained=True, pnet_rand=True,
                                             spatial=spatial, verbose=False)
        if state is not None:
            _copy_backbone(self.model.net, state, net, path)
        self.net = net
        self.backbone = 'random' if pnet_rand else path  # provenance: 'random' or the weights file used
        self.eval().requires_grad_(False)

    def forward(self, a, b):
        _check_pair(a, b)
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f'LPIPS expects RGB batches [N, 3, H, W] in [-1, 1], got shape {tuple(a.shape)}')
        dtype = next(self.model.parameters()).dtype
        d = self.model(a.to(dtype), b.to(dtype))
        return d.flatten(1).sum(1) if not self.model.spatial else d

    def features(self, x):
        """The backbone's feature maps (LPIPS's five taps, e.g. VGG16 relu1_2 ... relu5_3), raw: not
        unit-normalised nor weighted, for images `[N, 3, H, W]` in [-1, 1] -> list of `[N, C_k, H_k, W_k]`."""
        dtype = next(self.model.parameters()).dtype
        return list(self.model.net(self.model.scaling_layer(x.to(dtype))))

    def train(self, mode=True):  # the wrapped network stays in eval mode (no dropout)
        return super().train(False)

#----------------------------------------------------------------------------
# NIQE.

NIQE_MODEL_ENV = 'QCGAN_NIQE_MODEL'
NIQE_PATCH_SIZE = 96
NIQE_SHARPNESS_THRESHOLD = 0.75
NIQE_NUM_FEATURES = 36


class NIQEModelError(FileNotFoundError):
    """The pristine NIQE model is missing or malformed (one-line message saying what to provide)."""


def niqe_model_cache_path():
    """Default location of the pristine model: `<dnnlib cache>/niqe/niqe_pristine_model.npz`."""
    return dnnlib.make_cache_dir_path('niqe', 'niqe_pristine_model.npz')


def _niqe_model_hint():
    return (f'NIQE needs the pristine MVG model of Mittal et al. 2013 (mu [{NIQE_NUM_FEATURES}], cov '
            f'[{NIQE_NUM_FEATURES}x{NIQE_NUM_FEATURES}]): provide the MATLAB file modelparameters.mat (variables '
            f'mu_prisparam, cov_prisparam) or an .npz with arrays mu and cov, either as niqe(..., model=PATH_OR_URL), '
            f'in the environment variable {NIQE_MODEL_ENV}, or saved as "{niqe_model_cache_path()}" '
            f'(a .mat may be saved there as modelparameters.mat); or fit one from pristine images with fit_niqe_model(). '
            f'The standard file is modelparameters.mat from the authors\' MATLAB release '
            f'(http://live.ece.utexas.edu/research/quality/niqe_release.zip); BasicSR\'s '
            f'basicsr/metrics/niqe_pris_params.npz (mu_pris_param, cov_pris_param) holds the same model')


def _parse_niqe_model(data, source):
    keys = list(data.keys())
    for mu_key, cov_key in [('mu', 'cov'), ('mu_prisparam', 'cov_prisparam'), ('mu_pris_param', 'cov_pris_param')]:
        if mu_key in data and cov_key in data:
            mu = np.asarray(data[mu_key], dtype=np.float64).reshape(-1)
            cov = np.asarray(data[cov_key], dtype=np.float64)
            if cov.ndim != 2 or cov.shape != (mu.size, mu.size):
                raise NIQEModelError(f'NIQE model "{source}": mu has {mu.size} entries but cov has shape {cov.shape}')
            return dict(mu=mu, cov=cov)
    raise NIQEModelError(f'NIQE model "{source}" has no mu/cov arrays (found: {", ".join(k for k in keys if not k.startswith("__"))}); '
                         + _niqe_model_hint())


def load_niqe_model(source=None):
    """The pristine model `dict(mu [D], cov [D, D])`.

    `source`: a dict with mu/cov, a path or URL of an .npz (mu, cov) or MATLAB .mat
    (mu_prisparam, cov_prisparam); None looks at `$QCGAN_NIQE_MODEL`, then at
    `niqe_model_cache_path()` and `modelparameters.mat` next to it. Raises `NIQEModelError`.
    """
    if isinstance(source, dict):
        return _parse_niqe_model(source, 'dict')
    candidates = []
    if source is not None:
        candidates = [os.fspath(source)]
    elif os.environ.get(NIQE_MODEL_ENV):
        candidates = [os.environ[NIQE_MODEL_ENV]]
    else:
        default = niqe_model_cache_path()
        candidates = [p for p in [default, os.path.join(os.path.dirname(default), 'modelparameters.mat')] if os.path.isfile(p)]
        if not candidates:
            raise NIQEModelError(f'No NIQE model found at "{default}". ' + _niqe_model_hint())
    spec = candidates[0]
    local = metric_utils._local_path(spec)
    if local is not None and not os.path.isfile(local):
        raise NIQEModelError(f'NIQE model file not found: "{local}". ' + _niqe_model_hint())
    try:
        with dnnlib.util.open_url(spec, verbose=False) as f:
            raw = f.read()
    except dnnlib.DownloadError as err:
        raise NIQEModelError(f'{err} ' + _niqe_model_hint()) from None
    try:
        if raw[:6] == b'MATLAB' or spec.lower().endswith('.mat'):
            data = scipy.io.loadmat(io.BytesIO(raw))
        else:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
    except Exception as err:  # pylint: disable=broad-except
        raise NIQEModelError(f'Cannot read NIQE model "{spec}" ({type(err).__name__}: {err}). ' + _niqe_model_hint()) from None
    return _parse_niqe_model(data, spec)


def save_niqe_model(model, path):
    """Write `dict(mu, cov)` as an .npz loadable by `load_niqe_model` (atomically)."""
    model = _parse_niqe_model(model, 'model')
    with dnnlib.util.atomic_write(os.fspath(path), 'wb') as f:
        np.savez(f, mu=model['mu'], cov=model['cov'])


def _gray255(img, drange):
    """One image (any layout accepted by _to_nchw, single) -> float64 [H, W] on integer 0..255 levels."""
    lo, hi = drange
    x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    x = x.astype(np.float64)
    x = np.round(np.clip((x - lo) * (255.0 / (hi - lo)), 0, 255))  # the 8-bit image
    if x.shape[0] == 3:
        x = 0.2989 * x[0] + 0.5870 * x[1] + 0.1140 * x[2]  # MATLAB rgb2gray
    elif x.shape[0] == 1:
        x = x[0]
    else:
        raise ValueError(f'NIQE expects gray or RGB images, got {x.shape[0]} channels')
    return np.round(x)  # MATLAB's rgb2gray of a uint8 image is uint8 again


def _matlab_cubic(x):
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) +
            (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_weights(in_len, scale):
    """MATLAB imresize (bicubic, antialiased) weights: (indices [out, taps], weights [out, taps])."""
    out_len = int(np.ceil(in_len * scale))
    width = 4.0
    kernel = _matlab_cubic
    if scale < 1:
        width = 4.0 / scale
        kernel = lambda x: scale * _matlab_cubic(scale * x)  # noqa: E731  (antialiasing)
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    return idx[:, keep], w[:, keep]


def imresize_matlab(img, scale):
    """Resize a 2-D float image like MATLAB's `imresize(img, scale)` (bicubic, antialiasing)."""
    out = np.asarray(img, dtype=np.float64)
    for axis in (0, 1):
        idx, w = _resize_weights(out.shape[axis], scale)
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np.einsum('ot,ot...->o...', w, moved[idx]), 0, axis)
    return out


def _niqe_window():
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def _mscn(img):
    """MSCN coefficients and the local deviation map (7x7 Gaussian, sigma 7/6, replicate borders)."""
    window = _niqe_window()
    mu = scipy.ndimage.correlate(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(scipy.ndimage.correlate(img * img, window, mode='nearest') - mu * mu))
    return (img - mu) / (sigma + 1), sigma


_AGGD_GAMMA = np.round(0.2 + 0.001 * np.arange(9801), 3)  # 0.2:0.001:10
_AGGD_R = scipy.special.gamma(2 / _AGGD_GAMMA) ** 2 / (scipy.special.gamma(1 / _AGGD_GAMMA) * scipy.special.gamma(3 / _AGGD_GAMMA))


def _aggd_fit(x):
    """Asymmetric GGD fit per row of `x [B, n]`: (alpha, beta_left, beta_right), each [B]."""
    with np.errstate(divide='ignore', invalid='ignore'):
        neg = x < 0
        pos = x > 0
        left_std = np.sqrt((np.where(neg, x, 0) ** 2).sum(1) / neg.sum(1))
        right_std = np.sqrt((np.where(pos, x, 0) ** 2).sum(1) / pos.sum(1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        r_hat_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    alpha = np.full(x.shape[0], np.nan)
    ok = np.isfinite(r_hat_norm)
    if ok.any():
        # _AGGD_R increases with alpha: the nearest table entry is found by bisection.
        pos_idx = np.clip(np.searchsorted(_AGGD_R, r_hat_norm[ok]), 1, _AGGD_R.size - 1)
        lower_closer = np.abs(_AGGD_R[pos_idx - 1] - r_hat_norm[ok]) <= np.abs(_AGGD_R[pos_idx] - r_hat_norm[ok])
        alpha[ok] = _AGGD_GAMMA[pos_idx - lower_closer.astype(np.int64)]
    with np.errstate(divide='ignore', invalid='ignore'):
        scale = np.sqrt(scipy.special.gamma(1 / alpha) / scipy.special.gamma(3 / alpha))
    return alpha, left_std * scale, right_std * scale


def _block_features(mscn, block):
    """18 NIQE features per non-overlapping `block`x`block` patch (row-major), [B, 18]."""
    h, w = mscn.shape
    nh, nw = h // block, w // block
    blocks = mscn[:nh * block, :nw * block].reshape(nh, block, nw, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    feats = []
    alpha, bl, br = _aggd_fit(blocks.reshape(blocks.shape[0], -1))
    feats += [alpha, (bl + br) / 2]
    for shift in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))  # circular shift within each patch
        alpha, bl, br = _aggd_fit(pair.reshape(pair.shape[0], -1))
        with np.errstate(divide='ignore', invalid='ignore'):
            mean = (br - bl) * (scipy.special.gamma(2 / alpha) / scipy.special.gamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


def niqe_features(img, patch_size=NIQE_PATCH_SIZE, drange=(0, 255), channel_axis=None, return_sharpness=False):
    """NIQE features `[num_patches, 36]` of one image (two scales of 18; scale 2 is a bicubic 0.5x).

    With `return_sharpness`, also the mean local deviation of each patch at scale 1 (used to pick
    pristine patches).
    """
    x, batched = _to_nchw(img, channel_axis)
    if batched:
        raise ValueError('niqe_features takes one image; call it per image')
    gray = _gray255(x[0], drange)
    h, w = gray.shape
    if h < patch_size or w < patch_size:
        raise ValueError(f'NIQE needs images of at least {patch_size}x{patch_size} pixels, got {w}x{h} '
                         f'(a smaller patch_size also needs a pristine model fitted with it)')
    if patch_size % 2:
        raise ValueError(f'NIQE patch_size must be even, got {patch_size}')
    gray = gray[:h // patch_size * patch_size, :w // patch_size * patch_size]
    feats = []
    sharpness = None
    for scale in (1, 2):
        mscn, sigma = _mscn(gray)
        block = patch_size // scale
        feats.append(_block_features(mscn, block))
        if scale == 1:
            nh, nw = sigma.shape[0] // block, sigma.shape[1] // block
            sharpness = sigma[:nh * block, :nw * block].reshape(nh, block, nw, block).mean(axis=(1, 3)).reshape(-1)
            gray = imresize_matlab(gray, 0.5)
    feats = np.concatenate(feats, axis=1)
    return (feats, sharpness) if return_sharpness else feats


def _nan_mean_cov(feats):
    mu = np.nanmean(feats, axis=0)
    rows = feats[np.all(np.isfinite(feats), axis=1)]
    if rows.shape[0] >= 2:
        cov = np.cov(rows, rowvar=False)
    else:
        cov = np.zeros([feats.shape[1], feats.shape[1]])
    return mu, cov


def fit_niqe_model(images, patch_size=NIQE_PATCH_SIZE, sharpness_threshold=NIQE_SHARPNESS_THRESHOLD, drange=(0, 255),
                   channel_axis=None):
    """Pristine MVG model `dict(mu, cov)` from pristine images: features of the patches whose sharpness
    exceeds `sharpness_threshold` times the image's sharpest patch (as MATLAB's estimatemodelparam)."""
    selected = []
    for img in images:
        feats, sharpness = niqe_features(img, patch_size=patch_size, drange=drange, channel_axis=channel_axis,
                                         return_sharpness=True)
        selected.append(feats[sharpness > sharpness_threshold * sharpness.max()])
    feats = np.concatenate(selected, axis=0)
    mu, cov = _nan_mean_cov(feats)
    return dict(mu=mu, cov=cov)


def niqe(images, model=None, patch_size=NIQE_PATCH_SIZE, drange=(0, 255), channel_axis=None):
    """NIQE score (lower = more natural): float for one image, numpy `[N]` for a batch.

    `model`: the pristine model (see `load_niqe_model`; None = the default locations), fitted for
    the same `patch_size`. Every patch of the image is used.
    """
    model = model if isinstance(model, dict) and 'mu' in model else load_niqe_model(model)
    mu_p, cov_p = model['mu'], model['cov']
    x, batched = _to_nchw(images, channel_axis)
    scores = []
    for i in range(x.shape[0]):
        feats = niqe_features(x[i], patch_size=patch_size, drange=drange, channel_axis=0)
        if feats.shape[1] != mu_p.size:
            raise NIQEModelError(f'the NIQE model has {mu_p.size} features but the image gives {feats.shape[1]}')
        mu_d, cov_d = _nan_mean_cov(feats)
        diff = mu_p - mu_d
        scores.append(float(np.sqrt(diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff)))
    return np.asarray(scores) if batched else scores[0]

#----------------------------------------------------------------------------
# Patch FID.

def _uint8_images(images, drange, channel_axis=None):
    """A batch [N, C, H, W] or a sequence of images -> list of uint8 tensors [C, H, W] (3 channels)."""
    if isinstance(images, (list, tuple)):
        items = []
        for img in images:
            t, batched = _to_nchw(img, channel_axis)
            items += list(t) if batched else [t[0]]
    else:
        t, batched = _to_nchw(images, channel_axis)
        items = list(t) if batched else [t[0]]
    lo, hi = drange
    out = []
    for t in items:
        u = ((t.detach() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8).cpu()
        out.append(metric_utils.to_detector_input(u[None])[0])
    return out


def random_patches(images, patch_size, patches_per_image, seed=0, drange=(0, 255), channel_axis=None):
    """Yields (image index, uint8 patches [patches_per_image, 3, P, P]) of uniform random crops."""
    rng = np.random.RandomState(seed)
    for i, img in enumerate(_uint8_images(images, drange, channel_axis)):
        _, h, w = img.shape
        if h < patch_size or w < patch_size:
            raise ValueError(f'patch FID with {patch_size}x{patch_size} patches: image {i} is only {w}x{h}')
        ys = rng.randint(0, h - patch_size + 1, size=patches_per_image)
        xs = rng.randint(0, w - patch_size + 1, size=patches_per_image)
        yield i, torch.stack([img[:, y:y + patch_size, x:x + patch_size] for y, x in zip(ys, xs)])


def patch_feature_stats(images, patch_size=128, patches_per_image=1000, detector=None, device='cpu', batch_size=64,
                        seed=0, drange=(0, 255), channel_axis=None):
    """(mu, sigma) of the detector features of random patches (biased covariance, like FID).

    `detector`: a module taking uint8 NCHW and `return_features=True`, or a URL/path (default:
    the NVlabs Inception network, loaded like the GAN metrics' detector).
    """
    device = torch.device(device)
    if detector is None or isinstance(detector, (str, os.PathLike)):
        detector = metric_utils.get_feature_detector(os.fspath(detector or metric_utils.INCEPTION_URL), device=device)
    stats = metric_utils.FeatureStats(capture_mean_cov=True)
    pending = []

    def flush():
        batch = torch.cat(pending).to(device)
        pending.clear()
        with torch.no_grad():
            stats.append_torch(detector(batch, return_features=True))

    for _, patches in random_patches(images, patch_size, patches_per_image, seed=seed, drange=drange, channel_axis=channel_axis):
        for chunk in patches.split(batch_size):
            pending.append(chunk)
            if sum(p.shape[0] for p in pending) >= batch_size:
                flush()
    if pending:
        flush()
    if stats.num_items < 2:
        raise ValueError('patch FID needs at least 2 patches')
    return stats.get_mean_cov()


def load_patch_stats(path):
    """(mu, sigma) from an .npz with arrays mu and sigma (the pytorch-fid / pFID reference format)."""
    with dnnlib.util.open_url(os.fspath(path), verbose=False) as f:
        with np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
            if 'mu' not in npz.files or 'sigma' not in npz.files:
                raise ValueError(f'"{path}" has no mu/sigma arrays (found {", ".join(npz.files)})')
            return npz['mu'].astype(np.float64), npz['sigma'].astype(np.float64)


def save_patch_stats(path, mu, sigma):
    with dnnlib.util.atomic_write(os.fspath(path), 'wb') as f:
        np.savez(f, mu=mu, sigma=sigma)


def patch_fid(images, reference, patch_size=128, patches_per_image=1000, detector=None, device='cpu', batch_size=64,
              seed=0, drange=(0, 255), channel_axis=None):
    """FID between random patches of `images` and of `reference` (float).

    `reference`: images (same forms as `images`; patches drawn with `seed + 1`), a `(mu, sigma)`
    pair, or the path of an .npz with mu and sigma (e.g. from `save_patch_stats`).
    """
    device = torch.device(device)
    if detector is None or isinstance(detector, (str, os.PathLike)):
        detector = metric_utils.get_feature_detector(os.fspath(detector or metric_utils.INCEPTION_URL), device=device)
    kwargs = dict(patch_size=patch_size, patches_per_image=patches_per_image, detector=detector, device=device,
                  batch_size=batch_size, drange=drange, channel_axis=channel_axis)
    mu, sigma = patch_feature_stats(images, seed=seed, **kwargs)
    if isinstance(reference, (str, os.PathLike)):
        mu_ref, sigma_ref = load_patch_stats(reference)
    elif isinstance(reference, tuple) and len(reference) == 2 and np.ndim(reference[0]) == 1 and np.ndim(reference[1]) == 2:
        mu_ref, sigma_ref = reference
    else:
        mu_ref, sigma_ref = patch_feature_stats(reference, seed=seed + 1, **kwargs)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
