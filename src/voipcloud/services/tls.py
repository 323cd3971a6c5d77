"""The controller's TLS: its own small CA, the server certificate, fingerprints, renewal.

Files, in DATA_DIR/tls (directory 0700, private keys 0600)::

    ca.pem        the controller's CA certificate (ECDSA P-256, 10 years)
    ca.key        its private key
    server.pem    the server certificate (ECDSA P-256, 1 year) followed by ca.pem: the whole
                  chain is presented, so an agent can pin the CA from the handshake alone
    server.key    its private key
    next-ca.pem, next-ca.key, retired-ca.pem   while the CA is being replaced (`ca_*` below)

The server certificate names the controller's host names and addresses (SANs), is renewed
30 days before it expires (and at once when the names it must carry changed), and is
replaced by `voipcloud tls rotate` from the same CA. The serving process watches server.pem
(`CertificateWatcher`) and loads a new one into its live `SSLContext`: new handshakes get the
new certificate, open connections keep theirs. Every write is a temporary file and an atomic
rename, under `tls/.lock`, so a reader sees the old pair or the new one.

A fingerprint is "sha256:" + the hex SHA-256 of a certificate's DER encoding.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("voipcloud.tls")

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
NEXT_CA_CERT = "next-ca.pem"
NEXT_CA_KEY = "next-ca.key"
RETIRED_CA_CERT = "retired-ca.pem"
LOCK = ".lock"
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
# TLS 1.2: forward secrecy and AEAD only; TLS 1.3 suites are all AEAD already
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsError(Exception):
    """A certificate or key that cannot be used; the message says which file and why."""


# --- fingerprints ----------------------------------------------------------------------------


def fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def parse_fingerprint(text: str) -> str:
    """`sha256:HEX` (also with colons, upper case or without the prefix) → `sha256:hex`."""
    raw = text.strip().lower()
    raw = raw.removeprefix("sha256:").removeprefix("sha256=")
    digits = raw.replace(":", "")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"a CA fingerprint is sha256: and 64 hex digits, not {text.strip()!r}")
    return "sha256:" + digits


def load_pem_certs(data: bytes | str) -> list[x509.Certificate]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise TlsError(f"no PEM certificate could be read: {exc}") from None


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- file handling ---------------------------------------------------------------------------


def tls_dir(data_dir: Path) -> Path:
    return data_dir / TLS_DIR


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[Path]:
    """The TLS directory (0700), held against other writers (serve's renewal, `tls rotate`)."""
    directory = tls_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if directory.stat().st_mode & 0o777 != DIR_MODE:
        directory.chmod(DIR_MODE)
    with (directory / LOCK).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """A temporary file created with `mode` (a key is never readable by others, not even
    for a moment), fsynced, then renamed over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path}: not an EC private key")
    return key


# --- the CA ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_authority(common_name: str, *, now: dt.datetime | None = None) -> Authority:
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "voipcloud"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _write_authority(directory: Path, authority: Authority, cert_name: str, key_name: str) -> None:
    write_atomically(directory / key_name, _key_bytes(authority.key), KEY_MODE)
    write_atomically(directory / cert_name, pem(authority.cert).encode(), CERT_MODE)


def _read_authority(directory: Path, cert_name: str, key_name: str) -> Authority | None:
    cert_path, key_path = directory / cert_name, directory / key_name
    if not cert_path.exists() or not key_path.exists():
        return None
    cert = load_pem_certs(cert_path.read_bytes())[0]
    key = _load_key(key_path)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise TlsError(f"{cert_path} and {key_path} do not belong together")
    return Authority(cert, key)


def ensure_authority(data_dir: Path) -> Authority:
    with locked(data_dir) as directory:
        found = _read_authority(directory, CA_CERT, CA_KEY)
        if found is not None:
            return found
        authority = new_authority(f"voipcloud controller CA {socket.gethostname()}")
        _write_authority(directory, authority, CA_CERT, CA_KEY)
        log.info("created the controller's CA %s", authority.fingerprint)
        return authority


# --- the server certificate ------------------------------------------------------------------


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip().strip("[]")
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name.lower()))
    return entries


def cert_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return names | {dns.lower() for dns in san.get_values_for_type(x509.DNSName)}


def wanted_names(names: Iterable[str]) -> set[str]:
    return {str(e.value).lower() for e in _san_entries(names)}


def issue_server_cert(
    authority: Authority, names: Iterable[str], *, now: dt.datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = now or _now()
    entries = _san_entries(names)
    if not entries:
        raise TlsError("a server certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    first = str(entries[0].value)
    not_after = min(now + dt.timedelta(days=SERVER_DAYS), authority.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class ServerFiles:
    """What the server loads: a certificate chain and its key; `ca` when it is our own CA."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


def _write_server(directory: Path, authority: Authority, names: Iterable[str]) -> x509.Certificate:
    cert, key = issue_server_cert(authority, names)
    # key first: a watcher reacts to server.pem, and by then the key already matches it
    write_atomically(directory / SERVER_KEY, _key_bytes(key), KEY_MODE)
    write_atomically(directory / SERVER_CERT, (pem(cert) + pem(authority.cert)).encode(), CERT_MODE)
    return cert


def current_server_cert(data_dir: Path) -> x509.Certificate | None:
    path = tls_dir(data_dir) / SERVER_CERT
    try:
        return load_pem_certs(path.read_bytes())[0]
    except (FileNotFoundError, TlsError):
        return None


def renewal_reason(
    cert: x509.Certificate | None,
    authority: Authority,
    names: Iterable[str],
    *,
    now: dt.datetime | None = None,
) -> str | None:
    """Why the server certificate must be issued again, or None when it is fine."""
    if cert is None:
        return "no server certificate yet"
    now = now or _now()
    if cert.issuer != authority.cert.subject or not _signed_by(cert, authority.cert):
        return "the server certificate is not from the current CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"the server certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    missing = wanted_names(names) - cert_names(cert)
    if missing:
        return f"the server certificate does not name {', '.join(sorted(missing))}"
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    return True


def ensure_own(data_dir: Path, names: Iterable[str]) -> ServerFiles:
    """The CA (created at the first start) and a server certificate that is current for
    `names`: issued again when missing, from another CA, expiring, or missing a name."""
    names = list(names)
    authority = ensure_authority(data_dir)
    with locked(data_dir) as directory:
        current = current_server_cert(data_dir)
        reason = renewal_reason(current, authority, names)
        if reason is not None:
            keep = cert_names(current) if current is not None else set()
            cert = _write_server(directory, authority, [*names, *sorted(keep)])
            log.info(
                "issued a server certificate (%s) until %s: %s",
                reason,
                f"{cert.not_valid_after_utc:%Y-%m-%d}",
                ", ".join(sorted(cert_names(cert))),
            )
        return ServerFiles(directory / SERVER_CERT, directory / SERVER_KEY, directory / CA_CERT)


def rotate(data_dir: Path, extra_names: Iterable[str] = ()) -> x509.Certificate:
    """A new server certificate (new key) from the same CA, for the same names (plus any
    `extra_names`). The running controller loads it within its reload interval."""
    authority = _read_authority(tls_dir(data_dir), CA_CERT, CA_KEY)
    if authority is None:
        raise TlsError(
            f"{tls_dir(data_dir)} holds no CA of this controller: it serves a certificate you "
            "brought (replace those files instead) or has not served TLS yet"
        )
    with locked(data_dir) as directory:
        current = current_server_cert(data_dir)
        names = sorted(cert_names(current)) if current is not None else []
        names += list(extra_names)
        if not names:
            names = default_names("0.0.0.0")  # noqa: S104 - "every address of this host"
        return _write_server(directory, authority, names)


def own_ca_fingerprint(data_dir: Path) -> str | None:
    path = tls_dir(data_dir) / CA_CERT
    try:
        return cert_fingerprint(load_pem_certs(path.read_bytes())[0])
    except (FileNotFoundError, TlsError):
        return None


# --- replacing the CA (docs/security.md "Replacing the CA") ----------------------------------


def ca_begin(data_dir: Path) -> Authority:
    """Step 1: a next CA, announced to agents beside the current one."""
    with locked(data_dir) as directory:
        if not (directory / CA_CERT).exists():
            raise TlsError("this controller has no CA of its own to replace")
        found = _read_authority(directory, NEXT_CA_CERT, NEXT_CA_KEY)
        if found is not None:
            return found
        authority = new_authority(f"voipcloud controller CA {socket.gethostname()} (next)")
        _write_authority(directory, authority, NEXT_CA_CERT, NEXT_CA_KEY)
        return authority


def ca_switch(data_dir: Path) -> Authority:
    """Step 2: the next CA becomes the CA and signs a new server certificate; the old CA is
    kept as retired-ca.pem and still announced until `ca_retire`."""
    with locked(data_dir) as directory:
        nxt = _read_authority(directory, NEXT_CA_CERT, NEXT_CA_KEY)
        if nxt is None:
            raise TlsError("no CA replacement under way: run `voipcloud tls ca begin` first")
        old = (directory / CA_CERT).read_bytes()
        current = current_server_cert(data_dir)
        names = sorted(cert_names(current)) if current is not None else default_names("0.0.0.0")  # noqa: S104
        write_atomically(directory / RETIRED_CA_CERT, old, CERT_MODE)
        _write_authority(directory, nxt, CA_CERT, CA_KEY)
        (directory / NEXT_CA_CERT).unlink()
        (directory / NEXT_CA_KEY).unlink()
        _write_server(directory, nxt, names)
        return nxt


def ca_retire(data_dir: Path) -> str | None:
    """Step 3: stop announcing the old CA (agents drop it at their next refresh)."""
    with locked(data_dir) as directory:
        path = directory / RETIRED_CA_CERT
        if not path.exists():
            return None
        retired = cert_fingerprint(load_pem_certs(path.read_bytes())[0])
        path.unlink()
        return retired


def announced(data_dir: Path) -> list[x509.Certificate]:
    """Everything agents are told to trust: current, next and (until retired) the old CA."""
    directory = tls_dir(data_dir)
    found = []
    for name in (CA_CERT, NEXT_CA_CERT, RETIRED_CA_CERT):
        with contextlib.suppress(FileNotFoundError):
            found += load_pem_certs((directory / name).read_bytes())[:1]
    return found


# --- host names and addresses ----------------------------------------------------------------

WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _interface_ipv4() -> list[str]:
    """IPv4 addresses of this host's interfaces (Linux ioctl; empty elsewhere)."""
    found = []
    siocgifaddr = 0x8915
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), siocgifaddr, request)
            except OSError as exc:
                if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL):
                    continue
                raise
            found.append(socket.inet_ntoa(answer[20:24]))
    return found


def default_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names and addresses the server certificate carries: the listen address (every
    interface's IPv4 address for 0.0.0.0 / ::), this host's names, loopback, and `extra`."""
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    names += [hostname]
    with contextlib.suppress(OSError):
        fqdn = socket.getfqdn()
        if fqdn and fqdn != hostname:
            names.append(fqdn)
    listen = host.strip().strip("[]")
    if listen in WILDCARDS:
        names += _interface_ipv4()
    else:
        names.append(listen)
    names += [n.strip() for n in extra if n.strip()]
    return list(dict.fromkeys(names))


# --- the server's SSLContext -----------------------------------------------------------------


def server_context(files: ServerFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    load_chain(context, files)
    return context


def load_chain(context: ssl.SSLContext, files: ServerFiles) -> None:
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"{exc.filename}: no such file") from None
    except ssl.SSLError as exc:
        raise TlsError(
            f"{files.cert_file} / {files.key_file}: not a usable certificate and key "
            f"({exc.reason or exc})"
        ) from None
    except PermissionError as exc:
        raise TlsError(f"{exc.filename}: permission denied") from None


def chain_fingerprint(cert_file: Path) -> str:
    """The fingerprint agents pin for a certificate file: its last certificate (the top of
    the chain the server presents: our CA, or whatever a brought chain ends at)."""
    return cert_fingerprint(load_pem_certs(cert_file.read_bytes())[-1])


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


class CertificateWatcher:
    """Loads a changed certificate into the live context, and renews our own when due.

    `check()` runs in the server's event loop (never beside a handshake in another thread).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        files: ServerFiles,
        *,
        data_dir: Path | None = None,
        names: list[str] | None = None,
        renew_every: float = 3600.0,
    ) -> None:
        self.context = context
        self.files = files
        self.data_dir = data_dir  # our own CA: renew when due
        self.names = names or []
        self.renew_every = renew_every
        self._seen = (_stat(files.cert_file), _stat(files.key_file))
        self._since_renewal_check = 0.0
        self.reloads = 0

    def check(self, elapsed: float = 0.0) -> bool:
        """Reload when the files changed; True when a new certificate is in use."""
        if self.data_dir is not None:
            self._since_renewal_check += elapsed
            if self._since_renewal_check >= self.renew_every:
                self._since_renewal_check = 0.0
                try:
                    ensure_own(self.data_dir, self.names)
                except (OSError, TlsError) as exc:
                    log.warning("could not renew the server certificate: %s", exc)
        seen = (_stat(self.files.cert_file), _stat(self.files.key_file))
        if seen == self._seen:
            return False
        try:
            load_chain(self.context, self.files)
        except TlsError as exc:  # e.g. a key written before its certificate: next round
            log.warning("new certificate not loaded yet: %s", exc)
            return False
        self._seen = seen
        self.reloads += 1
        cert = load_pem_certs(self.files.cert_file.read_bytes())[0]
        log.warning(
            "TLS: now serving certificate %s (serial %x, until %s); open connections keep theirs",
            cert_fingerprint(cert),
            cert.serial_number,
            f"{cert.not_valid_after_utc:%Y-%m-%d}",
        )
        return True
