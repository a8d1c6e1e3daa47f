"""Option types and options shared by the command-line scripts (click).

Bad values become click usage errors (exit code 2, one "Error: Invalid value for ..." line) before a
script does any work.
"""

import errno
import functools
import math

import click

from . import util

#----------------------------------------------------------------------------

class FiniteFloat(click.FloatRange):
    """A float in an optional range that must also be finite (`click.FloatRange` lets nan and inf through)."""
    name = 'float'

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() in ('nan', '+nan', '-nan', 'inf', '+inf', '-inf', 'infinity', '-infinity'):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return rv

#----------------------------------------------------------------------------

def trust_pickle_option(fn):
    """`--trust-pickle`: let files loaded by this command run code (custom classes in pickles). Sets
    `QCGAN_TRUST_PICKLE=1` for this process and the processes it starts; the command does not see it."""
    return click.option('--trust-pickle', is_flag=True, expose_value=False, is_eager=True, callback=util.click_trust_pickle,
                        help='Let loaded files run code (pickles with custom classes); only for files you trust')(fn)

#----------------------------------------------------------------------------

_ONE_LINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)

def os_errors_as_one_line(fn):
    """Decorator for a click command function (put it directly above `def`): a full disk, a quota or a
    permission problem met while the command runs becomes one "Error: ..." line (exit code 1) instead of
    a traceback. Every writer writes atomically, so nothing partial is left behind."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            if err.errno not in _ONE_LINE_ERRNOS:
                raise
            where = f'"{err.filename}": ' if err.filename else 'writing the results failed: '
            raise click.ClickException(f'{where}{util.describe_os_error(err)} (nothing partial was left behind)') from None
    return wrapper

#----------------------------------------------------------------------------
