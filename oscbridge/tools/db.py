"""`oscbridge db url`: the URL of the database in use, embedded or not, with the password hidden unless asked."""

from __future__ import annotations

import argparse
import sys

from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.redact import redact_url
from oscbridge.store.embedded import running_url, socket_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_command", required=True)
    url = actions.add_parser("url", help="print the URL of the database in use")
    add_settings_flags(url)
    url.add_argument("--show-password", action="store_true", help="print the password instead of ***")


def run(ns: argparse.Namespace) -> int:
    settings = settings_from(ns)
    if settings.database_url:
        shown = settings.database_url if ns.show_password else redact_url(settings.database_url)
        print(shown)
        if shown != settings.database_url:
            print("oscbridge: the password is hidden; add --show-password to print it", file=sys.stderr)
        return 0
    url = running_url(settings.embedded_pgdata)
    if url is None:
        print(socket_url(settings.embedded_pgdata))
        print("oscbridge: the embedded PostgreSQL is not running now (start `oscbridge serve`)", file=sys.stderr)
        return 1
    print(url)
    return 0
