"""Commands about sign-in: hash-password.

    python -m lab hash-password alice                      # asks twice, prints alice:scrypt$16384$8$1$...
    printf '%s\\n' "$PASSWORD" | python -m lab hash-password alice >> users.txt

The printed line goes into the file LAB_USERS_FILE names (or into LAB_AUTH); the scheme is
described in lab/core/signin.py and the README's "Teams and sign-in".
"""

from __future__ import annotations

import argparse
import getpass
import sys

from lab.core.signin import hash_password
from lab.core.users import check_name


def read_password(stdin=None) -> str:
    """The password from a pipe (its first line), or typed twice at a terminal without echo."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("The two passwords differ; nothing was printed.")
    if not password:
        raise ValueError("The password is empty; type one or pipe it on the first line of stdin.")
    return password


def _cmd_hash_password(engine, args: argparse.Namespace) -> None:
    print(f"{check_name(args.user, 'User name')}:{hash_password(read_password())}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser("hash-password", help="print a 'user:scrypt$...' line for LAB_USERS_FILE")
    cmd.add_argument("user", help="the user name the line signs in")
    cmd.set_defaults(fn=_cmd_hash_password, needs_engine=False)
