"""Tests for dnnlib (EasyDict, Logger, name lookup, cache paths, open_url).

Everything runs offline: http tests use a ThreadingHTTPServer on 127.0.0.1.
"""

import copy
import hashlib
import http.server
import io
import math
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import threading
import collections
import urllib.request

import pytest

import dnnlib
from dnnlib import util


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the real ~/.cache/dnnlib, never sleep between retries."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'dnnlib-cache'))
    monkeypatch.delenv('DNNLIB_OFFLINE', raising=False)
    monkeypatch.setattr(util, '_cache_dir_override', None)
    monkeypatch.setattr(util, 'RETRY_BACKOFF_BASE_S', 0.0)
    yield


class _Server:
    """Serves ``files`` (path -> bytes); counts requests per path."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        self.fail_next = collections.Counter()  # path -> number of 503 replies first
        self.truncate_next = collections.Counter()  # path -> number of short bodies first
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if server.fail_next[self.path] > 0:
                    server.fail_next[self.path] -= 1
                    self.send_error(503, 'try later')
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, 'not here')
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if server.truncate_next[self.path] > 0:
                    server.truncate_next[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.02), daemon=True)
        self.thread.start()

    def url(self, path):
        return f'http://127.0.0.1:{self.port}{path}'

    def shutdown(self):
        if self.thread is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.thread = None


@pytest.fixture
def server():
    srv = _Server({
        '/nets/model.pkl': b'pickle-bytes-' * 1000,
        '/weird/na%20me%3F.bin': b'abc',
        '/big.bin': os.urandom(3 << 20),
    })
    yield srv
    srv.shutdown()


def _closed_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _cache_listing(cache_dir):
    return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


# ---------------------------------------------------------------------------
# EasyDict
# ---------------------------------------------------------------------------

def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1, b=dict(c=2))
    assert d.a == 1 and d['a'] == 1
    d.x = 5
    assert d['x'] == 5
    d['y'] = 6
    assert d.y == 6
    del d.x
    assert 'x' not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    with pytest.raises(AttributeError):
        del d.missing
    assert not hasattr(d, 'missing')
    assert getattr(d, 'missing', 'dflt') == 'dflt'
    assert isinstance(d, dict)
    assert d == {'a': 1, 'b': {'c': 2}, 'y': 6}
    assert dnnlib.EasyDict is dnnlib.util.EasyDict
    assert 'a' in dir(d)


def test_easydict_pickle_and_deepcopy_round_trip():
    d = dnnlib.EasyDict(a=1, nested=dnnlib.EasyDict(lst=[1, 2, 3]), name='G')
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(d, protocol=protocol)
        assert b'dnnlib.util' in data and b'EasyDict' in data  # module path pickles rely on
        e = pickle.loads(data)
        assert type(e) is dnnlib.util.EasyDict
        assert e == d and e.nested.lst == [1, 2, 3]
        assert type(e.nested) is dnnlib.util.EasyDict
    c = copy.deepcopy(d)
    assert c == d and c is not d and c.nested is not d.nested
    c.nested.lst.append(4)
    assert d.nested.lst == [1, 2, 3]
    s = copy.copy(d)
    assert type(s) is dnnlib.EasyDict and s.nested is d.nested


# ---------------------------------------------------------------------------
# Logger
# ---------------------------------------------------------------------------

def test_logger_tees_and_restores(tmp_path):
    out_before, err_before = sys.stdout, sys.stderr
    log_file = tmp_path / 'log.txt'
    with dnnlib.util.Logger(file_name=str(log_file), file_mode='w') as logger:
        assert sys.stdout is logger
        print('hello stdout', flush=True)
        print('hello stderr', file=sys.stderr, flush=True)
        assert sys.stdout.write('') == 0  # empty writes are ignored
        sys.stdout.flush()
        assert isinstance(sys.stdout.isatty(), bool)
    assert sys.stdout is out_before and sys.stderr is err_before
    text = log_file.read_text()
    assert 'hello stdout\n' in text and 'hello stderr\n' in text
    # appending mode and explicit close()
    logger = dnnlib.Logger(str(log_file), 'a', should_flush=False)
    print('more')
    logger.close()
    logger.close()  # idempotent
    assert sys.stdout is out_before and sys.stderr is err_before
    assert log_file.read_text().endswith('more\n')
    assert text in log_file.read_text()


def test_logger_nested(tmp_path, capsys):
    out_before = sys.stdout
    outer = dnnlib.Logger(str(tmp_path / 'outer.txt'))
    print('one')
    inner = dnnlib.Logger(str(tmp_path / 'inner.txt'))
    print('two', flush=True)
    inner.close()
    assert sys.stdout is outer
    print('three')
    outer.close()
    assert sys.stdout is out_before
    assert (tmp_path / 'outer.txt').read_text() == 'one\ntwo\nthree\n'
    assert (tmp_path / 'inner.txt').read_text() == 'two\n'
    assert capsys.readouterr().out == 'one\ntwo\nthree\n'


def test_logger_closed_out_of_order(tmp_path):
    out_before, err_before = sys.stdout, sys.stderr
    first = dnnlib.Logger(str(tmp_path / 'a.txt'))
    second = dnnlib.Logger(str(tmp_path / 'b.txt'))
    first.close()            # not the active one: must not clobber second's streams
    assert sys.stdout is second
    print('after first closed', flush=True)  # forwards through the closed first logger
    second.close()
    assert sys.stdout is first  # what second saw
    sys.stdout, sys.stderr = out_before, err_before
    assert 'after first closed' in (tmp_path / 'b.txt').read_text()
    assert 'after first closed' not in (tmp_path / 'a.txt').read_text()


def test_logger_without_file():
    out_before = sys.stdout
    with dnnlib.Logger() as logger:
        print('no file')
        assert logger.file is None
    assert sys.stdout is out_before


# ---------------------------------------------------------------------------
# format_time
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('seconds, expected', [
    (0, '0s'),
    (12, '12s'),
    (12.4, '12s'),
    (59, '59s'),
    (60, '1m 00s'),
    (184, '3m 04s'),
    (3599, '59m 59s'),
    (3600, '1h 00m 00s'),
    (2 * 3600 + 5 * 60, '2h 05m 00s'),
    (86399, '23h 59m 59s'),
    (86400, '1d 00h 00m'),
    (86400 + 2 * 3600 + 3 * 60 + 4, '1d 02h 03m'),
    (30 * 86400, '30d 00h 00m'),
])
def test_format_time(seconds, expected):
    assert dnnlib.util.format_time(seconds) == expected


def test_format_time_brief():
    assert util.format_time_brief(12) == '12s'
    assert util.format_time_brief(184) == '3m 04s'
    assert util.format_time_brief(2 * 3600 + 5 * 60 + 7) == '2h 05m'
    assert util.format_time_brief(86400 + 2 * 3600 + 3 * 60) == '1d 02h'


# ---------------------------------------------------------------------------
# name lookup
# ---------------------------------------------------------------------------

def test_construct_and_call_by_name():
    od = dnnlib.util.construct_class_by_name([('a', 1)], class_name='collections.OrderedDict')
    assert type(od) is collections.OrderedDict and od['a'] == 1
    assert dnnlib.util.call_func_by_name(16.0, func_name='math.sqrt') == 4.0
    assert dnnlib.construct_class_by_name(class_name='dnnlib.EasyDict', a=1).a == 1
    assert util.get_obj_by_name('os.path.join') is os.path.join
    assert util.get_obj_by_name('dnnlib.util.EasyDict') is dnnlib.EasyDict
    assert util.get_obj_by_name('urllib.request.urlopen') is urllib.request.urlopen
    module, rest = util.get_module_from_obj_name('collections.OrderedDict.fromkeys')
    assert module is collections and rest == 'OrderedDict.fromkeys'
    assert util.get_obj_by_name('len') is len  # builtins fallback


@pytest.mark.parametrize('name', ['no_such_pkg_xyz.Thing', 'math.no_such_function', 'collections.nope.deeper', ''])
def test_unknown_name_raises(name):
    with pytest.raises(ImportError) as info:
        util.get_obj_by_name(name)
    assert repr(name) in str(info.value) or f'"{name}"' in str(info.value)
    with pytest.raises(ImportError):
        util.construct_class_by_name(class_name=name)


def test_call_func_by_name_requires_name():
    with pytest.raises(ValueError):
        util.call_func_by_name(1)
    with pytest.raises(ValueError, match='math.pi'):
        util.call_func_by_name(func_name='math.pi')


def test_broken_module_import_is_not_masked(tmp_path, monkeypatch):
    pkg = tmp_path / 'brokenpkg_qc'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'mod.py').write_text('import definitely_missing_dependency_qc\nX = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match='definitely_missing_dependency_qc'):
        util.get_obj_by_name('brokenpkg_qc.mod.X')
    for key in [k for k in sys.modules if k.startswith('brokenpkg_qc')]:
        monkeypatch.delitem(sys.modules, key)


def test_get_top_level_function_name():
    assert util.get_top_level_function_name(math.sqrt) == 'math.sqrt'
    assert util.get_top_level_function_name(util.open_url) == 'dnnlib.util.open_url'
    name = util.get_top_level_function_name(collections.OrderedDict)
    assert util.get_obj_by_name(name) is collections.OrderedDict
    with pytest.raises(ValueError):
        util.get_top_level_function_name(lambda: 0)


# ---------------------------------------------------------------------------
# cache dir, is_url, file helpers
# ---------------------------------------------------------------------------

def test_make_cache_dir_path(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'c'))
    assert dnnlib.make_cache_dir_path('downloads', 'x.pkl') == os.path.join(str(tmp_path / 'c'), 'downloads', 'x.pkl')
    assert not (tmp_path / 'c').exists()  # path only, nothing created
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert util.make_cache_dir_path('gan-metrics') == os.path.join(str(tmp_path / 'home'), '.cache', 'dnnlib', 'gan-metrics')
    monkeypatch.delenv('HOME')
    monkeypatch.delenv('USERPROFILE', raising=False)
    fallback = util.make_cache_dir_path('z')
    assert fallback.startswith(os.path.realpath(util.tempfile.gettempdir())) or fallback.startswith(util.tempfile.gettempdir())
    assert fallback.endswith(os.path.join('dnnlib', 'z'))
    util.set_cache_dir(str(tmp_path / 'override'))
    try:
        monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'c'))
        assert util.make_cache_dir_path('a') == os.path.join(str(tmp_path / 'override'), 'a')
    finally:
        util.set_cache_dir(None)
    assert util.make_cache_dir_path('a') == os.path.join(str(tmp_path / 'c'), 'a')


def test_is_url():
    assert util.is_url('https://example.com/a.pkl')
    assert util.is_url('http://127.0.0.1:8000/x')
    assert not util.is_url('/tmp/a.pkl')
    assert not util.is_url('C:\\data\\a.pkl')
    assert not util.is_url('relative/path.pkl')
    assert not util.is_url(None) and not util.is_url(pathlib.Path('/a'))
    assert not util.is_url('file:///tmp/a.pkl')
    assert util.is_url('file:///tmp/a.pkl', allow_file_urls=True)
    assert not util.is_url('http://')


def test_list_and_copy_files(tmp_path):
    src = tmp_path / 'src'
    (src / 'pkg' / '__pycache__').mkdir(parents=True)
    (src / 'a.py').write_text('a')
    (src / 'pkg' / 'b.py').write_text('b')
    (src / 'pkg' / 'c.pyc').write_text('c')
    (src / 'pkg' / '__pycache__' / 'd.py').write_text('d')
    listing = util.list_dir_recursively_with_ignore(str(src), ignores=['__pycache__', '*.pyc'])
    assert [rel for _, rel in listing] == ['a.py', os.path.join('pkg', 'b.py')]
    listing2 = util.list_dir_recursively_with_ignore(str(src), ignores=['*.pyc', '__pycache__'], add_base_to_relative=True)
    assert listing2[0][1] == os.path.join('src', 'a.py')
    dst = tmp_path / 'dst'
    util.copy_files_and_create_dirs([(abs_path, str(dst / rel)) for abs_path, rel in listing])
    assert (dst / 'pkg' / 'b.py').read_text() == 'b'
    assert (dst / 'a.py').read_text() == 'a'


# ---------------------------------------------------------------------------
# open_url: local paths and file:// URLs
# ---------------------------------------------------------------------------

def test_open_url_local_path(tmp_path):
    f = tmp_path / 'net.pkl'
    f.write_bytes(b'local')
    with dnnlib.util.open_url(str(f)) as fh:
        assert fh.read() == b'local'
    with util.open_url(f) as fh:  # pathlib.Path
        assert fh.read() == b'local'
    assert util.open_url(str(f), return_filename=True) == str(f)


def test_open_url_file_urls(tmp_path):
    d = tmp_path / 'dir with spaces'
    d.mkdir()
    f = d / 'my net #1.pkl'
    f.write_bytes(b'spaced')
    encoded = pathlib.Path(f).as_uri()  # percent-encoded
    assert '%20' in encoded
    with util.open_url(encoded) as fh:
        assert fh.read() == b'spaced'
    assert util.open_url(encoded, return_filename=True) == str(f)
    plain = tmp_path / 'plain.bin'
    plain.write_bytes(b'p')
    with util.open_url('file://' + str(plain)) as fh:
        assert fh.read() == b'p'
    with util.open_url('file://localhost' + str(plain)) as fh:
        assert fh.read() == b'p'


def test_open_url_missing_file(tmp_path):
    missing = tmp_path / 'nope' / 'missing.pkl'
    with pytest.raises(FileNotFoundError) as info:
        util.open_url(str(missing))
    assert str(missing) in str(info.value)
    url = missing.as_uri()
    with pytest.raises(FileNotFoundError) as info:
        util.open_url(url)
    assert str(missing) in str(info.value) and url in str(info.value)
    with pytest.raises(FileNotFoundError):
        util.open_url(str(tmp_path))  # a directory is not a file


def test_open_url_unsupported_scheme():
    with pytest.raises(ValueError, match='ftp'):
        util.open_url('ftp://example.com/a.pkl')


# ---------------------------------------------------------------------------
# open_url: http(s) with cache
# ---------------------------------------------------------------------------

def test_http_download_then_cache_hit(server, tmp_path):
    url = server.url('/nets/model.pkl')
    cache_dir = util.make_cache_dir_path('downloads')
    assert cache_dir.startswith(str(tmp_path))
    with util.open_url(url, verbose=False) as fh:
        assert fh.read() == server.files['/nets/model.pkl']
    assert server.requests == ['/nets/model.pkl']
    expected = os.path.join(cache_dir, hashlib.md5(url.encode()).hexdigest() + '_model.pkl')
    assert util.url_cache_path(url) == expected
    assert _cache_listing(cache_dir) == [os.path.basename(expected)]

    with util.open_url(url) as fh:
        assert fh.read() == server.files['/nets/model.pkl']
    assert util.open_url(url, return_filename=True) == expected
    assert len(server.requests) == 1  # cache hits do not touch the network

    server.shutdown()
    with util.open_url(url, num_attempts=1) as fh:
        assert fh.read() == server.files['/nets/model.pkl']


def test_http_return_filename_and_custom_cache_dir(server, tmp_path):
    url = server.url('/weird/na%20me%3F.bin')
    custom = tmp_path / 'custom-cache'
    path = util.open_url(url, cache_dir=str(custom), return_filename=True, verbose=False)
    assert os.path.dirname(path) == str(custom)
    name = os.path.basename(path)
    assert name.startswith(hashlib.md5(url.encode()).hexdigest() + '_')
    assert ' ' not in name and '?' not in name and '%' not in name
    assert pathlib.Path(path).read_bytes() == b'abc'
    assert not os.path.exists(util.make_cache_dir_path('downloads'))  # default cache untouched


def test_http_verbose_progress(server, capsys):
    url = server.url('/big.bin')
    with util.open_url(url, verbose=True) as fh:
        assert fh.read() == server.files['/big.bin']
    captured = capsys.readouterr()
    assert 'big.bin' in captured.err + captured.out


def test_http_no_cache(server):
    url = server.url('/nets/model.pkl')
    fh = util.open_url(url, cache=False, verbose=False)
    assert isinstance(fh, io.BytesIO) and fh.read() == server.files['/nets/model.pkl']
    assert not os.path.exists(util.make_cache_dir_path('downloads'))
    with pytest.raises(ValueError):
        util.open_url(url, cache=False, return_filename=True)


def test_http_retries_transient_errors(server):
    url = server.url('/nets/model.pkl')
    server.fail_next['/nets/model.pkl'] = 2
    with util.open_url(url, num_attempts=3, verbose=False) as fh:
        assert fh.read() == server.files['/nets/model.pkl']
    assert server.requests == ['/nets/model.pkl'] * 3
    cache_dir = util.make_cache_dir_path('downloads')
    assert len(_cache_listing(cache_dir)) == 1


def test_http_truncated_body_is_retried_and_never_cached(server):
    url = server.url('/big.bin')
    server.truncate_next['/big.bin'] = 1
    cache_dir = util.make_cache_dir_path('downloads')
    with pytest.raises(util.DownloadError):
        util.open_url(url, num_attempts=1, verbose=False)
    assert _cache_listing(cache_dir) == []  # no partial file, no temp file
    server.truncate_next['/big.bin'] = 1
    with util.open_url(url, num_attempts=2, verbose=False) as fh:
        assert fh.read() == server.files['/big.bin']
    assert len(_cache_listing(cache_dir)) == 1


def _assert_one_line_error(err, url, cache_path):
    msg = str(err)
    assert '\n' not in msg
    assert url in msg
    assert cache_path in msg
    assert 'download' in msg.lower()
    assert 'local' in msg.lower()
    assert err.url == url and err.cache_path == cache_path


def test_http_404_raises_one_line_error(server):
    url = server.url('/missing/file.pkl')
    cache_dir = util.make_cache_dir_path('downloads')
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, num_attempts=5, verbose=False)
    err = info.value
    assert isinstance(err, OSError)
    _assert_one_line_error(err, url, util.url_cache_path(url))
    assert '404' in str(err)
    assert server.requests == ['/missing/file.pkl']  # a 404 is not retried
    assert _cache_listing(cache_dir) == []
    # pickled errors survive (e.g. across DataLoader / spawn boundaries)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.cache_path == err.cache_path


def test_http_connection_refused_raises_one_line_error():
    url = f'http://127.0.0.1:{_closed_port()}/nets/model.pkl'
    cache_dir = util.make_cache_dir_path('downloads')
    with pytest.raises(OSError) as info:
        util.open_url(url, num_attempts=2, verbose=False)
    assert isinstance(info.value, util.DownloadError)
    _assert_one_line_error(info.value, url, util.url_cache_path(url))
    assert 'refused' in str(info.value).lower()
    assert _cache_listing(cache_dir) == []


def test_http_manual_placement_is_found(tmp_path):
    url = f'http://127.0.0.1:{_closed_port()}/x/manual.pkl'
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, num_attempts=1, verbose=False)
    target = info.value.cache_path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    pathlib.Path(target).write_bytes(b'by hand')
    with util.open_url(url, num_attempts=1) as fh:
        assert fh.read() == b'by hand'


def test_offline_mode(server, monkeypatch):
    url = server.url('/nets/model.pkl')
    util.open_url(url, verbose=False).close()
    assert len(server.requests) == 1
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    with util.open_url(url) as fh:
        assert fh.read() == server.files['/nets/model.pkl']
    other = server.url('/big.bin')
    with pytest.raises(util.DownloadError) as info:
        util.open_url(other, verbose=False)
    _assert_one_line_error(info.value, other, util.url_cache_path(other))
    assert 'DNNLIB_OFFLINE' in str(info.value)
    with pytest.raises(util.DownloadError):
        util.open_url(other, cache=False)
    assert len(server.requests) == 1  # offline mode never hit the server
    monkeypatch.setenv('DNNLIB_OFFLINE', '0')
    util.open_url(other, verbose=False).close()
    assert len(server.requests) == 2


def test_google_drive_confirm_parsing():
    page = ('<html><title>Google Drive - Virus scan warning</title><form id="download-form" '
            'action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="submit" value="Download anyway"/>'
            '<input type="hidden" name="id" value="abc123">'
            '<input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="u-1"></form></html>')
    target = util._google_drive_confirm_url(page, 'https://drive.google.com/uc?id=abc123')
    assert target == 'https://drive.usercontent.google.com/download?id=abc123&export=download&confirm=t&uuid=u-1'
    legacy = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=XyZ&amp;id=abc">Download</a>'
    assert (util._google_drive_confirm_url(legacy, 'https://drive.google.com/uc?id=abc')
            == 'https://drive.google.com/uc?export=download&confirm=XyZ&id=abc')
    assert util._google_drive_confirm_url('<html>nothing</html>', 'https://drive.google.com/') is None


def test_import_is_light():
    code = 'import sys, dnnlib, dnnlib.util; assert "torch" not in sys.modules and "numpy" not in sys.modules'
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, '-c', code], check=True, cwd=repo_root)
