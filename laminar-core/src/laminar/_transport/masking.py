"""One secret-masking policy for every backend: no credential is ever shown.

Every backend (core's object stores, laminar-s3, -gcs, -azure, -fsspec, a third party's) masks what
it shows with :func:`redact` (messages, log lines, reprs, URLs) and cuts an error's chain of causes
with :func:`scrub` where a cause would show one; :func:`masked` does both to an error of its own.

What is masked, as ``***``:

- the password of ``scheme://user:password@host`` (a password may hold ``@``);
- ``AccountKey=``, ``SharedAccessSignature=``, ``Password=``... fields of connection strings;
- URL query values whose name says they are secret (``sig``, ``X-Amz-Signature``, ``token``,
  ``password``, ``client_secret``, ``key``...);
- ``secret='...'``-style assignments in reprs and messages;
- the values of :data:`SECRET_VARIABLES` in the environment;
- literal secrets a backend knows (its keys, tokens, passwords), and their URL-quoted forms:
  wherever they appear when they are at least :data:`SHORTEST_ANYWHERE` characters long; shorter
  ones only where they stand alone (not inside a longer word), so that a short password does not
  mangle ordinary words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import quote

from laminar.errors import add_note

MASK = "***"
#: Literal secrets this long are masked wherever they appear; shorter ones where they stand alone.
SHORTEST_ANYWHERE = 8
#: Environment variables whose values are secrets wherever they appear.
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)

#: ``scheme://user:password@host``: the password, up to the last ``@`` before the path.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@'\"?#]*):([^/\s'\"?#]*)@")
#: ``AccountKey=...`` and the like in connection strings (not in a URL's query, which
#: :data:`_QUERY` masks value by value); up to the next ``;`` or quote or space.
_FIELDS = re.compile(
    r"(?i)(?<![?&])\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd|ClientSecret)=([^;\s'\"]+)"
)
#: Names of URL query parameters that are credentials (SAS signatures, pre-signed URLs, tokens, and
#: the storage options of fsspec's filesystems: ``password``, ``client_secret``, ``key``...).
SECRET_NAME = re.compile(
    r"(?i)^(?:sig|code|pkey|[\w.\-]*(?:pass|secret|token|credential|signature|connection_string)[\w.\-]*"
    r"|(?:[\w.\-]*_)?key)$"
)
_QUERY = re.compile(r"([?&;])([\w.\-]+)=([^&\s'\"#;]*)")
#: ``secret='...'`` / ``"password": "..."`` / ``AWS_SECRET_ACCESS_KEY=...`` in reprs and messages.
_ASSIGNED = re.compile(
    r"(?i)(\b(?:aws_secret_access_key|aws_session_token|secret_access_key|session_token|secret|"
    r"password|passwd|account_key|sas_token|client_secret|private_key|azure_storage_key|"
    r"azure_storage_sas_token)['\"]?\s*[:=]\s*['\"]?)([^'\"\s,;&)}]+)"
)


def is_secret_name(name: str) -> bool:
    """Whether an option or query parameter called ``name`` holds a secret (``password``, ``sig``...)."""
    return bool(SECRET_NAME.match(name))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential in it masked as ``***`` (see the module's docstring for what)."""
    literal = {value for value in secrets if value}
    literal.update(value for name in SECRET_VARIABLES if (value := os.environ.get(name)))
    forms = {form for value in literal for form in (value, quote(value, safe=""))}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= SHORTEST_ANYWHERE:
            text = text.replace(form, MASK)
        else:
            text = re.sub(rf"(?<![\w%]){re.escape(form)}(?![\w%])", MASK, text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    text = _FIELDS.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _QUERY.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if m[3] and is_secret_name(m[2]) else m[0], text)
    return _ASSIGNED.sub(lambda m: f"{m.group(1)}{MASK}", text)


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it (``__cause__``, else ``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe_error(error: BaseException, secrets: Iterable[str | None] = (), limit: int = 500) -> str:
    """``Type: message`` of ``error`` (and of its root cause), credentials masked, at most ``limit`` characters."""
    text = f"{type(error).__name__}: {str(error) or 'no answer in time' if isinstance(error, TimeoutError) else error}"
    root = causes(error)[-1]
    if root is not error and str(root) and str(root) not in text:
        text += f" (from {type(root).__name__}: {root})"  # a wrapper's message may hide the status
    text = " ".join(redact(text, secrets).split())  # one line: SDK messages run over several
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(error: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """Cut ``error``'s chain of causes above the first one whose message shows a credential.

    A traceback prints every cause; an SDK's error may quote an endpoint with its password. The
    masked text of the cut cause is kept as a note on the error above it. Returns ``error``.
    """
    secrets = tuple(secrets)
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 50:
        seen.append(current)
        below = current.__cause__ if current.__cause__ is not None else current.__context__
        if current.__cause__ is None and current.__suppress_context__:
            below = None
        if below is None:
            break
        text = f"{type(below).__name__}: {below}"
        leaked = [text, *(str(note) for note in getattr(below, "__notes__", ()))]
        if any(redact(item, secrets) != item for item in leaked):
            current.__cause__ = None
            current.__suppress_context__ = True
            add_note(
                current,
                f"caused by {describe_error(below, secrets)} (its traceback is not shown: it names a credential)",
            )
            break
        current = below
    return error


def masked(error: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """``error`` (a backend's own, raised on purpose) with credentials masked in its message and its
    causes cut where they show any. Returns ``error``."""
    secrets = tuple(secrets)
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    return scrub(error, secrets)
