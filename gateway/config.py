"""The gateway's configuration: a YAML file read into frozen dataclasses, checked before anything starts.

Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.tls import TlsFileError, client_context, server_context

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # the AE VR: 16 characters, no backslash
GROUPINGS = ("study", "series")
DESTINATION_TYPES = ("dicom", "dicomweb")


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the key."""


@dataclass(frozen=True)
class Route:
    """Series whose attributes match ``match`` go to this app (first matching route wins)."""

    name: str
    match: dict[str, tuple[str, ...]]
    app: Path | None = None
    model: Path | None = None
    args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # instead of ``python app args``: e.g. monai-deploy run / docker, with {input} {output} {model}
    timeout_s: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerTls:
    """DICOM TLS on the SCP (``gateway.tls``): ``port`` takes TLS only; ``plain_port``, when given, also listens without."""

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None  # CAs whose client certificates are trusted (and a ``tls: true`` destination's server)
    require_client_certificate: bool = False  # mutual TLS: a client without a trusted certificate is refused
    plain_port: int | None = None


@dataclass(frozen=True)
class ClientTls:
    """DICOM TLS to a C-STORE destination: its server's certificate checked against ``ca_certificates`` and its name."""

    ca_certificates: Path
    certificate: Path | None = None  # presented when the server asks (mutual TLS)
    private_key: Path | None = None
    server_hostname: str | None = None  # the name its certificate must carry; default: the destination's host


@dataclass(frozen=True)
class Destination:
    """Where every DICOM output goes: a C-STORE SCP, or a DICOMweb STOW-RS base URL."""

    name: str
    type: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    timeout_s: float = 60.0
    tls: ClientTls | None = None


@dataclass(frozen=True)
class Retention:
    """What the retention cleaner (``gateway.retention``) removes: done jobs older than ``completed_days`` (with their received
    files), failed and unrouted ones older than ``failed_days``; every ``interval_s`` in ``serve``."""

    completed_days: float
    failed_days: float
    interval_s: float = 3600.0


@dataclass(frozen=True)
class GatewayConfig:
    ae_title: str
    port: int
    allowed_calling_aets: tuple[str, ...]
    storage_dir: Path
    routes: tuple[Route, ...]
    destinations: tuple[Destination, ...] = ()
    host: str = "0.0.0.0"
    grouping: str = "study"
    quiet_period_s: float = 10.0
    cut_off_wait_s: float = 300.0  # the quiet period of a group whose newest instance came in an association never released
    max_attempts: int = 3
    retry_delay_s: float = 30.0
    max_send_attempts: int = 5
    workers: int = 1
    python: str = sys.executable  # the interpreter that runs an app folder (python3 in a MAP container)
    max_associations: int = 10
    shutdown_grace_s: float = 20.0
    # the job queue: "sqlite" (storage_dir/gateway.sqlite, one ``serve`` process) or a libpq URL postgresql://... (the
    # cluster mode: receive, worker and serve processes on several hosts sharing storage_dir); gateway/postgres.py
    queue: str = "sqlite"
    lease_s: float = 120.0  # a job whose worker has not renewed its lease for this long goes to another worker
    node_name: str = field(default_factory=socket.gethostname)  # this host, as ``gateway jobs`` names it
    # resources and observability (issue 15): the disk watermark (gateway.resources), the retention cleaner
    # (gateway.retention, off unless configured), /healthz and /metrics (gateway.health, off unless http_port is given)
    storage_watermark_percent: float = 75.0
    storage_min_free_bytes: int = 0
    retention: Retention | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    tls: ServerTls | None = None  # DICOM TLS on ``port`` (gateway.tls)

    @property
    def clustered(self) -> bool:
        return self.queue != "sqlite"

    @property
    def database(self) -> Path:
        return self.storage_dir / "gateway.sqlite"

    @property
    def incoming_dir(self) -> Path:
        return self.storage_dir / "incoming"

    @property
    def jobs_dir(self) -> Path:
        return self.storage_dir / "jobs"


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise ConfigError(f"{where}: missing '{key}'")
    return mapping[key]


def _ae_title(value: Any, where: str) -> str:
    if not isinstance(value, str) or not AE_TITLE.match(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not an AE title (1-16 printable characters, no backslash)")
    return value.strip()


def _positive(value: Any, where: str, kind: type = float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return number


def _path(value: Any, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _interpreter(value: Any, base: Path) -> str:
    if not value:
        return sys.executable
    return str(_path(value, base)) if "/" in str(value) else str(value)


def _queue(value: Any) -> str:
    text = str(value).strip()
    if text == "sqlite" or text.startswith(("postgresql://", "postgres://")):
        return text
    raise ConfigError(f"queue: must be 'sqlite' or a PostgreSQL URL (postgresql://user@host:port/database), got {value!r}")


def parse_route(raw: Any, base: Path, index: int) -> Route:
    where = f"routes[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    name = str(_require(raw, "name", where))
    match = _require(raw, "match", where)
    if not isinstance(match, dict) or not match:
        raise ConfigError(f"{where} ({name}): 'match' must map DICOM keywords to a value or a list of values")
    patterns = {str(k): tuple(str(v) for v in (vs if isinstance(vs, list) else [vs])) for k, vs in match.items()}
    command = tuple(str(part) for part in raw.get("command") or ())
    if not command and not raw.get("app"):
        raise ConfigError(f"{where} ({name}): give 'app' (an app folder run with python) or 'command'")
    app = _path(raw["app"], base) if raw.get("app") else None
    if app is not None and not command and not app.exists():
        raise ConfigError(f"{where} ({name}): app folder {app} does not exist")
    return Route(
        name=name,
        match=patterns,
        app=app,
        model=_path(raw["model"], base) if raw.get("model") else None,
        args=tuple(str(a) for a in raw.get("args") or ()),
        command=command,
        timeout_s=_positive(raw.get("timeout_s", 3600), f"{where}.timeout_s"),
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
    )


def _tls_file(raw: dict[str, Any], key: str, base: Path, where: str, required: bool = True) -> Path | None:
    if not raw.get(key):
        if required:
            raise ConfigError(f"{where}: missing '{key}'")
        return None
    return _path(raw[key], base)


def _checked(build: Any, where: str) -> None:
    try:
        build()
    except TlsFileError as error:
        raise ConfigError(f"{where}: {error}") from None


def parse_server_tls(raw: Any, base: Path, port: int) -> ServerTls | None:
    """The ``tls:`` section; its files are loaded once here, so a missing or unusable one stops the start."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("tls: expected a mapping with certificate and private_key")
    plain_port = _positive(raw["plain_port"], "tls.plain_port", int) if raw.get("plain_port") is not None else None
    if plain_port == port:
        raise ConfigError(f"tls.plain_port: must differ from port ({port}), which takes TLS")
    tls = ServerTls(
        certificate=_tls_file(raw, "certificate", base, "tls"),
        private_key=_tls_file(raw, "private_key", base, "tls"),
        ca_certificates=_tls_file(raw, "ca_certificates", base, "tls", required=False),
        require_client_certificate=bool(raw.get("require_client_certificate", False)),
        plain_port=plain_port,
    )
    _checked(lambda: server_context(tls.certificate, tls.private_key, tls.ca_certificates, tls.require_client_certificate), "tls")
    return tls


def parse_client_tls(raw: Any, base: Path, where: str, server: ServerTls | None) -> ClientTls | None:
    """A destination's ``tls``: ``true`` (the gateway's own certificate, key and CA certificates) or a mapping."""
    if raw is None or raw is False:
        return None
    if raw is True:
        if server is None or server.ca_certificates is None:
            raise ConfigError(f"{where}: true takes the tls section's ca_certificates, and there are none; give ca_certificates")
        raw = {"ca_certificates": server.ca_certificates, "certificate": server.certificate, "private_key": server.private_key}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected true or a mapping with ca_certificates")
    tls = ClientTls(
        ca_certificates=_tls_file(raw, "ca_certificates", base, where),
        certificate=_tls_file(raw, "certificate", base, where, required=False),
        private_key=_tls_file(raw, "private_key", base, where, required=False),
        server_hostname=str(raw["server_hostname"]) if raw.get("server_hostname") else None,
    )
    _checked(lambda: client_context(tls.ca_certificates, tls.certificate, tls.private_key), where)
    return tls


def parse_destination(raw: Any, index: int, base: Path = Path(), server_tls: ServerTls | None = None) -> Destination:
    where = f"destinations[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    name = str(_require(raw, "name", where))
    kind = str(raw.get("type", "dicom"))
    if kind not in DESTINATION_TYPES:
        raise ConfigError(f"{where} ({name}): type must be one of {DESTINATION_TYPES}, got {kind!r}")
    timeout = _positive(raw.get("timeout_s", 60), f"{where}.timeout_s")
    if kind == "dicomweb":
        if raw.get("tls"):
            raise ConfigError(f"{where} ({name}).tls: DICOM TLS is for type dicom; give a dicomweb destination an https:// url")
        return Destination(name=name, type=kind, url=str(_require(raw, "url", where)).rstrip("/"), timeout_s=timeout)
    return Destination(
        name=name,
        type=kind,
        ae_title=_ae_title(_require(raw, "ae_title", where), f"{where}.ae_title"),
        host=str(_require(raw, "host", where)),
        port=_positive(_require(raw, "port", where), f"{where}.port", int),
        timeout_s=timeout,
        tls=parse_client_tls(raw.get("tls"), base, f"{where}.tls", server_tls),
    )


def parse_retention(raw: Any) -> Retention | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("retention: expected a mapping with completed_days and failed_days")
    completed = _positive(_require(raw, "completed_days", "retention"), "retention.completed_days")
    failed = _positive(raw.get("failed_days", completed), "retention.failed_days")
    if failed < completed:
        raise ConfigError(f"retention.failed_days: must be at least completed_days ({completed:g}), got {failed:g}")
    return Retention(completed, failed, _positive(raw.get("interval_s", 3600), "retention.interval_s"))


def _percent(value: Any, where: str) -> float:
    number = _positive(value, where)
    if number > 100:
        raise ConfigError(f"{where}: must be a percentage, at most 100, got {value!r}")
    return number


def parse_config(raw: Any, base: Path) -> GatewayConfig:
    """The configuration from a parsed YAML document; relative paths against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping")
    allowed = raw.get("allowed_calling_aets")
    if not isinstance(allowed, list) or not allowed:
        raise ConfigError("allowed_calling_aets: list the AE titles that may send (at least one)")
    grouping = str(raw.get("grouping", "study"))
    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping: must be one of {GROUPINGS}, got {grouping!r}")
    routes = raw.get("routes")
    if not isinstance(routes, list) or not routes:
        raise ConfigError("routes: give at least one route")
    parsed_routes = tuple(parse_route(r, base, i) for i, r in enumerate(routes))
    names = [r.name for r in parsed_routes]
    if len(set(names)) != len(names):
        raise ConfigError(f"routes: names must be unique, got {names}")
    port = _positive(_require(raw, "port", "config"), "port", int)
    server_tls = parse_server_tls(raw.get("tls"), base, port)
    destinations = tuple(parse_destination(d, i, base, server_tls) for i, d in enumerate(raw.get("destinations") or ()))
    quiet_period = _positive(raw.get("quiet_period_s", 10), "quiet_period_s")
    cut_off_wait = _positive(raw.get("cut_off_wait_s", max(300.0, quiet_period)), "cut_off_wait_s")
    if cut_off_wait < quiet_period:
        raise ConfigError(f"cut_off_wait_s: must be at least quiet_period_s ({quiet_period:g}), got {cut_off_wait:g}")
    return GatewayConfig(
        ae_title=_ae_title(_require(raw, "ae_title", "config"), "ae_title"),
        port=port,
        allowed_calling_aets=tuple(_ae_title(a, "allowed_calling_aets") for a in allowed),
        storage_dir=_path(_require(raw, "storage_dir", "config"), base),
        routes=parsed_routes,
        destinations=destinations,
        host=str(raw.get("host", "0.0.0.0")),
        grouping=grouping,
        quiet_period_s=quiet_period,
        cut_off_wait_s=cut_off_wait,
        max_attempts=_positive(raw.get("max_attempts", 3), "max_attempts", int),
        retry_delay_s=float(raw.get("retry_delay_s", 30)),
        max_send_attempts=_positive(raw.get("max_send_attempts", 5), "max_send_attempts", int),
        workers=_positive(raw.get("workers", 1), "workers", int),
        python=_interpreter(raw.get("python"), base),
        max_associations=_positive(raw.get("max_associations", 10), "max_associations", int),
        shutdown_grace_s=float(raw.get("shutdown_grace_s", 20)),
        queue=_queue(raw.get("queue", "sqlite")),
        lease_s=_positive(raw.get("lease_s", 120), "lease_s"),
        node_name=str(raw.get("node_name") or socket.gethostname()),
        storage_watermark_percent=_percent(raw.get("storage_watermark_percent", 75), "storage_watermark_percent"),
        storage_min_free_bytes=_positive(raw["storage_min_free_bytes"], "storage_min_free_bytes", int)
        if raw.get("storage_min_free_bytes")
        else 0,
        retention=parse_retention(raw.get("retention")),
        http_host=str(raw.get("http_host", "127.0.0.1")),
        http_port=_positive(raw["http_port"], "http_port", int) if raw.get("http_port") is not None else None,
        tls=server_tls,
    )


def load_config(path: Path) -> GatewayConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    return parse_config(raw, path.resolve().parent)
