"""Files released with QC-StyleGAN and pSp, read without running code from them.

* `network_from_state_dict(sd)`: a plain generator state dict, as QC-StyleGAN's released teachers
  `G_teacher_*.pth.tar` (`torch.save(G.state_dict())` of a stock StyleGAN2-ADA generator, loaded
  by the reference with a strict `load_state_dict`). The architecture (resolution, channels,
  mapping depth, and for QC state dicts q_dim and the DegradBlock blocks) is read from the key
  names and shapes; `num_fp16_res=4, conv_clamp=256` as the reference's `Gteacher_kwargs` for
  the paper configs (they do not change the weights).
* `encoder_from_psp_checkpoint(ckpt)`: a pSp training checkpoint `{state_dict, opts, latent_avg[,
  optimizer]}` as written by the pSp coaches:
  - QC-StyleGAN `DoubleEncoder` (`ffhq_psp.pt`, `afhq_psp.pt`): two ResNet34 encoders
    (`encoder.content_encoder.*` -> w offset [512], `encoder.quality_encoder.*` -> q [q_dim]);
    `latent_avg` [w_dim + q_dim] = w_avg followed by zeros; codes = encoder output + latent_avg;
    w is broadcast to every layer (W space). This is `PSPEncoder(backbone='resnet34', w_space='w')`.
  - pSp `GradualStyleEncoder(50, 'ir_se')` (`psp_ffhq_encode.pt`): IR-SE50 backbone and the
    GradualStyle feature-pyramid head -> W+ [n_styles, 512]; `latent_avg` [n_styles, 512] is
    added row by row. `BackboneEncoderUsingLastLayerIntoW(50, 'ir_se')` (`--learn_in_w`,
    latent_avg [1, 512]) also loads.
  The decoder (`decoder.*`) keys are not used: as the reference inference, the generator comes
  from the network file the user passes.
"""

import re

import torch

from training import encoders as enc

__all__ = ['ReleasedFileError', 'network_from_state_dict', 'network_from_state_dict_file', 'is_psp_checkpoint',
           'encoder_from_psp_checkpoint', 'PSP_SUPPORTED']

PSP_SUPPORTED = ('DoubleEncoder (QC-StyleGAN), GradualStyleEncoder and BackboneEncoderUsingLastLayerIntoW '
                 '(pSp, IR-SE50)')

class ReleasedFileError(enc.EncoderError):
    """A released file of a kind or variant that this code does not read (one line)."""

#----------------------------------------------------------------------------
# Generator state dicts (released teachers).

def _generator_kwargs_from_state_dict(sd):
    blocks = sorted({int(m[1]) for k in sd for m in [re.match(r'synthesis\.b(\d+)\.', k)] if m})
    if not blocks or 'synthesis.b4.conv1.affine.weight' not in sd:
        raise ReleasedFileError('not a StyleGAN2 generator state dict (no synthesis.b4.conv1 weights)')
    res = blocks[-1]
    chans = {r: int(sd[f'synthesis.b{r}.conv1.weight'].shape[1]) for r in blocks}
    channel_max = max(chans.values())
    smaller = [r for r in blocks if chans[r] < channel_max]
    channel_base = chans[smaller[0]] * smaller[0] if smaller else channel_max * res
    if any(min(channel_base // r, channel_max) != chans[r] for r in blocks):
        raise ReleasedFileError(f'generator channel counts {chans} do not follow min(channel_base / r, channel_max)')
    fcs = sorted(int(m[1]) for k in sd for m in [re.fullmatch(r'mapping\.fc(\d+)\.weight', k)] if m)
    c_dim = int(sd['mapping.embed.weight'].shape[1]) if 'mapping.embed.weight' in sd else 0
    embed = int(sd['mapping.embed.weight'].shape[0]) if c_dim else 0
    w_dim = int(sd['synthesis.b4.conv1.affine.weight'].shape[1])
    synthesis_kwargs = dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=4, conv_clamp=256)
    qc = [r for r in blocks if f'synthesis.b{r}.convq.0.weight' in sd]
    q_dim = 0
    if qc:
        width = int(sd[f'synthesis.b{qc[0]}.convq.0.weight'].shape[1])
        q_dim = (int(sd[f'synthesis.b{qc[0]}.conv1.weight'].shape[0]) - chans[qc[0]]) // width
        layers = len([k for k in sd if k.startswith(f'synthesis.b{qc[0]}.convq.') and k.endswith('.weight')])
        synthesis_kwargs.update(qc_blocks=len(qc), degrad_width=width, degrad_layers=layers)
    mapping_kwargs = dict(num_layers=len(fcs), layer_features=int(sd['mapping.fc0.weight'].shape[0]) if len(fcs) > 1 else None)
    if c_dim:
        mapping_kwargs['embed_features'] = embed
    if 'mapping.w_avg' not in sd:
        mapping_kwargs['w_avg_beta'] = None
    return dict(z_dim=int(sd['mapping.fc0.weight'].shape[1]) - embed, c_dim=c_dim, w_dim=w_dim, img_resolution=res,
                img_channels=int(sd[f'synthesis.b{res}.torgb.weight'].shape[0]), q_dim=q_dim,
                mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)

def network_from_state_dict(sd):
    """`{G, G_ema}` (the same eval-mode generator) from a plain StyleGAN2 / QC generator state dict."""
    from training import networks  # pylint: disable=import-outside-toplevel
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    kwargs = _generator_kwargs_from_state_dict(sd)
    G = networks.Generator(**kwargs)
    try:
        G.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise ReleasedFileError(f'generator state dict does not fit the architecture it describes '
                                f'({str(err).splitlines()[0]})') from None
    G = G.eval().requires_grad_(False)
    return dict(G=G, G_ema=G, D=None, source_format='state_dict')

def network_from_state_dict_file(data):
    """`network_from_state_dict` of torch-file bytes (`weights_only` load)."""
    import io  # pylint: disable=import-outside-toplevel
    import legacy  # pylint: disable=import-outside-toplevel
    try:
        sd = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
        result = network_from_state_dict(sd)
    except ReleasedFileError as err:
        raise legacy.NetworkLoadError(str(err)) from None
    result.pop('D')
    return result

#----------------------------------------------------------------------------
# pSp checkpoints.

def is_psp_checkpoint(ckpt):
    """True for a pSp / QC-StyleGAN pSp training checkpoint dict."""
    return (isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict) and isinstance(ckpt.get('opts'), dict)
            and any(str(k).startswith('encoder.') for k in ckpt['state_dict']))

_RESNET34_UNITS = (3, 4, 6, 3)
_IRSE50_UNITS = (3, 4, 14, 3)

def _body_key(rest, units, prefix):
    """'body.{i}.X' -> '{prefix}.stages.{s}.{j}.X' for stages of `units` units."""
    m = re.match(r'body\.(\d+)\.(.+)', rest)
    idx = int(m[1])
    for stage, count in enumerate(units):
        if idx < count:
            return f'{prefix}.stages.{stage}.{idx}.{m[2]}'
        idx -= count
    raise ReleasedFileError(f'encoder has more residual units than the backbone ({rest})')

def _rename_resnet34(rest, backbone, head):
    if rest.startswith('body.'):
        return _body_key(rest, _RESNET34_UNITS, backbone)
    for old, new in [('conv1.', f'{backbone}.stem.0.'), ('bn1.', f'{backbone}.stem.1.'), ('relu.', f'{backbone}.stem.2.'),
                     ('linear.', f'{head}.linear.')]:
        if rest.startswith(old):
            return new + rest[len(old):]
    return None

def _rename_irse50(rest):
    if rest.startswith('body.'):
        return _body_key(rest, _IRSE50_UNITS, 'w_backbone')
    for old, new in [('input_layer.', 'w_backbone.stem.'), ('latlayer1.', 'w_head.laterals.0.'),
                     ('latlayer2.', 'w_head.laterals.1.'), ('styles.', 'w_head.styles.'), ('linear.', 'w_head.linear.')]:
        if rest.startswith(old):
            return new + rest[len(old):]
    return None

class ReleasedWPlusEncoder(enc.PSPEncoder):
    """pSp W+ encoder whose latent_avg has one row per style (`[num_ws, w_dim]`, added row by row)."""

    def __init__(self, latent_avg_plus=None, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer('latent_avg_plus', torch.zeros([self.num_ws, self.w_dim]))
        if latent_avg_plus is not None:
            with torch.no_grad():
                self.latent_avg_plus.copy_(torch.as_tensor(latent_avg_plus, dtype=torch.float32).reshape(self.num_ws, self.w_dim))

    def encode_w(self, x):
        return self.w_head(self.w_backbone(x)) + self.latent_avg_plus.unsqueeze(0)

def _opt(opts, name, default=None):
    value = opts.get(name, default)
    return default if value is None else value

def encoder_from_psp_checkpoint(ckpt, path='pSp checkpoint'):
    """(PSPEncoder in eval mode with the checkpoint's weights, info dict). See the module docstring.

    Raises ReleasedFileError (one line) for encoder types or options this code does not read."""
    opts = ckpt['opts']
    sd = {k[len('encoder.'):]: v for k, v in ckpt['state_dict'].items() if str(k).startswith('encoder.')}
    kind = opts.get('encoder_type') or ('DoubleEncoder' if any(k.startswith('content_encoder.') for k in sd) else
                                        'GradualStyleEncoder' if any(k.startswith('styles.') for k in sd) else 'unknown')
    latent_avg = ckpt.get('latent_avg')
    if latent_avg is not None:
        latent_avg = torch.as_tensor(latent_avg).detach().float().cpu()
    if not _opt(opts, 'start_from_latent_avg', False):
        latent_avg = None
    output_size = int(_opt(opts, 'output_size', 1024))
    num_ws = int(_opt(opts, 'n_styles', 2 * (output_size.bit_length() - 1) - 2))
    if int(_opt(opts, 'input_nc', 3)) != 3:
        raise ReleasedFileError(f'{path}: pSp encoders with input_nc={opts["input_nc"]} are not supported (3-channel RGB only)')

    if kind == 'DoubleEncoder':
        w_dim = int(sd['content_encoder.linear.weight'].shape[0])
        q_dim = int(sd['quality_encoder.linear.weight'].shape[0])
        if not _opt(opts, 'learn_in_w', False) and opts.get('learn_in_w') is not None:
            raise ReleasedFileError(f'{path}: DoubleEncoder checkpoints without --learn_in_w are not supported '
                                    f'(the reference forward needs start_from_latent_avg and learn_in_w)')
        new_sd = dict()
        for key, value in sd.items():
            part, rest = key.split('.', 1)
            backbone, head = {'content_encoder': ('w_backbone', 'w_head'), 'quality_encoder': ('q_backbone', 'q_head')}.get(part, (None, None))
            name = _rename_resnet34(rest, backbone, head) if backbone else None
            if name is None:
                raise ReleasedFileError(f'{path}: unexpected DoubleEncoder key "encoder.{key}"')
            new_sd[name] = value
        kwargs = dict(w_dim=w_dim, num_ws=num_ws, q_dim=q_dim, img_resolution=output_size, img_channels=3,
                      w_space='w', backbone='resnet34', input_size=256, backbone_weights='none')
        cls = enc.PSPEncoder
        avg = latent_avg if latent_avg is not None else torch.zeros([w_dim + q_dim])
        new_sd['latent_avg'] = avg.reshape(-1)
    elif kind in ('GradualStyleEncoder', 'BackboneEncoderUsingLastLayerIntoW'):
        new_sd = dict()
        for key, value in sd.items():
            name = _rename_irse50(key)
            if name is None:
                raise ReleasedFileError(f'{path}: unexpected {kind} key "encoder.{key}"')
            new_sd[name] = value
        if 'w_backbone.stages.3.2.res_layer.5.fc2.weight' not in new_sd or 'w_backbone.stages.2.13.res_layer.0.weight' not in new_sd:
            raise ReleasedFileError(f'{path}: only the IR-SE50 backbone is supported (not ResNet-IR 100/152 or plain IR)')
        head_linear = 'w_head.styles.0.linear.weight' if kind == 'GradualStyleEncoder' else 'w_head.linear.weight'
        if head_linear not in new_sd:
            raise ReleasedFileError(f'{path}: {kind} checkpoint has no "{head_linear}"; supported: {PSP_SUPPORTED}')
        w_dim = int(new_sd[head_linear].shape[0])
        if kind == 'GradualStyleEncoder':
            num_ws = len({int(k.split('.')[2]) for k in new_sd if k.startswith('w_head.styles.')})
            kwargs = dict(w_dim=w_dim, num_ws=num_ws, q_dim=0, img_resolution=output_size, img_channels=3, w_space='w+',
                          backbone='ir_se50', input_size=256, backbone_weights='none')
            cls = ReleasedWPlusEncoder
            avg = latent_avg if latent_avg is not None else torch.zeros([num_ws, w_dim])
            if avg.numel() == w_dim:
                avg = avg.reshape(1, w_dim).repeat(num_ws, 1)
            new_sd['latent_avg_plus'] = avg.reshape(num_ws, w_dim)
            new_sd['latent_avg'] = avg.reshape(num_ws, w_dim).mean(0)
        else:
            kwargs = dict(w_dim=w_dim, num_ws=num_ws, q_dim=0, img_resolution=output_size, img_channels=3, w_space='w',
                          backbone='ir_se50', input_size=256, backbone_weights='none')
            cls = enc.PSPEncoder
            avg = latent_avg if latent_avg is not None else torch.zeros([w_dim])
            new_sd['latent_avg'] = avg.reshape(-1)[:w_dim]
    else:
        raise ReleasedFileError(f'{path}: pSp encoder type "{kind}" is not supported; supported: {PSP_SUPPORTED}')

    with torch.device('meta'):
        encoder = cls(**kwargs)
    try:
        encoder.load_state_dict(new_sd, strict=True, assign=True)
    except RuntimeError as err:
        raise ReleasedFileError(f'{path}: {kind} weights do not have the released names/shapes '
                                f'({" ".join(str(err).split())[:300]})') from None
    info = dict(kind=kind, network=opts.get('stylegan_weights'), output_size=output_size, num_ws=num_ws,
                has_decoder=any(str(k).startswith('decoder.') for k in ckpt['state_dict']))
    return encoder.eval(), info
