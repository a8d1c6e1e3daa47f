"""The one `--device` parser shared by every script: 'cpu', 'cuda', 'cuda:N' or 'auto'."""

import torch

#----------------------------------------------------------------------------

DEVICE_HELP = 'cpu, cuda, cuda:N, auto'

def parse_device(device):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device (the index kept); a one-line ValueError if
    the text is not a device or CUDA (or that GPU) is asked for but absent."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f'invalid device "{device}": use {DEVICE_HELP}') from err
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'unsupported device "{device}": use {DEVICE_HELP}')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError('CUDA was requested but no CUDA device is available; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f'{device} requested but only {torch.cuda.device_count()} CUDA device(s) exist')
    return device

def device_options(device):
    """`--device` text -> the fields the training scripts store in their options (see
    `distributed.process_device`): dict(device_type='cpu'|'cuda'), plus device_index=N when the text
    names one GPU ('cuda:N'). Raises ValueError."""
    dev = parse_device(device)
    return dict(device_type=dev.type) if dev.index is None else dict(device_type=dev.type, device_index=dev.index)

#----------------------------------------------------------------------------
