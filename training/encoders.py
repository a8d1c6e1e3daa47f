"""pSp-style encoders for StyleGAN2 / QC-StyleGAN inversion, their checkpoints and the inference API.

QC-StyleGAN's revised stage 1 of the inversion (paper section 3.4) trains two encoders that
regress the embedding w and the quality code q of an image separately. The released models
(`restoration/pSp`, `DoubleEncoder`) are two independent ResNet34 encoders:

* a new stem `Conv2d(3, 64, 7x7, stride 2, pad 3, no bias) -> BatchNorm2d(64) -> PReLU(64)`
  (no max-pool), then torchvision ResNet34's `layer1..layer4` (ImageNet weights),
  `AdaptiveAvgPool2d(1)` and an `EqualLinear(512 -> out)`;
* the content encoder predicts w as an offset from `w_avg` (the W space: one w broadcast to
  every layer); the quality encoder predicts q as an offset from 0;
* inputs are RGB in [-1, 1] resized to 256x256.

`PSPEncoder` implements that (`backbone='resnet34', w_space='w'`) plus two options:

* `w_space='w+'`: a GradualStyle feature-pyramid head (pSp's `GradualStyleEncoder` head on the
  ResNet34 taps layer2 / layer3 / layer4: 1x1 lateral convs, bilinear top-down merge,
  one map2style block per style of stride-2 3x3 convs + LeakyReLU(0.01) and an EqualLinear),
  styles 0-2 from the coarsest level, 3-6 from the middle, the rest from the finest. The W+
  offsets are added to `w_avg` row by row;
* `backbone='tiny'`: a 2-stage ResNet (16 and 32 channels) for tests and CPU demos.

ImageNet weights for ResNet34 are read from torch hub's cache only
(`$TORCH_HOME/hub/checkpoints/resnet34-b627a593.pth`, or any `resnet34-*.pth` there); they are
never downloaded. Without them the backbones start from random init and ONE notice is printed.

Inference API (used by invert.py)::

    from training.encoders import load_encoder
    enc = load_encoder('run/checkpoint.pt', G=G, device='cuda')   # G optional; checked if given
    w, q = enc.encode(images)         # images: float [-1, 1], [N, 3, H, W], any H, W (resized)
    # w: [N, w_dim] (W encoder) or [N, num_ws, w_dim] (W+); q: [N, q_dim] or None (plain StyleGAN2)
    ws = enc.to_ws(w)                 # [N, num_ws, w_dim]
    degraded = enc.synthesize(w, q)   # G(w, q); enc.synthesize(w, None) is the sharp G(w, 0)

Checkpoints (written by train_encoder.py with `save_encoder_checkpoint`) are torch files that
load with `weights_only=True` and hold the encoder state dict, its JSON constructor arguments,
`latent_avg` (w_avg followed by q_dim zeros, as the released checkpoints), a fingerprint of the
generator (w_dim, q_dim, num_ws, resolution, channels), the network it was trained with, and
(for training checkpoints) the optimizer state, step and RNG states. Loading one for a different
generator raises `EncoderMismatchError` with one line naming both.
"""

import glob
import json
import math
import os
import zipfile

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import misc

__all__ = [
    'ENCODER_FORMAT', 'ENCODER_VERSION', 'BACKBONES', 'W_SPACES', 'EncoderError', 'EncoderMismatchError',
    'EqualLinear', 'ResNetBackbone', 'LastLayerHead', 'GradualStyleBlock', 'GradualStyleHead', 'PSPEncoder',
    'generator_fingerprint', 'check_fingerprint', 'resize_images', 'to_ws', 'synthesize',
    'imagenet_weights_path', 'save_encoder_checkpoint', 'load_encoder_checkpoint', 'build_encoder_from_checkpoint',
    'EncoderWrapper', 'load_encoder',
]

ENCODER_FORMAT = 'qcgan-encoder-checkpoint'
ENCODER_VERSION = 1
BACKBONES = ('resnet34', 'tiny', 'ir_se50')
W_SPACES = ('w', 'w+')

RESNET34_URL = 'https://download.pytorch.org/models/resnet34-b627a593.pth'  # torchvision IMAGENET1K_V1

#----------------------------------------------------------------------------

class EncoderError(ValueError):
    """An encoder or encoder checkpoint that cannot be used (one-line message)."""

class EncoderMismatchError(EncoderError):
    """An encoder checkpoint trained for a different generator (w_dim, q_dim, num_ws or resolution)."""

#----------------------------------------------------------------------------
# ImageNet weights: torch hub's cache only, never downloaded.

_notices_shown = set()

def _notice_once(key, message):
    if key not in _notices_shown:
        _notices_shown.add(key)
        print(message, flush=True)

def imagenet_weights_path(arch='resnet34'):
    """The cached torchvision ImageNet weights file for `arch`, or None if there is none.

    Looks for `<torch hub dir>/checkpoints/resnet34-b627a593.pth`, then any `resnet34-*.pth` there
    (torch hub's dir honours $TORCH_HOME)."""
    assert arch == 'resnet34'
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    exact = os.path.join(folder, os.path.basename(RESNET34_URL))
    if os.path.isfile(exact):
        return exact
    others = sorted(glob.glob(os.path.join(folder, 'resnet34-*.pth')))
    return others[0] if others else None

def _load_imagenet_state(weights):
    """weights: 'auto' (cache if present), 'none', or a file path -> (state dict or None, source)."""
    if weights in (None, 'none'):
        return None, None
    if weights == 'auto':
        path = imagenet_weights_path('resnet34')
        if path is None:
            expected = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(RESNET34_URL))
            _notice_once('resnet34-missing', f'Note: ImageNet ResNet34 weights not found at "{expected}"; the encoder '
                         f'backbones start from random init (save {RESNET34_URL} there to use them).')
            return None, None
    else:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise EncoderError(f'backbone weights file not found: "{path}" (expected torchvision\'s {RESNET34_URL})')
    try:
        state = misc.load_weights_only(path)
    except (ValueError, OSError) as err:
        raise EncoderError(f'cannot read the ResNet34 weights "{path}" ({err}); '
                           f'delete the file and save {RESNET34_URL} there again') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict) or 'layer4.2.bn2.weight' not in state:
        raise EncoderError(f'"{path}" is not torchvision\'s ResNet34 state dict (no layer4.2.bn2.weight)')
    return state, path

#----------------------------------------------------------------------------
# Building blocks.

class EqualLinear(torch.nn.Module):
    """Linear layer with equalised learning rate (weights N(0, 1) scaled at run time by
    lr_mul / sqrt(in_features)), as rosinality's `EqualLinear` that pSp uses; no activation."""

    def __init__(self, in_features, out_features, bias=True, bias_init=0.0, lr_mul=1.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_mul)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, lr_mul={self.lr_mul:g}'


class SqueezeExcite(torch.nn.Module):
    """Channel attention: x * sigmoid(fc2(relu(fc1(avgpool(x))))), 1x1 convs without bias."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = torch.nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = torch.nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class IRSEUnit(torch.nn.Module):
    """pSp's `bottleneck_IR_SE(in, depth, stride)`: res = BN, 3x3 conv, PReLU, 3x3 conv (stride), BN, SE;
    shortcut = 1x1 max-pool (stride) if in == depth, else 1x1 conv (stride) + BN; out = res + shortcut."""

    def __init__(self, in_channels, depth, stride):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = torch.nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = torch.nn.Sequential(torch.nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                      torch.nn.BatchNorm2d(depth))
        self.res_layer = torch.nn.Sequential(
            torch.nn.BatchNorm2d(in_channels), torch.nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            torch.nn.PReLU(depth), torch.nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            torch.nn.BatchNorm2d(depth), SqueezeExcite(depth, 16))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class ResNetBackbone(torch.nn.Module):
    """Stem + residual stages; `forward(x)` returns the output of every stage (fine to coarse).

    'resnet34': the released stem (7x7 stride-2 conv, BN, PReLU; no max-pool) and torchvision
    ResNet34's layer1..layer4 (64, 128, 256, 512 channels; strides 2, 2, 4, 8, 16 in total).
    'tiny': a 3x3 stride-2 stem (16 channels) and two BasicBlock stages (16 and 32 channels,
    total stride 4) for tests and CPU demos.
    """

    def __init__(self, arch='resnet34', weights='auto'):
        super().__init__()
        import torchvision
        from torchvision.models.resnet import BasicBlock
        if arch not in BACKBONES:
            raise EncoderError(f'unknown backbone "{arch}"; choose from: {", ".join(BACKBONES)}')
        self.arch = arch
        if arch == 'resnet34':
            net = torchvision.models.resnet34(weights=None)
            state, source = _load_imagenet_state(weights)
            if state is not None:
                net.load_state_dict(state)
            self.imagenet_source = source
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
                                            torch.nn.BatchNorm2d(64), torch.nn.PReLU(64))
            self.stages = torch.nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
            self.channels = [64, 128, 256, 512]
            self.strides = [2, 4, 8, 16]
        elif arch == 'ir_se50':
            # pSp's IR-SE50 (ArcFace backbone): 3x3 stride-1 stem, 3/4/14/3 units of 64/128/256/512
            # channels, the first unit of each stage with stride 2. Read from released pSp
            # checkpoints (training/released.py); no pretrained weights are looked for.
            if weights not in (None, 'auto', 'none'):
                raise EncoderError('the ir_se50 backbone takes no --backbone-weights file (its weights come from a '
                                   'released pSp checkpoint); use --backbone resnet34 for ImageNet initialisation')
            self.imagenet_source = None
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False),
                                            torch.nn.BatchNorm2d(64), torch.nn.PReLU(64))
            stages = []
            in_channels = 64
            for depth, count in [(64, 3), (128, 4), (256, 14), (512, 3)]:
                stages.append(torch.nn.Sequential(*[IRSEUnit(in_channels if j == 0 else depth, depth, 2 if j == 0 else 1)
                                                    for j in range(count)]))
                in_channels = depth
            self.stages = torch.nn.ModuleList(stages)
            self.channels = [64, 128, 256, 512]
            self.strides = [2, 4, 8, 16]
        else:
            self.imagenet_source = None
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
                                            torch.nn.BatchNorm2d(16), torch.nn.PReLU(16))
            down = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1, stride=2, bias=False), torch.nn.BatchNorm2d(32))
            self.stages = torch.nn.ModuleList([torch.nn.Sequential(BasicBlock(16, 16)),
                                               torch.nn.Sequential(BasicBlock(16, 32, stride=2, downsample=down))])
            self.channels = [16, 32]
            self.strides = [2, 4]

    @property
    def stride(self):
        return self.strides[-1]

    def forward(self, x):
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class LastLayerHead(torch.nn.Module):
    """Global average pool of the last stage + EqualLinear (pSp's `...UsingLastLayerIntoW`)."""

    def __init__(self, in_channels, out_features):
        super().__init__()
        self.linear = EqualLinear(in_channels, out_features)

    def forward(self, features):
        x = F.adaptive_avg_pool2d(features[-1], 1).flatten(1)
        return self.linear(x)


class GradualStyleBlock(torch.nn.Module):
    """pSp's map2style: ceil(log2(spatial)) x [3x3 stride-2 conv, LeakyReLU(0.01)] down to 1x1,
    then EqualLinear(out_channels -> out_channels)."""

    def __init__(self, in_channels, out_channels, spatial):
        super().__init__()
        num_convs = max(1, int(math.ceil(math.log2(max(spatial, 1)))))
        layers = []
        for idx in range(num_convs):
            layers += [torch.nn.Conv2d(in_channels if idx == 0 else out_channels, out_channels, 3, stride=2, padding=1),
                       torch.nn.LeakyReLU(0.01)]
        self.convs = torch.nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x):
        x = self.convs(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # already 1x1 for power-of-two sizes
        return self.linear(x)


class GradualStyleHead(torch.nn.Module):
    """pSp's GradualStyle feature pyramid on the last (up to) three backbone stages -> W+ offsets.

    Levels, coarse to fine: the last stage, then each earlier stage merged top-down (bilinear
    upsampling with align_corners=True + a 1x1 lateral conv to `width` channels). Styles
    [0, 3) come from the coarsest level, [3, 7) from the middle one, [7, num_ws) from the finest
    (pSp's coarse_ind=3, middle_ind=7); with two levels, [0, 3) and [3, num_ws).
    """

    def __init__(self, channels, spatials, num_ws, width):
        super().__init__()
        taps = min(3, len(channels))
        self.channels = list(channels[-taps:])[::-1]     # coarse to fine
        self.spatials = list(spatials[-taps:])[::-1]
        self.num_ws = num_ws
        self.width = width
        bounds = [0] + [3, 7][:taps - 1] + [num_ws]
        bounds = [min(b, num_ws) for b in bounds]
        self.level_of_style = []
        for level in range(taps):
            self.level_of_style += [level] * max(0, bounds[level + 1] - bounds[level])
        assert len(self.level_of_style) == num_ws
        self.num_levels = max(self.level_of_style) + 1
        # Coarsest level: used as is when it already has `width` channels (pSp), else projected.
        self.top = torch.nn.Identity() if self.channels[0] == width else torch.nn.Conv2d(self.channels[0], width, 1)
        self.laterals = torch.nn.ModuleList([torch.nn.Conv2d(c, width, 1) for c in self.channels[1:self.num_levels]])
        self.styles = torch.nn.ModuleList([GradualStyleBlock(width, width, self.spatials[level]) for level in self.level_of_style])

    def forward(self, features):
        taps = features[-len(self.channels):][::-1]
        levels = [self.top(taps[0])]
        for lateral, tap in zip(self.laterals, taps[1:]):
            up = F.interpolate(levels[-1], size=tap.shape[-2:], mode='bilinear', align_corners=True)
            levels.append(up + lateral(tap))
        return torch.stack([block(levels[level]) for block, level in zip(self.styles, self.level_of_style)], dim=1)

#----------------------------------------------------------------------------

def resize_images(images, size):
    """Resize `[N, C, H, W]` float images to `size` x `size` (bilinear, antialiased when shrinking)."""
    if images.shape[-2] == size and images.shape[-1] == size:
        return images
    shrink = images.shape[-2] > size or images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode='bilinear', align_corners=False, antialias=shrink)

def to_ws(w, num_ws):
    """w `[N, w_dim]` (broadcast) or `[N, num_ws, w_dim]` -> `[N, num_ws, w_dim]`."""
    if w.ndim == 2:
        return w.unsqueeze(1).repeat([1, num_ws, 1])
    if w.ndim != 3 or w.shape[1] != num_ws:
        raise ValueError(f'w must be [N, w_dim] or [N, {num_ws}, w_dim], got {list(w.shape)}')
    return w

def synthesize(G, w, q=None):
    """`G.synthesis` on an encoder's output: constant noise, float32. q=None is the sharp image."""
    ws = to_ws(w, G.num_ws)
    if not misc.is_qc(G):
        q = None
    return G.synthesis(ws, q=q, noise_mode='const', force_fp32=True)

def generator_fingerprint(G):
    """What an encoder depends on: `{w_dim, q_dim, num_ws, img_resolution, img_channels}`."""
    return dict(w_dim=int(G.w_dim), q_dim=int(getattr(G, 'q_dim', 0)), num_ws=int(G.num_ws),
                img_resolution=int(G.img_resolution), img_channels=int(G.img_channels))

def _describe_fingerprint(fp):
    return (f'w_dim {fp["w_dim"]}, q_dim {fp["q_dim"]}, num_ws {fp["num_ws"]}, '
            f'resolution {fp["img_resolution"]}, {fp["img_channels"]} channel(s)')

def check_fingerprint(expected, G, what='encoder checkpoint'):
    """Raise EncoderMismatchError if generator `G` differs from the fingerprint `expected`."""
    actual = generator_fingerprint(G)
    diff = [key for key in actual if int(expected.get(key, -1)) != actual[key]]
    if diff:
        raise EncoderMismatchError(f'{what} was trained for a generator with {_describe_fingerprint(expected)}, '
                                   f'but this network has {_describe_fingerprint(actual)} '
                                   f'(differs in {", ".join(diff)}): use an encoder trained for this network '
                                   f'(train one with train_encoder.py --network ...)')

#----------------------------------------------------------------------------

class PSPEncoder(torch.nn.Module):
    """The w encoder and (for QC generators) the q encoder. See the module docstring.

    `forward(x, skip_q=False) -> (w, q)`: `x` is `[N, 3, H, W]` in [-1, 1] (any H, W: resized to
    `input_size`); `w` is `[N, w_dim]` (W) or `[N, num_ws, w_dim]` (W+), absolute (offset +
    w_avg); `q` is `[N, q_dim]`, or zeros with `skip_q` (the q encoder does not run), or None
    when q_dim is 0.
    """

    def __init__(self,
        w_dim,                      # Generator's w size.
        num_ws,                     # Generator's number of w rows.
        q_dim           = 0,        # Quality code size; 0 = plain StyleGAN2 (no q encoder).
        img_resolution  = 256,      # Generator resolution (fingerprint only).
        img_channels    = 3,        # Generator channels (fingerprint only).
        w_space         = 'w',      # 'w' (released: one w for all layers) or 'w+' (GradualStyle head).
        backbone        = 'resnet34',  # 'resnet34' (released) or 'tiny'.
        input_size      = 256,      # Encoder input resolution.
        backbone_weights = 'auto',  # 'auto' (torch hub cache if present), 'none', or a file path.
        latent_avg      = None,     # [w_dim + q_dim]: w_avg followed by zeros; None = zeros.
    ):
        super().__init__()
        if w_space not in W_SPACES:
            raise EncoderError(f'unknown w space "{w_space}"; choose from: {", ".join(W_SPACES)}')
        if backbone not in BACKBONES:
            raise EncoderError(f'unknown backbone "{backbone}"; choose from: {", ".join(BACKBONES)}')
        if q_dim < 0 or w_dim < 1 or num_ws < 1:
            raise EncoderError(f'bad generator dimensions: w_dim {w_dim}, num_ws {num_ws}, q_dim {q_dim}')
        self.w_dim = int(w_dim)
        self.num_ws = int(num_ws)
        self.q_dim = int(q_dim)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.w_space = w_space
        self.backbone = backbone
        self.input_size = int(input_size)

        self.w_backbone = ResNetBackbone(backbone, backbone_weights)
        stride = self.w_backbone.stride
        if self.input_size < stride or self.input_size % stride != 0:
            raise EncoderError(f'--input-size {self.input_size} must be a positive multiple of {stride} for the {backbone} backbone')
        spatials = [self.input_size // s for s in self.w_backbone.strides]
        if w_space == 'w':
            self.w_head = LastLayerHead(self.w_backbone.channels[-1], self.w_dim)
        else:
            self.w_head = GradualStyleHead(self.w_backbone.channels, spatials, self.num_ws, self.w_dim)
        self.q_backbone = self.q_head = None
        if self.q_dim > 0:
            self.q_backbone = ResNetBackbone(backbone, backbone_weights)
            self.q_head = LastLayerHead(self.q_backbone.channels[-1], self.q_dim)

        self.register_buffer('latent_avg', torch.zeros([self.w_dim + self.q_dim]))
        if latent_avg is not None:
            latent_avg = torch.as_tensor(latent_avg, dtype=torch.float32).flatten()
            if latent_avg.numel() != self.w_dim + self.q_dim:
                raise EncoderError(f'latent_avg has {latent_avg.numel()} values, expected w_dim + q_dim = {self.w_dim + self.q_dim}')
            with torch.no_grad():
                self.latent_avg.copy_(latent_avg)

    @classmethod
    def for_generator(cls, G, **kwargs):
        """An encoder for generator `G` (dimensions and latent_avg = w_avg ⊕ zeros(q_dim) from G)."""
        q_dim = int(getattr(G, 'q_dim', 0))
        w_avg = getattr(G.mapping, 'w_avg', None)
        w_avg = torch.zeros([G.w_dim]) if w_avg is None else w_avg.detach().float().cpu()
        latent_avg = torch.cat([w_avg, torch.zeros([q_dim])])
        return cls(w_dim=G.w_dim, num_ws=G.num_ws, q_dim=q_dim, img_resolution=G.img_resolution,
                   img_channels=G.img_channels, latent_avg=latent_avg, **kwargs)

    @property
    def init_kwargs(self):
        """JSON-able constructor arguments (without weights or latent_avg)."""
        return dict(w_dim=self.w_dim, num_ws=self.num_ws, q_dim=self.q_dim, img_resolution=self.img_resolution,
                    img_channels=self.img_channels, w_space=self.w_space, backbone=self.backbone, input_size=self.input_size)

    @property
    def fingerprint(self):
        return dict(w_dim=self.w_dim, q_dim=self.q_dim, num_ws=self.num_ws, img_resolution=self.img_resolution,
                    img_channels=self.img_channels)

    @property
    def w_avg(self):
        return self.latent_avg[:self.w_dim]

    def preprocess(self, x):
        """Check and resize an image batch to the encoder's input (3 channels, input_size)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'encoder input must be an image batch [N, 3, H, W] in [-1, 1], got {shape}')
        x = x.to(self.latent_avg.device, torch.float32)
        if x.shape[1] == 1:
            x = x.repeat([1, 3, 1, 1])
        return resize_images(x, self.input_size)

    def encode_w(self, x):
        offset = self.w_head(self.w_backbone(x))
        if self.w_space == 'w':
            return offset + self.w_avg
        return offset + self.w_avg.reshape(1, 1, -1)

    def encode_q(self, x):
        return self.q_head(self.q_backbone(x)) + self.latent_avg[self.w_dim:]

    def forward(self, x, skip_q=False):
        x = self.preprocess(x)
        w = self.encode_w(x)
        if self.q_dim == 0:
            return w, None
        if skip_q:
            return w, torch.zeros([x.shape[0], self.q_dim], device=x.device, dtype=w.dtype)
        return w, self.encode_q(x)

#----------------------------------------------------------------------------
# Checkpoints.

def save_encoder_checkpoint(path, encoder, network=None, **extras):
    """Write an encoder checkpoint atomically. `extras` (optimizer state, step, rng, options_json,
    ...) must be tensors, numbers, strings, lists or dicts of those (weights_only-loadable)."""
    payload = dict(format=ENCODER_FORMAT, format_version=ENCODER_VERSION,
                   encoder={name: t.detach().cpu().clone() for name, t in encoder.state_dict().items()},
                   encoder_kwargs_json=json.dumps(encoder.init_kwargs), fingerprint=dict(encoder.fingerprint),
                   latent_avg=encoder.latent_avg.detach().cpu().clone(), network=network)
    payload.update(extras)
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(payload, f)

def load_encoder_checkpoint(path):
    """Read an encoder checkpoint (no code execution). Raises EncoderError / FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'encoder checkpoint not found: "{path}"')
    if not zipfile.is_zipfile(path):
        raise EncoderError(f'"{path}" is not a qcgan encoder checkpoint (not a torch file; a network pickle?): '
                           f'pass the checkpoint.pt or best.pt written by train_encoder.py')
    try:
        ckpt = misc.load_weights_only(path)
    except (ValueError, OSError) as err:
        raise EncoderError(f'"{path}" is not a readable encoder checkpoint ({err}); the file may be truncated') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != ENCODER_FORMAT:
        from training import released  # pylint: disable=import-outside-toplevel
        if released.is_psp_checkpoint(ckpt):
            return ckpt  # a released pSp / QC-StyleGAN pSp checkpoint: load_encoder converts it
        raise EncoderError(f'"{path}" is not a qcgan encoder checkpoint (written by train_encoder.py) nor a pSp '
                           f'checkpoint ({released.PSP_SUPPORTED})')
    if int(ckpt.get('format_version', 0)) > ENCODER_VERSION:
        raise EncoderError(f'"{path}": encoder checkpoint version {ckpt["format_version"]} is newer than this code '
                           f'(reads {ENCODER_VERSION}); update qcgan')
    return ckpt

def build_encoder_from_checkpoint(ckpt, path='encoder checkpoint'):
    """A `PSPEncoder` with the checkpoint's weights (no ImageNet weights are looked for)."""
    kwargs = json.loads(ckpt['encoder_kwargs_json'])
    encoder = PSPEncoder(backbone_weights='none', latent_avg=ckpt['latent_avg'], **kwargs)
    try:
        encoder.load_state_dict(ckpt['encoder'])
    except RuntimeError as err:
        raise EncoderError(f'{path}: encoder weights do not match its options ({str(err).splitlines()[0]})') from None
    return encoder

#----------------------------------------------------------------------------
# Inference.

class EncoderWrapper:
    """A trained encoder (eval mode) with an optional generator. See `load_encoder`."""

    def __init__(self, encoder, G=None, network=None, path=None, step=None):
        self.encoder = encoder.eval().requires_grad_(False)
        self.G = G
        self.network = network
        self.path = path
        self.step = step

    w_dim = property(lambda self: self.encoder.w_dim)
    q_dim = property(lambda self: self.encoder.q_dim)
    num_ws = property(lambda self: self.encoder.num_ws)
    w_space = property(lambda self: self.encoder.w_space)
    input_size = property(lambda self: self.encoder.input_size)
    latent_avg = property(lambda self: self.encoder.latent_avg)
    fingerprint = property(lambda self: self.encoder.fingerprint)

    @property
    def device(self):
        return self.encoder.latent_avg.device

    def to(self, device):
        self.encoder.to(device)
        if self.G is not None:
            self.G.to(device)
        return self

    def to_ws(self, w):
        return to_ws(w, self.num_ws)

    @torch.no_grad()
    def encode(self, images, batch_size=16, broadcast=False):
        """images: float `[N, 3, H, W]` (or one `[3, H, W]`) in [-1, 1], or uint8 in [0, 255];
        any H, W (resized to `input_size`). Returns `(w, q)` on the encoder's device: w is
        `[N, w_dim]` (W encoders; `[N, num_ws, w_dim]` with `broadcast=True`) or
        `[N, num_ws, w_dim]` (W+); q is `[N, q_dim]`, or None for plain StyleGAN2 encoders."""
        images = torch.as_tensor(images)
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.dtype == torch.uint8:
            images = images.to(torch.float32) / 127.5 - 1
        ws, qs = [], []
        for start in range(0, images.shape[0], max(1, int(batch_size))):
            w, q = self.encoder(images[start:start + batch_size].to(self.device))
            ws.append(w)
            qs.append(q)
        w = torch.cat(ws)
        q = torch.cat(qs) if self.q_dim > 0 else None
        if broadcast:
            w = self.to_ws(w)
        return w, q

    @torch.no_grad()
    def synthesize(self, w, q=None):
        """G(w, q) with constant noise (q=None: the sharp image). Needs the generator."""
        if self.G is None:
            raise EncoderError('this encoder was loaded without a generator: pass G= to load_encoder')
        return synthesize(self.G, w.to(self.device), None if q is None else q.to(self.device))

    @torch.no_grad()
    def invert(self, images, batch_size=16):
        """`{w, q, degraded: G(w, q), sharp: G(w, 0)}` for an image batch."""
        w, q = self.encode(images, batch_size=batch_size)
        sharp = self.synthesize(w, None)
        degraded = self.synthesize(w, q) if q is not None else sharp
        return dnnlib.EasyDict(w=w, q=q, degraded=degraded, sharp=sharp)


def load_encoder(path, G=None, device='cpu'):
    """Load an encoder -> `EncoderWrapper`: a checkpoint written by train_encoder.py, a released pSp
    checkpoint (QC-StyleGAN `ffhq_psp.pt`/`afhq_psp.pt` DoubleEncoder, pSp IR-SE50
    `psp_ffhq_encode.pt`; see training/released.py) or a zoo name (`qc-ffhq256-psp`, dnnlib/zoo.py).

    If `G` is given it must be the kind of generator the encoder was trained for (same w_dim,
    q_dim, num_ws, resolution and channels), else `EncoderMismatchError`; a generator whose
    w_avg differs from the encoder's latent_avg is accepted with a printed note (the encoder
    keeps predicting around its own latent_avg). `wrapper.network` names the network the
    encoder was trained with.
    """
    import dnnlib.zoo  # pylint: disable=import-outside-toplevel
    if isinstance(path, str) and path in dnnlib.zoo.MANUAL_FILES:
        try:
            path = dnnlib.zoo.resolve(path)
        except dnnlib.zoo.ManualDownloadError as err:
            raise EncoderError(str(err)) from None
    ckpt = load_encoder_checkpoint(path)
    if ckpt.get('format') != ENCODER_FORMAT:
        from training import released  # pylint: disable=import-outside-toplevel
        encoder, info = released.encoder_from_psp_checkpoint(ckpt, path=f'"{path}"')
        ckpt = dict(fingerprint=encoder.fingerprint, network=info['network'], released=info)
    else:
        encoder = build_encoder_from_checkpoint(ckpt, path=f'"{path}"')
    if G is not None:
        check_fingerprint(ckpt['fingerprint'], G, what=f'encoder checkpoint "{path}"')
        w_avg = getattr(G.mapping, 'w_avg', None)
        if w_avg is not None:
            diff = float((w_avg.detach().float().cpu() - encoder.w_avg).abs().max())
            if diff > 1e-4 * max(1.0, float(encoder.w_avg.abs().max())):
                print(f'Note: the generator\'s w_avg differs from the one encoder "{path}" was trained with '
                      f'(max |diff| {diff:.3g}); is it the network the encoder was trained for ({ckpt.get("network")})?')
    device = torch.device(device) if not isinstance(device, torch.device) else device
    wrapper = EncoderWrapper(encoder, G=G, network=ckpt.get('network'), path=os.fspath(path), step=ckpt.get('step'))
    wrapper.released = ckpt.get('released')  # {kind, network, ...} for released pSp checkpoints, else None
    return wrapper.to(device)

#----------------------------------------------------------------------------
