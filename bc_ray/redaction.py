"""Credentials never belong in a URI: refuse them where a URI comes in, hide them where text
goes out.

A URI such as ``s3://AKIA...:SECRET@bucket/prefix`` would be copied into error messages, SDK
tracebacks, `config show`, logs and the entry points of scheduled Ray jobs (which anyone who can
read the Jobs API sees). bc_ray takes credentials only from the SDKs' own chains (AWS_*
variables, profiles, web identity, instance roles), so user info in a URI is refused, and any
text bc_ray prints passes through `redact` first.
"""

from __future__ import annotations

import logging
import re

from bc_ray.exceptions import ConfigError

HIDDEN = "***"

# scheme://USER:PASSWORD@ (the password may hold '/', '+', even '@': up to the token's last '@')
# or scheme://USER@ (no '/' or ':' before the '@'). A '@' further down a path is left alone.
_USER_INFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<info>[^\s/@:'\"<>]*:[^\s'\"<>]*@|[^\s/@:'\"<>]+@)")


def redact(text: str) -> str:
    """`text` with the user info of every URI in it replaced by ***."""
    return _USER_INFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)


def has_user_info(uri: str) -> bool:
    """Whether `uri` (or any URI in a line of arguments) carries user info."""
    if "://" not in uri:
        return False
    authority = re.split(r"[/\s]", uri.split("://", 1)[1], maxsplit=1)[0]
    return "@" in authority or redact(uri) != uri


def refuse_user_info(uri: str, what: str = "URI") -> None:
    """ConfigError when `uri` carries user info (``user:secret@`` or ``user@``); the message
    shows the URI with that part hidden, never the secret."""
    if has_user_info(uri):
        raise ConfigError(
            f"{what} {redact(uri)!r} carries credentials (user info before '@'); remove them "
            "from the URI and give them the way the AWS SDKs find them (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity or an instance role)")


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message and any traceback of every record, redacted
    (records of every library pass through the handler, botocore's included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
