"""The encoder trainer's losses: the reconstruction loss and the identity-loss network.

`ReconstructionLoss` compares generator outputs with targets (float `[N, 3, H, W]` in [-1, 1]) at
min(G resolution, 256): L2 + LPIPS (AlexNet) + identity (1 - cosine of face embeddings), plus the
latent terms ||w - w_avg|| and |q|^2. Every term is reported to `training_stats` as
`Loss/<tag>/<term>`.
"""

import os
import warnings

import torch
import torch.nn.functional as F

import dnnlib
from metrics.restoration import LPIPS
from torch_utils import misc
from torch_utils import training_stats
from training import encoders

#----------------------------------------------------------------------------

LOSS_MAX_RES = 256          # losses are computed at min(G resolution, 256), as pSp
LPIPS_MIN_RES = 32          # AlexNet LPIPS needs at least 32x32: smaller images are upsampled for it
ID_INPUT_RES = 112          # face-embedding network input
ID_CROPS = {'ffhq': (35 / 256, 223 / 256, 32 / 256, 220 / 256), 'none': (0.0, 1.0, 0.0, 1.0)}  # top, bottom, left, right

#----------------------------------------------------------------------------
# Identity loss network.

class IDNetworkError(ValueError):
    """The face-embedding network for the identity loss is missing or unusable (one line)."""

ID_INTERFACE = ('a face-embedding network saved as TorchScript (torch.jit.script(net).save(PATH)) or as a torch file '
                '{"class_name": "module.Class", "init_kwargs": {...}, "state_dict": {...}}; input [N, 3, 112, 112] in [-1, 1], '
                'output embeddings [N, D]')

def load_id_network(path, device='cpu'):
    """Load the identity-loss network from `path` (see ID_INTERFACE). Raises IDNetworkError."""
    if path is None:
        raise IDNetworkError(f'the identity loss (--id-weight > 0) needs --id-weights PATH: {ID_INTERFACE}')
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise IDNetworkError(f'--id-weights: file not found: "{path}" (expected {ID_INTERFACE})')
    net = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # torch.jit's deprecation notice
            net = torch.jit.load(path, map_location='cpu')
    except Exception:  # pylint: disable=broad-except
        net = None
    if net is None:
        try:
            payload = misc.load_weights_only(path)
        except (ValueError, OSError) as err:
            raise IDNetworkError(f'--id-weights "{path}" is neither TorchScript nor a readable torch file '
                                 f'({err}); expected {ID_INTERFACE}') from None
        if not (isinstance(payload, dict) and 'class_name' in payload and 'state_dict' in payload):
            raise IDNetworkError(f'--id-weights "{path}" holds a bare state dict without its network class; save it as '
                                 f'{ID_INTERFACE}')
        kwargs = payload.get('init_kwargs') or {}
        try:  # the class name comes from the file: only this project's classes, unless the user trusts it
            cls = dnnlib.util.resolve_allowed_class(payload['class_name'], what=f'--id-weights "{path}"')
        except dnnlib.util.UntrustedFileError as err:
            raise IDNetworkError(str(err)) from None
        except ImportError as err:
            raise IDNetworkError(f'--id-weights "{path}": cannot find class {payload["class_name"]!r} ({err})') from None
        try:
            net = cls(**kwargs)
            net.load_state_dict(payload['state_dict'])
        except Exception as err:  # pylint: disable=broad-except
            raise IDNetworkError(f'--id-weights "{path}": cannot build {payload["class_name"]} '
                                 f'({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""})') from None
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            out = net(torch.zeros([2, 3, ID_INPUT_RES, ID_INPUT_RES], device=device))
    except Exception as err:  # pylint: disable=broad-except
        raise IDNetworkError(f'--id-weights "{path}" fails on a [2, 3, 112, 112] input ({type(err).__name__}); expected {ID_INTERFACE}') from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise IDNetworkError(f'--id-weights "{path}" returns {shape} for a [2, 3, 112, 112] input; expected embeddings [2, D]')
    return net

#----------------------------------------------------------------------------

class ReconstructionLoss:
    """L2 + LPIPS + identity on images in [-1, 1] at the loss resolution; reports each term."""

    def __init__(self, G, device, l2_weight=1.0, lpips_weight=0.8, lpips_backbone=None, id_weight=0.0, id_net=None,
                 id_crop='ffhq', w_norm_weight=0.0, q_reg_weight=0.0, need_lpips=False):
        self.G = G
        self.device = device
        self.res = min(G.img_resolution, LOSS_MAX_RES)
        self.l2_weight = l2_weight
        self.lpips_weight = lpips_weight
        self.id_weight = id_weight
        self.w_norm_weight = w_norm_weight
        self.q_reg_weight = q_reg_weight
        self.id_net = id_net
        self.id_crop = ID_CROPS[id_crop]
        self.lpips = None
        if lpips_weight > 0 or need_lpips:
            rand = lpips_backbone == 'random'
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the random backbone (tests) is the same whatever ran before
                self.lpips = LPIPS(net='alex', pnet_rand=rand, backbone_path=None if rand else lpips_backbone).to(device)

    def to_loss_res(self, img):
        """Generator output -> loss resolution (pSp: adaptive average pooling)."""
        if img.shape[-1] > self.res:
            return F.adaptive_avg_pool2d(img, self.res)
        return img

    def target(self, images):
        """Dataset images (float) -> loss resolution."""
        return encoders.resize_images(images, self.res)

    def lpips_distance(self, a, b):
        if a.shape[-1] < LPIPS_MIN_RES:
            a = F.interpolate(a, size=LPIPS_MIN_RES, mode='bilinear', align_corners=False)
            b = F.interpolate(b, size=LPIPS_MIN_RES, mode='bilinear', align_corners=False)
        return self.lpips(a, b)

    def id_embed(self, img):
        top, bottom, left, right = self.id_crop
        h, w = img.shape[-2:]
        crop = img[:, :, int(round(top * h)):int(round(bottom * h)), int(round(left * w)):int(round(right * w))]
        if crop.shape[-1] >= ID_INPUT_RES and crop.shape[-2] >= ID_INPUT_RES:
            crop = F.adaptive_avg_pool2d(crop, ID_INPUT_RES)
        else:
            crop = F.interpolate(crop, size=(ID_INPUT_RES, ID_INPUT_RES), mode='bilinear', align_corners=False)
        return F.normalize(self.id_net(crop).float(), dim=1)

    def __call__(self, out, target, tag):
        """Weighted loss (scalar) between generator output `out` and loss-resolution `target`."""
        out = self.to_loss_res(out)
        total = 0
        if self.l2_weight > 0:
            l2 = (out - target).square().mean()
            training_stats.report(f'Loss/{tag}/l2', l2)
            total = total + self.l2_weight * l2
        if self.lpips_weight > 0:
            dist = self.lpips_distance(out, target).mean()
            training_stats.report(f'Loss/{tag}/lpips', dist)
            total = total + self.lpips_weight * dist
        if self.id_weight > 0:
            cos = (self.id_embed(out) * self.id_embed(target).detach()).sum(dim=1)
            id_loss = (1 - cos).mean()
            training_stats.report(f'Loss/{tag}/id', id_loss)
            total = total + self.id_weight * id_loss
        return total

    def latent_terms(self, w, q, latent_avg, w_dim, sharp):
        total = 0
        if self.w_norm_weight > 0:
            diff = w - (latent_avg[:w_dim] if w.ndim == 2 else latent_avg[:w_dim].reshape(1, 1, -1))
            w_norm = diff.flatten(1).norm(dim=1).mean()
            training_stats.report('Loss/w_norm', w_norm)
            total = total + self.w_norm_weight * w_norm
        if sharp and q is not None and self.q_reg_weight > 0:
            q_reg = q.square().sum(dim=1).mean()
            training_stats.report('Loss/q_reg', q_reg)
            total = total + self.q_reg_weight * q_reg
        return total

#----------------------------------------------------------------------------
