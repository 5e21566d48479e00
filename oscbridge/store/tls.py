"""Saying plainly why a verified TLS connection to PostgreSQL was refused (docs/studio.md, "TLS").

With `sslmode=verify-full` the driver checks two things, and OpenSSL's answer for either is terse
("certificate verify failed: unable to get local issuer certificate", "Hostname mismatch"). What a person needs
to know is which one failed: the server's certificate is not signed by the CA in sslrootcert, or it is made for
other names than the host in the URL, and which names those are. The names come from a second, diagnostic
handshake that checks the chain but not the host name, so they are the names of a certificate the CA did sign.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from oscbridge.redact import redact_url

# OpenSSL's verify codes (x509_vfy.h) that mean "not signed by a CA you trust", and those of a name mismatch.
UNTRUSTED = {2: "unable to get issuer certificate", 7: "certificate signature failure",
             18: "self-signed certificate", 19: "self-signed certificate in certificate chain",
             20: "unable to get local issuer certificate", 21: "unable to verify the first certificate"}
NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
EXPIRED, NOT_YET_VALID = 10, 9
SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's "please speak TLS" packet
DIAGNOSE_TIMEOUT = 5.0


def _query(url: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}


def root_cert(url: str) -> str:
    """The CA file a verified connection to `url` trusts: sslrootcert, PGSSLROOTCERT or ~/.postgresql/root.crt."""
    return _query(url).get("sslrootcert") or os.environ.get("PGSSLROOTCERT") or "~/.postgresql/root.crt"


def host_port(url: str) -> tuple[str, int]:
    """The (first) TCP host and port of a libpq URL; the query's host/port win, as in libpq."""
    parts, query = urlsplit(url), _query(url)
    host = (query.get("host") or parts.hostname or "localhost").split(",")[0]
    port = query.get("port") or (str(parts.port) if parts.port else os.environ.get("PGPORT") or "5432")
    return host, int(port.split(",")[0])


def unreadable_root_cert(url: str) -> str | None:
    """Why the CA file that `url` names cannot be used, or None. The driver's own error for a missing file is
    "No such file or directory" without the file's name, which looks like a server that is not there."""
    query = _query(url)
    if query.get("sslmode") not in ("verify-ca", "verify-full"):
        return None
    path = Path(root_cert(url)).expanduser()
    try:
        path.read_bytes()
    except OSError as exc:
        return (f"cannot connect to {redact_url(url)}: the CA file in sslrootcert ({path}) cannot be read: "
                f"{exc.strerror}. Give sslrootcert the file of the CA that signed the server's certificate")
    return None


async def certificate_names(url: str, cafile: str, timeout: float = DIAGNOSE_TIMEOUT) -> list[str]:
    """The names (subjectAltName, else the common name) of the certificate the server at `url` presents, checked
    against `cafile` but not against the host name. Raises OSError or ssl.SSLError when there is none to read."""
    host, port = host_port(url)
    context = ssl.create_default_context(cafile=str(Path(cafile).expanduser()))
    context.check_hostname = False
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(SSL_REQUEST)
        if await asyncio.wait_for(reader.readexactly(1), timeout) != b"S":
            raise ssl.SSLError("the server does not offer TLS")
        await asyncio.wait_for(writer.start_tls(context, server_hostname=host), timeout)
        cert = writer.get_extra_info("peercert") or {}
    finally:
        writer.close()
    names = [value for _kind, value in cert.get("subjectAltName", ())]
    if not names:
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names


async def explain_certificate(exc: ssl.SSLCertVerificationError, url: str) -> str:
    """A sentence that says why the server's certificate was refused and what to do about it."""
    shown, cafile = redact_url(url), root_cert(url)
    host, _port = host_port(url)
    code, detail = exc.verify_code, exc.verify_message or str(exc)
    if code in UNTRUSTED:
        return (f"cannot connect to {shown}: the server's certificate is not signed by the CA in sslrootcert "
                f"({cafile}; OpenSSL: {detail}). Give sslrootcert the file of the CA that signed the server's "
                "certificate")
    if code in NAME_MISMATCH:
        try:
            names = await certificate_names(url, cafile)
        except (OSError, asyncio.IncompleteReadError):  # ssl.SSLError and TimeoutError are OSErrors
            names = []
        made_for = ", ".join(names) if names else "other names"
        return (f"cannot connect to {shown}: the server's certificate is for {made_for}, not {host}. Use a host "
                "name the certificate names in the URL, or give the server a certificate that names "
                f"{host}")
    if code == EXPIRED:
        return f"cannot connect to {shown}: the server's certificate has expired ({detail}); renew it"
    if code == NOT_YET_VALID:
        return (f"cannot connect to {shown}: the server's certificate is not valid yet ({detail}); check this "
                "machine's clock")
    return f"cannot connect to {shown}: the server's certificate failed verification ({detail})"
