"""TensorFlow StyleGAN2 / StyleGAN2-ADA network pickles -> this project's Generator / Discriminator.

A TF pickle is a tuple `(G, D, Gs)` of `dnnlib.tflib.network.Network` objects. `legacy.py` reads
it with a restricted unpickler that turns each Network into a plain attribute dict (TensorFlow is
never imported, no code from the file runs). Each holds `version`, `static_kwargs` (the build
arguments), `variables` (a list of `(name, numpy array)`) and `components` (sub-networks such as
`mapping` and `synthesis`, with their own `variables`, named `<component>/<name>`).

The conversion follows the reference stylegan2-ada-pytorch loader:

* build arguments: `latent_size -> z_dim`, `label_size -> c_dim`, `dlatent_size -> w_dim`,
  `resolution`, `num_channels`, `fmap_base * 2 -> channel_base`, `fmap_max -> channel_max`, the
  mapping network's depth/width/lr multiplier/nonlinearity, `w_avg_beta` (None -> 1),
  `architecture`, `resample_kernel`, `use_noise`, `nonlinearity`, `num_fp16_res`, `conv_clamp`;
  anything else that changes the network is refused with a one-line error;
* tensors: dense weights are transposed; conv weights `[kh, kw, in, out]` become
  `[out, in, kh, kw]`; the generator's `Conv0_up` and `Skip` kernels are also flipped
  spatially; modulation biases get `+1`; `const[0]`; `dlatent_avg -> mapping.w_avg`; noise
  inputs `synthesis/noise{k}[0, 0]` with `k = 0` for `b4.conv1`, `2 log2(r) - 5` for
  `b{r}.conv0` and `2 log2(r) - 4` for `b{r}.conv1`; the discriminator's
  `{r}x{r}/{FromRGB,Conv0,Conv1_down,Skip}`, `4x4/{Conv,Dense0}`, `Output`, `LabelEmbed` and
  `Mapping{i}` go to `b{r}.{fromrgb,conv0,conv1,skip}`, `b4.{conv,fc}`, `b4.out` and
  `mapping.{embed,fc{i}}`. Resampling filters keep this project's values.

Every TF variable must be used and every parameter filled, else `TFConversionError` names the
first few that are not.
"""

import re

import numpy as np
import torch

import dnnlib

__all__ = ['TFConversionError', 'collect_tf_params', 'generator_kwargs', 'discriminator_kwargs',
           'convert_tf_generator', 'convert_tf_discriminator', 'convert_tf_pickle']

class TFConversionError(ValueError):
    """A TF network that this converter does not support, or whose variables do not fit (one line)."""

#----------------------------------------------------------------------------

def _attr(net, name, default=None):
    value = getattr(net, name, None)
    if value is None and isinstance(net, dict):
        value = net.get(name)
    return default if value is None else value

def collect_tf_params(tf_net):
    """`{name: numpy array}` of a TF network and its components (`mapping/Dense0/weight`, ...)."""
    params = dict()
    def walk(prefix, net):
        for name, value in _attr(net, 'variables', []):
            params[prefix + name] = np.asarray(value)
        for name, comp in dict(_attr(net, 'components', {})).items():
            walk(prefix + name + '/', comp)
    walk('', tf_net)
    return params

def _check_version(tf_net, what):
    version = int(_attr(tf_net, 'version', 0))
    if version < 4:
        raise TFConversionError(f'{what} is a TF network of format version {version}; only StyleGAN2 / StyleGAN2-ADA '
                                f'pickles (version >= 4) convert (StyleGAN1 and older StyleGAN2 snapshots do not)')

class _Kwargs:
    """Pops known TF build arguments; `done()` refuses the rest."""
    _IGNORED = {'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val',
                'dlatent_broadcast', 'randomize_noise', 'fused_modconv', 'is_training', 'is_validation',
                'is_template_graph', 'return_dlatents', 'style_mixing_prob', 'components', 'dtype', 'structure',
                'mapping_func', 'synthesis_func', 'func_name', 'conditioning'}

    def __init__(self, kwargs, what):
        self.kwargs = dict(kwargs or {})
        self.what = what

    def pop(self, name, default=None):
        return self.kwargs.pop(name, default)

    def require(self, name, allowed, default):
        value = self.kwargs.pop(name, default)
        if value not in allowed:
            raise TFConversionError(f'{self.what}: {name}={value!r} is not supported (only {allowed})')
        return value

    def done(self):
        unknown = sorted(k for k in self.kwargs if k not in self._IGNORED)
        if unknown:
            raise TFConversionError(f'{self.what}: unsupported TF build arguments {unknown} (this is not a StyleGAN2 / '
                                    f'StyleGAN2-ADA config-E/F network)')

def generator_kwargs(tf_G):
    """Constructor kwargs of `training.networks.Generator` for a TF generator."""
    kw = _Kwargs(_attr(tf_G, 'static_kwargs', {}), 'generator')
    w_dim = kw.pop('dlatent_size', 512)
    w_avg_beta = kw.pop('w_avg_beta', kw.pop('dlatent_avg_beta', 0.995))
    kw.require('normalize_latents', [True], True)
    kw.require('fmap_decay', [1, 1.0], 1.0)
    kw.require('fmap_min', [1], 1)
    result = dnnlib.EasyDict(
        z_dim=kw.pop('latent_size', 512), c_dim=kw.pop('label_size', 0), w_dim=w_dim,
        img_resolution=kw.pop('resolution', 1024), img_channels=kw.pop('num_channels', 3),
        mapping_kwargs=dnnlib.EasyDict(
            num_layers=kw.pop('mapping_layers', 8), embed_features=kw.pop('label_fmaps', None),
            layer_features=kw.pop('mapping_fmaps', None), activation=kw.pop('mapping_nonlinearity', 'lrelu'),
            lr_multiplier=kw.pop('mapping_lrmul', 0.01), w_avg_beta=1 if w_avg_beta is None else w_avg_beta),
        synthesis_kwargs=dnnlib.EasyDict(
            channel_base=int(kw.pop('fmap_base', 16 << 10)) * 2, channel_max=kw.pop('fmap_max', 512),
            num_fp16_res=kw.pop('num_fp16_res', 0), conv_clamp=kw.pop('conv_clamp', None),
            architecture=kw.require('architecture', ['skip', 'resnet', 'orig'], 'skip'),
            resample_filter=list(kw.pop('resample_kernel', [1, 3, 3, 1])),
            use_noise=kw.pop('use_noise', True), activation=kw.pop('nonlinearity', 'lrelu')),
    )
    kw.done()
    return result

def discriminator_kwargs(tf_D):
    """Constructor kwargs of `training.networks.Discriminator` for a TF discriminator."""
    kw = _Kwargs(_attr(tf_D, 'static_kwargs', {}), 'discriminator')
    kw.require('fmap_decay', [1, 1.0], 1.0)
    kw.require('fmap_min', [1], 1)
    result = dnnlib.EasyDict(
        c_dim=kw.pop('label_size', 0), img_resolution=kw.pop('resolution', 1024), img_channels=kw.pop('num_channels', 3),
        architecture=kw.require('architecture', ['resnet', 'skip', 'orig'], 'resnet'),
        channel_base=int(kw.pop('fmap_base', 16 << 10)) * 2, channel_max=kw.pop('fmap_max', 512),
        num_fp16_res=kw.pop('num_fp16_res', 0), conv_clamp=kw.pop('conv_clamp', None), cmap_dim=kw.pop('mapping_fmaps', None),
        block_kwargs=dnnlib.EasyDict(activation=kw.pop('nonlinearity', 'lrelu'),
                                     resample_filter=list(kw.pop('resample_kernel', [1, 3, 3, 1])),
                                     freeze_layers=kw.pop('freeze_layers', 0)),
        mapping_kwargs=dnnlib.EasyDict(num_layers=kw.pop('mapping_layers', 0), layer_features=None,
                                       lr_multiplier=kw.pop('mapping_lrmul', 0.1)),
        epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=kw.pop('mbstd_group_size', 4),
                                        mbstd_num_channels=kw.pop('mbstd_num_features', 1)),
    )
    kw.done()
    return result

#----------------------------------------------------------------------------
# Name rules: torch name -> (TF name, transform).

def _dense(x):
    return x.T

def _conv(x):
    return x.transpose(3, 2, 0, 1)

def _conv_flip(x):
    return x.transpose(3, 2, 0, 1)[:, :, ::-1, ::-1]

def _plus_one(x):
    return x + 1

def _same(x):
    return x

def _noise(x):
    return x[0, 0]

def _const(x):
    return x[0]

def _layer_rule(prefix, attr, flip):
    """Rules shared by modulated layers (conv, torgb): `{attr: (tf suffix, transform)}`."""
    return {'weight': (f'{prefix}/weight', _conv_flip if flip else _conv), 'bias': (f'{prefix}/bias', _same),
            'noise_strength': (f'{prefix}/noise_strength', _same), 'affine.weight': (f'{prefix}/mod_weight', _dense),
            'affine.bias': (f'{prefix}/mod_bias', _plus_one)}.get(attr)

def _generator_rule(name):
    m = re.fullmatch(r'mapping\.fc(\d+)\.(weight|bias)', name)
    if m:
        return f'mapping/Dense{m[1]}/{m[2]}', (_dense if m[2] == 'weight' else _same)
    m = re.fullmatch(r'mapping\.embed\.(weight|bias)', name)
    if m:
        return f'mapping/LabelEmbed/{m[1]}', (_dense if m[1] == 'weight' else _same)
    if name == 'mapping.w_avg':
        return 'dlatent_avg', _same
    if name == 'synthesis.b4.const':
        return 'synthesis/4x4/Const/const', _const
    m = re.fullmatch(r'synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.+)', name)
    if m:
        res, layer, attr = int(m[1]), m[2], m[3]
        log2 = int(np.log2(res))
        if attr == 'noise_const':
            k = 0 if res == 4 else (2 * log2 - 5 if layer == 'conv0' else 2 * log2 - 4)
            return f'synthesis/noise{k}', _noise
        tf_layer = {'conv0': 'Conv0_up', 'conv1': 'Conv' if res == 4 else 'Conv1', 'torgb': 'ToRGB'}[layer]
        rule = _layer_rule(f'synthesis/{res}x{res}/{tf_layer}', attr, flip=(layer == 'conv0'))
        return rule if rule is not None else (None, None)
    m = re.fullmatch(r'synthesis\.b(\d+)\.skip\.weight', name)
    if m:
        return f'synthesis/{m[1]}x{m[1]}/Skip/weight', _conv_flip
    return None, None

def _discriminator_rule(name):
    m = re.fullmatch(r'b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)', name)
    if m:
        res, layer, attr = int(m[1]), m[2], m[3]
        if layer == 'out':
            tf = 'Output'
        elif layer == 'fc':
            tf = f'{res}x{res}/Dense0'
        else:
            tf = f'{res}x{res}/' + {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip',
                                     'conv': 'Conv'}[layer]
        transform = _same if attr == 'bias' else (_dense if layer in ('fc', 'out') else _conv)
        return f'{tf}/{attr}', transform
    m = re.fullmatch(r'mapping\.embed\.(weight|bias)', name)
    if m:
        return f'LabelEmbed/{m[1]}', (_dense if m[1] == 'weight' else _same)
    m = re.fullmatch(r'mapping\.fc(\d+)\.(weight|bias)', name)
    if m:
        return f'Mapping{m[1]}/{m[2]}', (_dense if m[2] == 'weight' else _same)
    return None, None

@torch.no_grad()
def _fill(module, tf_params, rule, what):
    used = set()
    unmatched = []
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith('resample_filter'):
            continue
        tf_name, transform = rule(name)
        if tf_name is None or tf_name not in tf_params:
            unmatched.append(f'{name} ({tf_name or "no rule"})')
            continue
        value = np.array(transform(np.asarray(tf_params[tf_name], dtype=np.float32)), dtype=np.float32, order="C")
        if list(value.shape) != list(tensor.shape):
            raise TFConversionError(f'{what}: "{tf_name}" has shape {list(np.asarray(tf_params[tf_name]).shape)}, which '
                                    f'does not give {name} {list(tensor.shape)}')
        tensor.copy_(torch.from_numpy(value))
        used.add(tf_name)
    if unmatched:
        raise TFConversionError(f'{what}: no TF variable for {len(unmatched)} parameter(s), e.g. {unmatched[:3]}')
    unused = sorted(set(tf_params) - used)
    if unused:
        raise TFConversionError(f'{what}: {len(unused)} TF variable(s) not used, e.g. {unused[:3]} '
                                f'(architecture not supported)')

def convert_tf_generator(tf_G):
    """A `training.networks.Generator` (eval, no grads) with the weights of a TF generator."""
    from training import networks  # pylint: disable=import-outside-toplevel
    _check_version(tf_G, 'the generator')
    G = networks.Generator(**generator_kwargs(tf_G))
    _fill(G, collect_tf_params(tf_G), _generator_rule, 'generator')
    return G.eval().requires_grad_(False)

def convert_tf_discriminator(tf_D):
    """A `training.networks.Discriminator` (eval, no grads) with the weights of a TF discriminator."""
    from training import networks  # pylint: disable=import-outside-toplevel
    _check_version(tf_D, 'the discriminator')
    D = networks.Discriminator(**discriminator_kwargs(tf_D))
    _fill(D, collect_tf_params(tf_D), _discriminator_rule, 'discriminator')
    return D.eval().requires_grad_(False)

def convert_tf_pickle(tf_G, tf_D, tf_Gs):
    """`{G, D, G_ema, augment_pipe: None, training_set_kwargs: None}` from the `(G, D, Gs)` tuple."""
    return dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs),
                augment_pipe=None, training_set_kwargs=None)
