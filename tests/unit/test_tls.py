"""The controller's CA and server certificate (voipcloud.services.tls): files and modes,
renewal reasons, names, fingerprints, and reloading into a live SSLContext."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

import pytest

from voipcloud.agent import trust
from voipcloud.services import tls


def test_first_start_creates_a_ca_and_a_server_certificate_with_private_keys(
    tmp_path: Path,
) -> None:
    files = tls.ensure_own(tmp_path, ["10.200.77.1", "ic.example.net", "127.0.0.1"])
    directory = tmp_path / "tls"
    assert directory.stat().st_mode & 0o777 == 0o700
    for key in ("ca.key", "server.key"):
        assert (directory / key).stat().st_mode & 0o777 == 0o600
    chain = tls.load_pem_certs(files.cert_file.read_bytes())
    assert len(chain) == 2  # leaf + CA: the CA can be pinned from the handshake alone
    ca = tls.load_pem_certs((directory / "ca.pem").read_bytes())[0]
    assert tls.cert_fingerprint(chain[1]) == tls.cert_fingerprint(ca)
    assert tls.cert_names(chain[0]) == {"10.200.77.1", "ic.example.net", "127.0.0.1"}
    # the same start again changes nothing
    before = files.cert_file.read_bytes()
    tls.ensure_own(tmp_path, ["10.200.77.1", "127.0.0.1"])
    assert files.cert_file.read_bytes() == before


def test_renewal_reasons(tmp_path: Path) -> None:
    tls.ensure_own(tmp_path, ["127.0.0.1"])
    authority = tls.ensure_authority(tmp_path)
    cert = tls.current_server_cert(tmp_path)
    assert tls.renewal_reason(cert, authority, ["127.0.0.1"]) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=tls.SERVER_DAYS - 29)
    assert "expires" in (tls.renewal_reason(cert, authority, ["127.0.0.1"], now=later) or "")
    assert "10.0.0.9" in (tls.renewal_reason(cert, authority, ["10.0.0.9"]) or "")
    other = tls.new_authority("another")
    assert "not from the current CA" in (tls.renewal_reason(cert, other, ["127.0.0.1"]) or "")
    # a new name: issued again, keeping the old names, from the same CA
    tls.ensure_own(tmp_path, ["10.0.0.9"])
    renewed = tls.current_server_cert(tmp_path)
    assert renewed is not None
    assert tls.cert_names(renewed) >= {"127.0.0.1", "10.0.0.9"}
    assert tls.own_ca_fingerprint(tmp_path) == authority.fingerprint


def test_fingerprints_parse_in_the_usual_spellings() -> None:
    digits = "ab" * 32
    for spelling in (f"sha256:{digits}", digits.upper(), ":".join(["AB"] * 32)):
        assert tls.parse_fingerprint(spelling) == f"sha256:{digits}"
    for bad in ("", "sha256:abc", "sha1:" + digits, "sha256:" + "zz" * 32):
        with pytest.raises(ValueError, match="64 hex digits"):
            tls.parse_fingerprint(bad)


def test_the_server_context_is_tls12_plus_with_forward_secret_aead_only(tmp_path: Path) -> None:
    context = tls.server_context(tls.ensure_own(tmp_path, ["127.0.0.1"]))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {c["name"] for c in context.get_ciphers()}
    tls12 = {n for n in names if not n.startswith("TLS_")}
    assert tls12
    assert all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in tls12)


def test_a_rotated_certificate_is_loaded_by_the_watcher(tmp_path: Path) -> None:
    files = tls.ensure_own(tmp_path, ["127.0.0.1"])
    context = tls.server_context(files)
    watcher = tls.CertificateWatcher(context, files, data_dir=tmp_path, names=["127.0.0.1"])
    assert watcher.check() is False
    old = tls.current_server_cert(tmp_path)
    new = tls.rotate(tmp_path)
    assert old is not None
    assert new.serial_number != old.serial_number
    assert tls.cert_names(new) == tls.cert_names(old)
    assert watcher.check() is True
    assert watcher.reloads == 1
    assert watcher.check() is False
    # a key that does not match (half-written pair): kept the old one, tried again later
    os.replace(tmp_path / "tls" / "ca.key", tmp_path / "tls" / "server.key")
    assert watcher.check() is False


def test_brought_chain_fingerprint_is_its_top_and_client_contexts_trust_only_it(
    tmp_path: Path,
) -> None:
    files = tls.ensure_own(tmp_path, ["127.0.0.1"])
    assert tls.chain_fingerprint(files.cert_file) == tls.own_ca_fingerprint(tmp_path)
    context = trust.client_context((tmp_path / "tls" / "ca.pem").read_text())
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1  # never the system's CAs


def test_loopback_and_default_names() -> None:
    assert tls.is_loopback("127.0.0.1")
    assert tls.is_loopback("localhost")
    assert tls.is_loopback("[::1]")
    assert not tls.is_loopback("0.0.0.0")
    assert not tls.is_loopback("10.200.77.1")
    names = tls.default_names("10.200.77.1", ["ic.example.net", " "])
    assert names[:3] == ["localhost", "127.0.0.1", "::1"]
    assert "10.200.77.1" in names
    assert "ic.example.net" in names
    assert "127.0.0.1" in tls.default_names("0.0.0.0")
