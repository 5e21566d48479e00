"""`oscbridge ui`: opens the running bridge's web page in the default browser, with this installation's token.

The token (`<data_dir>/web-token`, 0600) goes into the URL's fragment (`#token=...`), which the browser keeps to
itself: the page reads it and sends it with the requests that change things. Only the user who can read the token
file can open a page that steers the bridge (docs/web.md). `--print` prints that URL instead (for another
browser, or over ssh); without it the token is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
import webbrowser
from typing import TextIO

from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.web.token import read_token, token_path
from oscbridge.web.urls import web_url

TIMEOUT = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the page's URL with the token instead of opening a browser")


def run(ns: argparse.Namespace) -> int:
    return open_page(settings_from(ns), print_only=ns.print_only)


def bridge_version(url: str) -> str | None:
    """The version of the bridge serving `url`, or None when nothing (or something else) answers there."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
    try:
        with direct.open(url + "api/session", timeout=TIMEOUT) as response:
            answer = json.loads(response.read(64 * 1024))
    except (OSError, urllib.error.URLError, ValueError):
        return None
    version = answer.get("version") if isinstance(answer, dict) else None
    return version if isinstance(version, str) else None


def open_page(settings: Settings, *, print_only: bool = False, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    url = web_url(settings)
    if url is None:
        err.write("oscbridge: the web page is off (http_port = 0); start the bridge with --http-port 8998\n")
        return 1
    if bridge_version(url) is None:
        err.write(f"oscbridge: no bridge serves a web page at {url}: start it with `oscbridge serve` (or check "
                  "--http-port and --host)\n")
        return 1
    token = read_token(settings.data_dir)
    if token is None:
        err.write(f"oscbridge: cannot read the web token {token_path(settings.data_dir)}: run this as the user "
                  "who runs the bridge, with the same --data-dir\n")
        return 1
    full = f"{url}#token={token}"
    if print_only:
        out.write(full + "\n")
        return 0
    if not webbrowser.open(full):
        err.write("oscbridge: no browser could be started here; run `oscbridge ui --print` and open that URL\n")
        return 1
    out.write(f"opened {url} in your browser\n")
    return 0
