"""StyleGAN2 generator and discriminator (the networks of StyleGAN2-ADA).

Constructor arguments, forward signatures and parameter/buffer names match the official
stylegan2-ada-pytorch networks, so their state dicts load 1:1 and their pickles convert by name.

Conventions: images are NCHW float32 in about [-1, 1]; latents z are `[N, z_dim]`, intermediate
latents w are `[N, num_ws, w_dim]`, conditioning labels c are `[N, c_dim]` (one-hot or real).
All weights are stored as N(0, 1) and scaled at run time (equalized learning rate).

This module must import only numpy, torch, dnnlib and torch_utils: its source is embedded in
network pickles and executed when they load, possibly where `training/` does not exist.
"""

import math
import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` to unit root-mean-square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

def _rows(styles, start, stop):
    """Filter-wise styles `[N, K, C]` -> the rows of output filters start..stop; plain `[N, C]` unchanged."""
    return styles[:, start:stop] if styles.ndim == 3 else styles

#----------------------------------------------------------------------------

@misc.profiled_function
def modulated_conv2d(
    x,                          # Input tensor [batch_size, in_channels, in_height, in_width].
    weight,                     # Weight tensor [out_channels, in_channels, kernel_height, kernel_width].
    styles,                     # Per-sample modulation [batch_size, in_channels], or filter-wise [batch_size, out_channels, in_channels].
    noise           = None,     # Optional noise added to the output, broadcastable to [batch_size, out_channels, out_height, out_width].
    up              = 1,        # Integer upsampling factor.
    down            = 1,        # Integer downsampling factor.
    padding         = 0,        # Padding with respect to the upsampled image.
    resample_filter = None,     # Low-pass filter for up/downsampling (from upfirdn2d.setup_filter()).
    demodulate      = True,     # Normalize each output channel of the modulated weight to unit norm?
    flip_weight     = True,     # False = convolution, True = correlation (matches torch.nn.functional.conv2d).
    fused_modconv   = True,     # One grouped convolution with per-sample weights (fast at inference)?
):
    """StyleGAN2 modulated convolution. Returns `[batch_size, out_channels, out_height, out_width]`.

    Filter-wise styles (one style vector per output filter, the W++ space of robust GAN
    inversion) always take the fused path.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    filterwise = (styles.ndim == 3)
    misc.assert_shape(styles, [batch_size, out_channels, in_channels] if filterwise else [batch_size, in_channels])
    if filterwise:
        fused_modconv = True

    # Scale down before the fp16 convolution; demodulation cancels the scale exactly.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.flatten(1).norm(float('inf'), dim=1).reshape([-1] + [1] * (styles.ndim - 1))

    # Per-sample weights and demodulation coefficients.
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        style_shape = [batch_size, out_channels, in_channels, 1, 1] if filterwise else [batch_size, 1, in_channels, 1, 1]
        w = weight.unsqueeze(0) * styles.reshape(style_shape)  # [NOIkk]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [NO]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    # Unfused: modulate the activations instead of the weights and share one weight across the batch.
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    # Fused: the batch becomes the groups of a single grouped convolution.
    with misc.suppress_tracer_warnings():
        batch_size = int(batch_size)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x

#----------------------------------------------------------------------------

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer `[N, in_features] -> [N, out_features]` with equalized learning rate."""
    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Apply additive bias before the activation function?
        activation      = 'linear', # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 1,        # Learning rate multiplier.
        bias_init       = 0,        # Initial value for the additive bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain

        if self.activation == 'linear' and b is not None and x.ndim == 2:
            x = torch.addmm(b.unsqueeze(0), x, w.t())
        elif self.activation == 'linear' and b is not None:  # [N, K, in]: one style per filter (W++)
            x = x.matmul(w.t()) + b
        else:
            x = x.matmul(w.t())
            x = bias_act.bias_act(x, b, act=self.activation)
        return x

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """2D convolution `[N, in_channels, H, W] -> [N, out_channels, H*up/down, W*up/down]` with
    equalized learning rate, optional FIR up/downsampling, bias, activation and clamping."""
    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the convolution kernel.
        bias            = True,         # Apply additive bias before the activation function?
        activation      = 'linear',     # Activation function: 'relu', 'lrelu', etc.
        up              = 1,            # Integer upsampling factor.
        down            = 1,            # Integer downsampling factor.
        resample_filter = [1,3,3,1],    # Low-pass filter to apply when resampling activations.
        conv_clamp      = None,         # Clamp the output to +-X, None = disable clamping.
        channels_last   = False,        # Expect the input to have memory_format=channels_last?
        trainable       = True,         # Update the weights of this layer during training? (False = buffers, for Freeze-D.)
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias is not None:
                self.register_buffer('bias', bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = (self.up == 1)  # The transposed convolution used for up=2 flips by itself.
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        x = bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)
        return x

    def extra_repr(self):
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, activation={self.activation:s}, '
                f'up={self.up}, down={self.down}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """Maps z `[N, z_dim]` and c `[N, c_dim]` to w `[N, num_ws, w_dim]` (or `[N, w_dim]` if num_ws is None)."""
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of intermediate latents to output, None = do not broadcast.
        num_layers      = 8,        # Number of mapping layers.
        embed_features  = None,     # Label embedding dimensionality, None = same as w_dim.
        layer_features  = None,     # Number of intermediate features in the mapping layers, None = same as w_dim.
        activation      = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 0.01,     # Learning rate multiplier for the mapping layers.
        w_avg_beta      = 0.995,    # Decay for tracking the moving average of W during training, None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features_list = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features_list[idx], features_list[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = None
        with torch.autograd.profiler.record_function('input'):
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim])
                x = normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim])
                y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
                x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.autograd.profiler.record_function('update_w_avg'):
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            with torch.autograd.profiler.record_function('broadcast'):
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            with torch.autograd.profiler.record_function('truncate'):
                assert self.w_avg_beta is not None, 'truncation needs a tracked w_avg'
                if self.num_ws is None or truncation_cutoff is None:
                    x = self.w_avg.lerp(x, truncation_psi)
                else:
                    x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution + noise + bias + activation, optionally upsampling 2x."""
    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Resolution of this layer's output.
        kernel_size     = 3,            # Convolution kernel size.
        up              = 1,            # Integer upsampling factor.
        use_noise       = True,         # Enable noise input?
        activation      = 'lrelu',      # Activation function: 'relu', 'lrelu', etc.
        resample_filter = [1,3,3,1],    # Low-pass filter to apply when resampling activations.
        conv_clamp      = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        channels_last   = False,        # Use channels_last format for the weights?
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1, split_at=None):
        """x: `[N, in_channels, res/up, res/up]`, w: `[N, w_dim]` -> `[N, out_channels, res, res]`.

        w may also be `[N, K, w_dim]` with K >= out_channels: one latent code per output filter
        (W++); codes beyond out_channels are unused.

        noise_mode: 'random' (fresh per call), 'const' (the stored `noise_const`) or 'none'.
        split_at:   None, or C: return the output channels `[:C]` and `[C:]` as two tensors,
                    computed as two convolutions. Demodulation, noise, bias and activation act per
                    output channel, so the first part is bit-identical to a layer with C outputs
                    (how a QC generator at q = 0 reproduces its source generator exactly).
        """
        if noise_mode not in ['random', 'const', 'none']:
            raise ValueError(f'noise_mode must be "random", "const" or "none", not "{noise_mode}"')
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        out_channels = self.weight.shape[0]
        if split_at is None:
            return self._conv(x, _rows(styles, 0, out_channels), noise, self.weight, self.bias, fused_modconv, gain)
        return (self._conv(x, _rows(styles, 0, split_at), noise, self.weight[:split_at], self.bias[:split_at], fused_modconv, gain),
                self._conv(x, _rows(styles, split_at, out_channels), noise, self.weight[split_at:], self.bias[split_at:], fused_modconv, gain))

    def _conv(self, x, styles, noise, weight, bias, fused_modconv, gain):
        flip_weight = (self.up == 1)  # The transposed convolution used for up=2 flips by itself.
        x = modulated_conv2d(x=x, weight=weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=flip_weight, fused_modconv=fused_modconv)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return f'resolution={self.resolution:d}, up={self.up}, activation={self.activation:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution (no demodulation) from features to image channels."""
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = _rows(self.affine(w) * self.weight_gain, 0, self.weight.shape[0])
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        x = bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)
        return x

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (upsample +) two modulated convs (+ ToRGB)."""
    def __init__(self,
        in_channels,                        # Number of input channels, 0 = first block.
        out_channels,                       # Number of output channels.
        w_dim,                              # Intermediate latent (W) dimensionality.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of output color channels.
        is_last,                            # Is this the last block?
        architecture        = 'skip',       # Architecture: 'orig', 'skip', 'resnet'.
        resample_filter     = [1,3,3,1],    # Low-pass filter to apply when resampling activations.
        conv_clamp          = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16            = False,        # Use FP16 for this block (CUDA only)?
        fp16_channels_last  = False,        # Use channels-last memory format with FP16?
        q_dim               = 0,            # QC-StyleGAN: quality code size D_q; > 0 adds a DegradBlock here.
        degrad_width        = 16,           # QC-StyleGAN: width L of each of the D_q feature groups.
        degrad_layers       = 3,            # QC-StyleGAN: number P of 1x1 convolutions in the projection.
        **layer_kwargs,                     # Arguments for SynthesisLayer.
    ):
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.out_channels = out_channels
        self.q_dim = q_dim
        self.degrad_width = degrad_width
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))

        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1

        # DegradBlock (QC-StyleGAN): conv1 gets D_q * L extra output channels (sharing its style,
        # demodulation, noise, bias, activation and clamp); their q-weighted sum over the D_q groups
        # goes through a bias-free 1x1 projection (ReLU between) and is added to the conv1 output.
        self.conv1 = SynthesisLayer(out_channels, out_channels + q_dim * degrad_width, w_dim=w_dim, resolution=resolution,
            conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if q_dim > 0:
            assert degrad_layers >= 1
            widths = [degrad_width] + [out_channels] * degrad_layers
            self.convq = torch.nn.Sequential(*[Conv2dLayer(widths[i], widths[i + 1], kernel_size=1, bias=False,
                activation=('relu' if i < degrad_layers - 1 else 'linear'), channels_last=self.channels_last)
                for i in range(degrad_layers)])

        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim,
                conv_clamp=conv_clamp, channels_last=self.channels_last)
            self.num_torgb += 1

        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                resample_filter=resample_filter, channels_last=self.channels_last)

    def compute_dtype(self, device, force_fp32=False):
        """float16 only for FP16 blocks on CUDA; CPU convolutions have no fast fp16 path."""
        if self.use_fp16 and not force_fp32 and torch.device(device).type == 'cuda':
            return torch.float16
        return torch.float32

    def forward(self, x, img, ws, q=None, force_fp32=False, fused_modconv=None, return_features=False, const_input=None,
                **layer_kwargs):
        """x: `[N, in_channels, res/2, res/2]` or None, img: `[N, img_channels, res/2, res/2]` or None,
        ws: `[N, num_conv + num_torgb, w_dim]`, q: `[N, q_dim]` or None (= zeros: sharp)
        -> (x `[N, out_channels, res, res]`, img `[N, img_channels, res, res]`), plus the conv1 content
        features `[N, out_channels, res, res]` (before any DegradBlock residual) if `return_features`.
        const_input: first block only: `[N, out_channels, res, res]` (or `[out_channels, res, res]`,
        shared by the batch) used in place of the learned constant (SPHInX's content input S);
        None (default) = the constant."""
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb] + [None] * (ws.ndim - 3) + [self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = self.compute_dtype(ws.device, force_fp32)
        memory_format = torch.channels_last if self.channels_last and dtype == torch.float16 else torch.contiguous_format
        if fused_modconv is None:
            with misc.suppress_tracer_warnings():
                fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        # Input.
        if self.in_channels == 0 and const_input is not None:
            if const_input.ndim == 3:
                const_input = const_input.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            misc.assert_shape(const_input, [ws.shape[0], self.out_channels, self.resolution, self.resolution])
            x = const_input.to(dtype=dtype, memory_format=memory_format)
        elif self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            if const_input is not None:
                raise ValueError('const_input is only for the first synthesis block (in_channels == 0)')
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        # Main layers.
        conv1_kwargs = dict(layer_kwargs, fused_modconv=fused_modconv)
        if self.in_channels == 0:
            x = self._conv1(x, next(w_iter), q, conv1_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self._conv1(x, next(w_iter), q, dict(conv1_kwargs, gain=math.sqrt(0.5)))
            x = (y.add_(x[0]), x[1])
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self._conv1(x, next(w_iter), q, conv1_kwargs)
        x, features = x

        # ToRGB.
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter).to(torch.float32)  # autocast may give bf16
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        assert x.dtype == dtype or torch.is_autocast_enabled(x.device.type)  # autocast (bf16) picks its own dtypes
        assert img is None or img.dtype == torch.float32
        if return_features:
            return x, img, features
        return x, img

    def _conv1(self, x, w, q, conv1_kwargs):
        """conv1, plus the DegradBlock residual for q != None. Returns (output, content features)."""
        if self.q_dim == 0:
            x = self.conv1(x, w, **conv1_kwargs)
            return x, x
        content, extra = self.conv1(x, w, split_at=self.out_channels, **conv1_kwargs)
        if q is None:
            return content, content  # q = 0: the residual is exactly zero
        N, _, H, W = extra.shape
        groups = extra.reshape(N, self.q_dim, self.degrad_width, H, W)
        mixed = (groups * q.to(extra.dtype).reshape(N, self.q_dim, 1, 1, 1)).sum(dim=1)  # [N, L, H, W]
        return content + self.convq(mixed), content

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}' + (f', q_dim={self.q_dim}' if self.q_dim else '')

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """Maps w `[N, num_ws, w_dim]` to an image `[N, img_channels, img_resolution, img_resolution]`."""
    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution (a power of two >= 4).
        img_channels,               # Number of color channels.
        channel_base    = 32768,    # Overall multiplier for the number of channels.
        channel_max     = 512,      # Maximum number of channels in any layer.
        num_fp16_res    = 0,        # Use FP16 for the N highest resolutions.
        q_dim           = 0,        # QC-StyleGAN quality code size D_q, 0 = plain StyleGAN2.
        qc_blocks       = 2,        # QC-StyleGAN: DegradBlocks in the M highest-resolution blocks (also the feature blocks).
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        if not (img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0):
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        num_blocks = int(np.log2(img_resolution)) - 1
        if q_dim > 0 and not 1 <= qc_blocks <= num_blocks:
            raise ValueError(f'qc_blocks={qc_blocks} does not fit a {img_resolution}x{img_resolution} generator '
                             f'({num_blocks} blocks); use 1..{num_blocks}')
        super().__init__()
        self.q_dim = q_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.feature_resolutions = self.block_resolutions[-max(min(qc_blocks, num_blocks), 1):]

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            out_channels = channels_dict[res]
            use_fp16 = (res >= fp16_resolution)
            is_last = (res == self.img_resolution)
            block_q_dim = q_dim if res in self.feature_resolutions else 0
            block = SynthesisBlock(in_channels, out_channels, w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=is_last, use_fp16=use_fp16, q_dim=block_q_dim, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def split_ws(self, ws):
        """Split `[N, num_ws, w_dim]` (or filter-wise `[N, num_ws, K, w_dim]`, W++) into the per-block
        slices; ToRGB shares its w with the next conv0."""
        misc.assert_shape(ws, [None, self.num_ws] + [None] * (ws.ndim - 3) + [self.w_dim])
        ws = ws.to(torch.float32)
        block_ws = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        return block_ws

    @property
    def max_filters(self):
        """Output filters of the widest layer: the K of filter-wise (W++) latents `[N, num_ws, K, w_dim]`."""
        return max(m.weight.shape[0] for m in self.modules() if isinstance(m, (SynthesisLayer, ToRGBLayer)))

    def check_q(self, q, batch_size):
        """Validate a quality code: None (sharp) or `[N, q_dim]`; all-zero q is the same as None."""
        if q is None:
            return None
        if self.q_dim == 0:
            if q.numel() != 0 and q.abs().max() != 0:
                raise ValueError('this generator has no quality code (q_dim=0): pass q=None')
            return None
        if q.ndim != 2 or q.shape[1] != self.q_dim or q.shape[0] != batch_size:
            raise ValueError(f'q must have shape [{batch_size}, {self.q_dim}], got {list(q.shape)}')
        return q

    def forward(self, ws, q=None, return_features=False, const_input=None, **block_kwargs):
        """ws: `[N, num_ws, w_dim]` (or W++ `[N, num_ws, K, w_dim]`, K >= the widest layer),
        q: `[N, q_dim]` or None (sharp) -> image `[N, img_channels, R, R]` float32.

        With `return_features`, returns `(img, features)`: the conv1 outputs `[N, C, r, r]` of the
        `feature_resolutions` blocks (low to high resolution), before any DegradBlock residual;
        QC-StyleGAN distils these from the source generator.
        const_input: None (default: the first block's learned constant), or the first block's input
        `[N, C, 4, 4]` (`[C, 4, 4]` broadcasts) used in place of the constant (C = `b4.out_channels`;
        SPHInX's content code S). Passing the constant itself gives the same image bit for bit.
        block_kwargs: noise_mode ('random'|'const'|'none'), force_fp32, fused_modconv.
        """
        q = self.check_q(q, ws.shape[0])
        x = img = None
        features = []
        for res, cur_ws in zip(self.block_resolutions, self.split_ws(ws)):
            block = getattr(self, f'b{res}')
            want = return_features and res in self.feature_resolutions
            first = dict(const_input=const_input) if const_input is not None and block.in_channels == 0 else {}
            out = block(x, img, cur_ws, q=q if block.q_dim else None, return_features=want, **first, **block_kwargs)
            x, img = out[:2]
            if want:
                features.append(out[2])
        if return_features:
            return img, features
        return img

    def extra_repr(self):
        return f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN2 generator: `G(z, c) -> img`, with `G.mapping(z, c) -> ws` and `G.synthesis(ws) -> img`."""
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution.
        img_channels,               # Number of output color channels.
        mapping_kwargs      = {},   # Arguments for MappingNetwork.
        synthesis_kwargs    = {},   # Arguments for SynthesisNetwork.
        q_dim               = 0,    # QC-StyleGAN quality code size D_q (16 in the released models), 0 = plain StyleGAN2.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.q_dim = q_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, q_dim=q_dim, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, q=None, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        """z: `[N, z_dim]`, c: `[N, c_dim]` (ignored if c_dim == 0), q: `[N, q_dim]` or None (sharp)
        -> image `[N, img_channels, R, R]`.

        synthesis_kwargs: noise_mode ('random'|'const'|'none'), force_fp32, fused_modconv, return_features.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, q=q, **synthesis_kwargs)

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromRGB +) conv + strided conv (+ resnet skip)."""
    def __init__(self,
        in_channels,                        # Number of input channels, 0 = first block.
        tmp_channels,                       # Number of intermediate channels.
        out_channels,                       # Number of output channels.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of input color channels.
        first_layer_idx,                    # Index of the first layer (for Freeze-D).
        architecture        = 'resnet',     # Architecture: 'orig', 'skip', 'resnet'.
        activation          = 'lrelu',      # Activation function: 'relu', 'lrelu', etc.
        resample_filter     = [1,3,3,1],    # Low-pass filter to apply when resampling activations.
        conv_clamp          = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16            = False,        # Use FP16 for this block (CUDA only)?
        fp16_channels_last  = False,        # Use channels-last memory format with FP16?
        freeze_layers       = 0,            # Freeze-D: number of layers to freeze, counted from the input.
    ):
        assert in_channels in [0, tmp_channels]
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        # Layers are numbered in creation order across the whole discriminator.
        self.num_layers = 0
        def next_trainable():
            layer_idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                trainable=next_trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)

        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
            trainable=next_trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)

        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
            trainable=next_trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=self.channels_last)

        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                trainable=next_trainable(), resample_filter=resample_filter, channels_last=self.channels_last)

    def compute_dtype(self, device, force_fp32=False):
        if self.use_fp16 and not force_fp32 and torch.device(device).type == 'cuda':
            return torch.float16
        return torch.float32

    def forward(self, x, img, force_fp32=False):
        """x: `[N, in_channels, res, res]` or None, img: `[N, img_channels, res, res]` or None
        -> (x `[N, out_channels, res/2, res/2]`, img downsampled for 'skip', else None)."""
        device = (x if x is not None else img).device
        dtype = self.compute_dtype(device, force_fp32)
        memory_format = torch.channels_last if self.channels_last and dtype == torch.float16 else torch.contiguous_format

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype or torch.is_autocast_enabled(x.device.type)  # autocast (bf16) picks its own dtypes
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends `num_channels` feature maps holding the feature std within groups of `group_size` samples."""
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():
            G = min(self.group_size, int(N)) if self.group_size is not None else int(N)
        F = self.num_channels
        c = C // F
        if not torch.jit.is_tracing() and N % G != 0:
            raise ValueError(f'MinibatchStdLayer: batch size {N} is not divisible by the group size {G}')

        y = x.reshape(G, -1, F, c, H, W)    # [GnFcHW] Sample i is in group i % n; channels split into F groups.
        y = y - y.mean(dim=0)               # [GnFcHW] Subtract the group mean.
        y = y.square().mean(dim=0)          # [nFcHW]  Variance over the group.
        y = (y + 1e-8).sqrt()               # [nFcHW]  Standard deviation.
        y = y.mean(dim=[2, 3, 4])           # [nF]     Average over channels and pixels.
        y = y.reshape(-1, F, 1, 1)          # [nF11]
        y = y.repeat(G, 1, H, W)            # [NFHW]   Back to every sample and pixel.
        x = torch.cat([x, y], dim=1)        # [N(C+F)HW]
        return x

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels:d}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """Final 4x4 block of the discriminator: minibatch std, conv, dense layers, (projection) output."""
    def __init__(self,
        in_channels,                    # Number of input channels.
        cmap_dim,                       # Dimensionality of the mapped conditioning label, 0 = no label.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        mbstd_group_size    = 4,        # Group size for the minibatch standard deviation layer, None = entire minibatch.
        mbstd_num_channels  = 1,        # Number of features for the minibatch standard deviation layer, 0 = disable.
        activation          = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        conv_clamp          = None,     # Clamp the output of convolution layers to +-X, None = disable clamping.
    ):
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        """x: `[N, in_channels, 4, 4]`, cmap: `[N, cmap_dim]` or None -> logits `[N, 1]` (always fp32)."""
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        _ = force_fp32
        dtype = torch.float32
        memory_format = torch.contiguous_format

        x = x.to(dtype=dtype, memory_format=memory_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        # Conditioning by projection onto the mapped label.
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))

        assert x.dtype == dtype or torch.is_autocast_enabled(x.device.type)  # autocast (bf16) picks its own dtypes
        return x

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: `D(img, c) -> logits [N, 1]`."""
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 0,        # Use FP16 for the N highest resolutions.
        conv_clamp          = None,     # Clamp the output of convolution layers to +-X, None = disable clamping.
        cmap_dim            = None,     # Dimensionality of mapped conditioning label, None = default.
        block_kwargs        = {},       # Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # Arguments for MappingNetwork.
        epilogue_kwargs     = {},       # Arguments for DiscriminatorEpilogue.
    ):
        if not (img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0):
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < img_resolution else 0
            tmp_channels = channels_dict[res]
            out_channels = channels_dict[res // 2]
            use_fp16 = (res >= fp16_resolution)
            block = DiscriminatorBlock(in_channels, tmp_channels, out_channels, resolution=res,
                first_layer_idx=cur_layer_idx, use_fp16=use_fp16, **block_kwargs, **common_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common_kwargs)

    def forward(self, img, c, **block_kwargs):
        """img: `[N, img_channels, R, R]` in about [-1, 1], c: `[N, c_dim]` -> logits `[N, 1]` float32."""
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            x, img = block(x, img, **block_kwargs)

        cmap = None
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        x = self.b4(x, img, cmap)
        return x

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------
