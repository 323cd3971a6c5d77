"""Settings from flags or VOIPCLOUD_* environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voipcloud.store.database import sqlite_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOIPCLOUD_", extra="ignore")

    data_dir: Path = Path("./voipcloud-data")
    database_url: str | None = None  # default: SQLite file in the data dir
    admin_password: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # serving processes sharing host:port (SO_REUSEPORT); above 1 needs PostgreSQL
    # (docs/operations.md "Several controllers", voipcloud.cli.workers)
    workers: int = Field(default=1, ge=1, le=64)
    activation_timeout: float = Field(default=60.0, gt=0)
    token_ttl: float = Field(default=12 * 3600.0, gt=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    missed_beats: int = Field(default=3, ge=1)
    # mass reconnect (docs/reliability.md): agent channel handshakes in progress at once
    # (beyond: 503 + Retry-After), and the channels/s assumed until one is measured
    max_channel_handshakes: int = Field(default=256, ge=1)
    channel_open_rate: float = Field(default=400.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)  # one stored resource
    # misbehaving clients: docs/reliability.md, voipcloud.api.server
    max_header_bytes: int = Field(default=65_536, ge=4096)  # request line and headers
    max_headers: int = Field(default=100, ge=16)
    max_request_line: int = Field(default=8192, ge=1024)  # the request target (path, query)
    header_timeout: float = Field(default=10.0, gt=0)  # a whole request head, seconds
    body_timeout: float = Field(default=30.0, gt=0)  # longest pause within a request body
    keep_alive_timeout: int = Field(default=5, ge=1)  # idle connection, seconds
    # SQLite commits: "full" survives a power cut; "normal" is faster (docs/reliability.md)
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # GET /metrics without a token from these addresses (comma-separated CIDRs)
    metrics_allow: str = ""
    # webhook deliveries: first retry after, longest wait between tries, give up after (seconds)
    webhook_retry_first: float = Field(default=5.0, gt=0)
    webhook_retry_max: float = Field(default=600.0, gt=0)
    webhook_give_up: float = Field(default=86400.0, gt=0)
    webhook_timeout: float = Field(default=10.0, gt=0)  # one attempt, seconds
    # transport security: docs/security.md "Transport", voipcloud.services.tls
    # auto: HTTPS when a certificate is given or when listening beyond loopback
    tls: Literal["auto", "on", "off"] = "auto"
    tls_cert: Path | None = None  # a certificate chain you bring (PEM), with tls_key
    tls_key: Path | None = None
    tls_names: str = ""  # extra host names / addresses for our own server certificate (comma)
    tls_reload_interval: float = Field(default=5.0, gt=0)  # seconds between file checks
    tls_renew_check: float = Field(default=3600.0, gt=0)  # seconds between renewal checks

    @field_validator("sqlite_synchronous", "tls", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        parts = (part.strip() for part in self.metrics_allow.split(","))
        return [ipaddress.ip_network(item, strict=False) for item in parts if item]

    def resolved_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir.resolve())
