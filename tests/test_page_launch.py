"""The two pages (tools/app.py, tools/label_pairs.py) share one launcher: the same --host/--port/--auth arguments and
defaults, loopback by default, one warning line when served beyond loopback without a login, never a share link."""
import importlib.util
import io
import os

import pytest
from option_files import ROOT

from drward.utils.page_launch import exposure_warning, is_loopback, launch, parse_auth


class RecordingPage:
    """Stands in for a Gradio Blocks: records the launch arguments instead of serving."""

    def launch(self, **kwargs):
        self.kwargs = kwargs
        return 'launched'


def tool(name):
    spec = importlib.util.spec_from_file_location(f'{name}_tool', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_pages_take_the_same_host_port_and_auth_with_the_same_defaults():
    app = tool('app').parse_args(['--tiny'])
    labels = tool('label_pairs').parse_args(['--demo', 'x'])
    for args in (app, labels):
        assert (args.host, args.port, args.auth) == ('127.0.0.1', 7860, None)
    app = tool('app').parse_args(['--tiny', '--host', '0.0.0.0', '--port', '7751', '--auth', 'ana:pw'])
    labels = tool('label_pairs').parse_args(['--demo', 'x', '--host', '0.0.0.0', '--port', '7751', '--auth', 'ana:pw'])
    assert (app.host, app.port, app.auth) == (labels.host, labels.port, labels.auth) == ('0.0.0.0', 7751, 'ana:pw')


@pytest.mark.parametrize('host, auth, warned', [('127.0.0.1', None, False), ('localhost', None, False),
                                                ('::1', None, False), ('0.0.0.0', None, True),
                                                ('192.168.1.5', None, True), ('0.0.0.0', ('ana', 'pw'), False)])
def test_the_launcher_warns_once_beyond_loopback_without_a_login_and_never_shares(host, auth, warned):
    page, stream = RecordingPage(), io.StringIO()
    assert launch(page, host, 7752, auth, stream=stream, quiet=True) == 'launched'
    assert page.kwargs == {'server_name': host, 'server_port': 7752, 'auth': auth, 'share': False, 'quiet': True,
                           'max_file_size': 20 * 2 ** 20}
    lines = stream.getvalue().splitlines()
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert host in lines[0] and '--auth' in lines[0]
    assert (exposure_warning(host, auth) is None) == (not warned)


def test_every_page_gets_a_server_side_upload_limit_that_gradio_accepts():
    from gradio.utils import _parse_file_size
    page = RecordingPage()
    launch(page, stream=io.StringIO())
    assert page.kwargs['max_file_size'] == 20 * 2 ** 20  # the labelling page's: it takes no uploads at all
    launch(page, stream=io.StringIO(), max_file_size=2621440)
    assert page.kwargs['max_file_size'] == 2621440  # the restoration page's own (--max-file-mb 2.5)
    assert _parse_file_size(page.kwargs['max_file_size']) == 2621440  # bytes: '2.5mb' would be refused by Gradio


def test_auth_is_user_colon_password_and_anything_else_is_one_line_error():
    assert parse_auth('ana:se:cret') == ('ana', 'se:cret') and parse_auth(None) is None and parse_auth('') is None
    for bad in ('ana', ':pw', 'ana:'):
        with pytest.raises(ValueError, match=r"^--auth must be USER:PASS, got "):
            parse_auth(bad)
    assert is_loopback('127.0.0.2') and not is_loopback('example.org')


def test_the_restoration_page_stops_on_a_bad_auth_before_building_anything(capsys):
    assert tool('app').main(['--tiny', '--auth', 'no-colon']) == 1
    assert capsys.readouterr().err.strip() == "--auth must be USER:PASS, got 'no-colon'"
