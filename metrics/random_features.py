"""Download-free feature detector: a fixed, seeded random convolutional network.

FID and KID in the feature space of a randomly initialised CNN rank generators much like the
Inception versions do at small scale, and they need no download, so the CPU demo (`make demo`) and
the tests can measure a generator with them. The numbers are NOT comparable with Inception FID/KID
or across detector versions: they are for tracking one model over training (init -> trained).

The detector is named by a `builtin:` URL (`RANDOM_CONV_URL`) that `metric_utils.get_feature_detector`
resolves here, so the usual machinery (dataset statistics cache, sharding over processes) applies.

Network (`RandomConvFeatures`), input uint8 `[N, 3, H, W]` (grayscale already repeated to 3):
    [0, 255] -> [-1, 1], then the channel mean (luma: grayscale and RGB faces score alike),
    resized to 32x32 (area when shrinking, bilinear when enlarging);
    3 stages of conv3x3 (He-scaled N(0, 1) weights from `seed`, no bias) + leaky ReLU(0.2) + 2x2
    average pool: 1 -> 32 -> 64 -> 128 channels at 16, 8 and 4 px.
Features `[N, 448]` float32, the concatenation of three groups, each scaled to unit mean square
on a fixed random reference input so that no group dominates the kernel:
    the 8x8 average-pooled image (64 values: layout and tone),
    stage 2 pooled to 2x2 (256: where the parts are), stage 3 global mean (128: texture statistics).
"""

import torch
import torch.nn.functional as F

RANDOM_CONV_URL = 'builtin:random-conv-v1'
BUILTIN_PREFIX = 'builtin:'
_SEED = 1234
_SIZE = 32
_CHANNELS = (1, 32, 64, 128)

#----------------------------------------------------------------------------

class RandomConvFeatures(torch.nn.Module):
    """uint8 `[N, 3, H, W]` -> float32 features `[N, feature_dim]` (see the module docstring)."""

    def __init__(self, seed=_SEED):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        for i, (cin, cout) in enumerate(zip(_CHANNELS[:-1], _CHANNELS[1:])):
            weight = torch.randn([cout, cin, 3, 3], generator=gen) * (2.0 / (cin * 9)) ** 0.5
            self.register_buffer(f'weight{i}', weight)
        self.register_buffer('scales', torch.ones(3))
        probe = torch.rand([64, 3, _SIZE, _SIZE], generator=gen) * 255  # fixed reference input
        groups = self._groups(probe)
        self.scales.copy_(torch.stack([g.square().mean().rsqrt() for g in groups]))

    @property
    def feature_dim(self):
        return 64 + _CHANNELS[2] * 4 + _CHANNELS[3]

    def _groups(self, images):
        x = images.to(torch.float32) / 127.5 - 1
        x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] > _SIZE or x.shape[-2] > _SIZE:
            x = F.adaptive_avg_pool2d(x, _SIZE)
        elif x.shape[-1] != _SIZE or x.shape[-2] != _SIZE:
            x = F.interpolate(x, size=(_SIZE, _SIZE), mode='bilinear', align_corners=False)
        pixels = F.adaptive_avg_pool2d(x, 8).flatten(1)
        stages = []
        for i in range(len(_CHANNELS) - 1):
            x = F.leaky_relu(F.conv2d(x, getattr(self, f'weight{i}'), padding=1), 0.2)
            x = F.avg_pool2d(x, 2)
            stages.append(x)
        layout = F.adaptive_avg_pool2d(stages[1], 2).flatten(1)
        texture = stages[2].mean(dim=[2, 3])
        return [pixels, layout, texture]

    def forward(self, images, return_features=True):
        _ = return_features  # the features are the only output (accepted for the Inception call convention)
        groups = self._groups(images)
        return torch.cat([g * s for g, s in zip(groups, self.scales)], dim=1)


def make_detector(url):
    """The built-in detector named by `url` (`builtin:...`); ValueError for unknown names."""
    if url == RANDOM_CONV_URL:
        return RandomConvFeatures()
    raise ValueError(f'unknown built-in feature detector "{url}"; available: {RANDOM_CONV_URL}')

#----------------------------------------------------------------------------
