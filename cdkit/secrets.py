"""Keep tokens out of everything cdkit prints or sends.

A secret leaks in more shapes than its raw value: actions/checkout persists the job's
token as `AUTHORIZATION: basic <base64 of x-access-token:TOKEN>` in the git config, a
URL carries it percent-encoded, a tool logs `https://user:TOKEN@host`. So each known
secret is matched in every encoding cdkit can know of (raw, URL-encoded, base64 and
base64url at each of the three alignments a prefix such as `x-access-token:` can give
it), and a base64 match is widened to its whole base64 run, so no part of the
credential stays.

Stage output flows through here by the megabyte: the matcher for one set of secrets is
compiled once (one regex for every secret and every token shape) and reused.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from urllib.parse import quote

# Which variables are credentials, and a stage's environment without them: in cdkit.credentials, which every
# stage start imports without this module's regexes.
from cdkit.credentials import (  # noqa: F401 - part of this module's interface
    CREDENTIAL_ENV_VARS,
    RUNNER_CREDENTIAL_VARS,
    SECRET_ENV_VARS,
    without_credentials,
)

# Not `typing` at run time: the pre-push hook imports this module for a stage that prints, and typing
# costs it milliseconds; AnyStr appears only in annotations (mypy treats any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import AnyStr

REDACTED = "***"
REDACTED_BYTES = REDACTED.encode()
MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
MIN_ENCODED_SECRET_LEN = 8  # the base64 core of a shorter value is too short to be told from noise

# Token shapes redacted even when cdkit does not know the value: each with a literal that any match
# contains, where a cheap `in` test is faster than the regex's own search (None where it is not), and,
# in the group `keep`, the context that stays (`Authorization: `, `://`): only the credential goes.
TOKEN_SHAPES: tuple[tuple[str | None, str], ...] = (
    (None, r"g(?:h[pousr]_[A-Za-z0-9]{16,}|ithub_pat_[A-Za-z0-9_]{16,})"),
    ("uthorization:", r"(?P<keep>uthorization:[ \t]*)(?i:token|bearer|basic)[ \t]+[^\s\"']+"),
    ("UTHORIZATION:", r"(?P<keep>UTHORIZATION:[ \t]*)(?i:token|bearer|basic)[ \t]+[^\s\"']+"),
    (None, r"(?P<keep>://)[^/\s:@]+:[^/\s@]+(?=@)"),
)

_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
# Both what indexing a str gives (a character) and what indexing bytes gives (an int).
_BASE64_CHARS: frozenset[str | int] = frozenset(_BASE64_ALPHABET) | frozenset(_BASE64_ALPHABET.encode())
_BASE64_RUN_END = re.compile(r"[A-Za-z0-9+/_-]*=*")
_BASE64_RUN_END_BYTES = re.compile(rb"[A-Za-z0-9+/_-]*=*")

# Secrets that arrived some other way than the environment (`--token`): redacted everywhere too.
_REGISTERED: set[str] = set()


def register(value: str | None) -> str | None:
    """Remember `value` as a secret for every later `redact` in this process; returns it."""
    if value:
        _REGISTERED.add(value)
    return value


def secret_values(environ: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    values = [environ.get(name, "") for name in SECRET_ENV_VARS] + list(extra) + list(_REGISTERED)
    # Longest first so a token that contains another is replaced whole.
    return sorted({v for v in values if v and len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)


def base64_cores(secret: str) -> set[str]:
    """The part of base64(X + secret + Y) that depends only on `secret`, for each length of X mod 3.

    Base64 turns 3 bytes into 4 characters, so the characters that mix a byte of X or Y
    with a byte of the secret are dropped; what is left appears in the encoding of any
    `user:secret` Basic credential (and in base64url, with `-_` for `+/`).
    """
    raw = secret.encode()
    cores: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        start = (shift * 4 + 2) // 3  # characters touched by the `shift` filler bytes
        whole = (shift + len(raw)) // 3 * 4  # characters of complete 3-byte groups
        # A trailing partial group mixes the secret with whatever follows it.
        core = encoded[start:whole]
        if len(core) >= MIN_ENCODED_SECRET_LEN:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


def url_encodings(secret: str) -> set[str]:
    """`secret` percent-encoded as a URL's user, password, path or query would carry it (hex in either case)."""
    forms = {quote(secret, safe=""), quote(secret)} - {secret}
    return forms | {re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in forms}


class Redactor:
    """The matcher for one set of secret values, built once and reused for every chunk of output.

    Each form is found with the fastest test that finds it (`in`, then a replace; a regex
    with a literal prefix for token shapes): one alternation of everything would run at a
    few MB/s, since an alternation defeats the regex engine's literal search. Stage output
    is redacted as the bytes it arrived as (`redact_bytes`): decoding and re-encoding
    megabytes only to look for a few ASCII forms would cost more than the looking.
    """

    def __init__(self, values: tuple[str, ...]) -> None:
        self.base64 = sorted({core for v in values if len(v) >= MIN_ENCODED_SECRET_LEN for core in base64_cores(v)},
                             key=len, reverse=True)
        self.literals = sorted(set(values) | {form for v in values for form in url_encodings(v)},
                               key=len, reverse=True)
        # ASCII classes, as bytes patterns have: `\s` is the same six characters in both (a Unicode
        # separator such as \x1f or a no-break space does not end a credential in one and not the other).
        self.shapes = [(hint, re.compile(shape, re.ASCII)) for hint, shape in TOKEN_SHAPES]
        self._bytes_forms: tuple[list[bytes], list[bytes], list[tuple[bytes | None, re.Pattern[bytes]]]] | None = None

    def redact(self, text: str) -> str:
        """`text` with every known secret, in any of its encodings, and every token shape replaced by ***."""
        return _redact_forms(text, self.base64, self.literals, self.shapes, _BASE64_RUN_END, REDACTED)

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` for UTF-8 bytes, without decoding them: the same forms, encoded (once)."""
        if self._bytes_forms is None:
            self._bytes_forms = ([core.encode() for core in self.base64],
                                 [literal.encode() for literal in self.literals],
                                 [(None if hint is None else hint.encode(), re.compile(shape.encode()))
                                  for hint, shape in TOKEN_SHAPES])
        return _redact_forms(data, *self._bytes_forms, _BASE64_RUN_END_BYTES, REDACTED_BYTES)


def _redact_forms(text: AnyStr, base64_forms: list[AnyStr], literals: list[AnyStr],
                  shapes: list[tuple[AnyStr | None, re.Pattern[AnyStr]]], run_end: re.Pattern[AnyStr],
                  redacted: AnyStr) -> AnyStr:
    """`text` (str or bytes) with each form replaced by `redacted`, the forms and patterns of the same type."""
    def keep_context(match: re.Match[AnyStr]) -> AnyStr:
        return (match.groupdict().get("keep") or redacted[:0]) + redacted

    for core in base64_forms:  # first: a raw replacement could cut a base64 run in two
        if core in text:
            text = _redact_base64_runs(text, core, run_end, redacted)
    for literal in literals:
        if literal in text:
            text = text.replace(literal, redacted)
    for hint, shape in shapes:
        if hint is None or hint in text:
            text = shape.sub(keep_context, text)
    return text


def _redact_base64_runs(text: AnyStr, core: AnyStr, run_end: re.Pattern[AnyStr], redacted: AnyStr) -> AnyStr:
    """Every run of base64 characters that contains `core`, replaced whole (its padding included)."""
    pieces: list[AnyStr] = []
    end = 0  # where the text not yet copied starts
    found = text.find(core)
    while found >= 0:
        start = found
        while start > end and text[start - 1] in _BASE64_CHARS:
            start -= 1
        match = run_end.match(text, found + len(core))
        stop = match.end() if match else found + len(core)
        pieces += [text[end:start], redacted]
        end = stop
        found = text.find(core, end)
    pieces.append(text[end:])
    return text[:0].join(pieces)


@lru_cache(maxsize=16)
def _redactor_for(values: tuple[str, ...]) -> Redactor:
    return Redactor(values)


def redactor(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Redactor:
    """The matcher for the secrets known now (built once per set of secrets)."""
    return _redactor_for(tuple(secret_values(environ or {}, extra)))


def redact(text: str, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """`text` with every known token value (in any encoding) and anything shaped like a token replaced by ***."""
    return redactor(environ, extra).redact(text)
