"""Configuration: one frozen object, loaded once from TOML files and the environment.

``Config``'s fields are the single list of settings: each carries its default,
a one-line doc, a unit and its allowed range in the field metadata, and the
parser, the environment overrides, ``DEFAULT_CONFIG_TEXT`` and the reference
table in ``docs/CONFIG.md`` are all generated from them. Adding a key is one
field. Sources, later winning: defaults, the main file (``tagstat.toml``),
drop-ins (``tagstat.toml.d/*.toml`` in lexical order), then ``TAGSTAT_<KEY>``
environment variables. Every error is a ``ConfigError`` naming the file or
variable, the key and what is allowed.
"""

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from tagstat.errors import ConfigError
from tagstat.status import UsageStatisticsStatus

log = logging.getLogger(__name__)

ENV_PREFIX = "TAGSTAT_"


def _key(default, doc: str, *, unit="", above=None, minimum=None, maximum=None, **extra):
    """A setting: ``at_least`` names another key it may not be below; ``hex`` shows it in hex."""
    meta = {"doc": doc, "unit": unit, "above": above, "minimum": minimum, "maximum": maximum}
    meta["at_least"] = extra.pop("at_least", None)
    meta["hex"] = extra.pop("hex", False)
    if extra:
        raise TypeError(f"unknown setting metadata {sorted(extra)}")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Config:
    poll_interval_s: float = _key(
        1.0, "how often counters and messages are read", unit="s", minimum=0.05
    )
    checkpoint_s: float = _key(
        10.0,
        "how often open sessions are written to the database",
        unit="s",
        above=0,
        at_least="poll_interval_s",
    )
    idle_timeout_s: float = _key(
        60.0, "a session with no data flowing for this long ends", unit="s", above=0
    )
    sensor_interval_s: float = _key(10.0, "how often sensors are read", unit="s", above=0)
    config_interval_s: float = _key(
        600.0, "how often calibration and configuration are re-read", unit="s", above=0
    )
    usb_timeout_ms: int = _key(
        500, "timeout of every USB control transfer", unit="ms", minimum=10, maximum=60000
    )
    product_ids: tuple[int, ...] = _key(
        (),
        "extra USB product ids (vendor 0x151f) to treat as Time Taggers",
        minimum=0,
        maximum=0xFFFF,
        hex=True,
    )
    retention_days: float = _key(
        180.0, "collected data older than this is deleted", unit="days", above=0
    )
    retention_max_bytes: int = _key(
        64 * 1024 * 1024, "the database is trimmed to stay below this size", unit="bytes", above=0
    )
    max_messages: int = _key(
        1000, "distinct warnings and errors kept; the oldest go first", minimum=1
    )
    initial_status: str = _key(
        "Collecting",
        "status of a new install: Disabled, Collecting or CollectingAndUploading",
    )
    # -- access, policy and logging of the system service (docs/ADMIN.md) --
    max_status: str = _key(
        "CollectingAndUploading",
        "the highest status anyone may set; a site that must never upload pins Collecting",
    )
    reader_group: str = _key(
        "tagstat", "members may read status, report, devices and sessions over the socket"
    )
    admin_group: str = _key("tagstat-admin", "members may also change the status")
    log_level: str = _key("INFO", "least severe messages logged: DEBUG, INFO, WARNING or ERROR")
    # -- uploading (docs/DATA.md, Uploads) --
    upload_url: str = _key(
        "",
        "base URL of the collector (https://, or http:// to a loopback address); "
        "empty: none, reports stay queued",
    )
    upload_interval_s: float = _key(
        86400.0, "length of an upload period: one report each", unit="s", minimum=1
    )
    upload_connect_timeout_s: float = _key(
        5.0, "timeout to connect to the collector", unit="s", above=0, maximum=300
    )
    upload_read_timeout_s: float = _key(
        30.0, "timeout waiting for the collector's answer", unit="s", above=0, maximum=600
    )
    upload_backoff_initial_s: float = _key(
        60.0, "delay before the first retry of a failed upload; doubles each time", unit="s",
        above=0,
    )  # fmt: skip
    upload_backoff_max_s: float = _key(
        21600.0, "longest delay between retries", unit="s", at_least="upload_backoff_initial_s"
    )
    outbox_max_reports: int = _key(
        100, "reports waiting to be sent; beyond this the oldest is dropped", minimum=1
    )
    outbox_max_bytes: int = _key(
        16 * 1024 * 1024, "bytes of reports waiting to be sent; beyond this the oldest is dropped",
        unit="bytes", above=0,
    )  # fmt: skip
    # -- kill switches (docs/DATA.md, Kill switches) --
    allow_in_ci: bool = _key(
        False, "collect even in a CI environment (CI=true and the like); off: Disabled there"
    )


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_DROP_IN_SUFFIX = ".d"


def env_var(key: str) -> str:
    return f"{ENV_PREFIX}{key.upper()}"


def load_config(path: Path | None, env: Mapping[str, str] = os.environ) -> Config:
    """Defaults, then ``path``, then its drop-ins, then the environment."""
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for source, table in _tables(path):
        for key, raw in table.items():
            values[key] = _parse(key, raw, str(source), from_env=False)
            origins[key] = str(source)
    for key in FIELDS:
        if env_var(key) in env:
            source = f"environment variable {env_var(key)}"
            values[key] = _parse(key, env[env_var(key)], source, from_env=True)
            origins[key] = source
    _warn_about_misspelt_env(env)
    config = Config(**values)
    _check_together(config, origins)
    return config


def _tables(path: Path | None) -> list[tuple[Path, dict]]:
    """The main file's table (if it exists) and each drop-in's, in order."""
    if path is None:
        return []
    path = Path(path)
    tables = []
    main = _read_toml(path, missing_ok=True)
    if main is not None:
        tables.append((path, main))
    drop_in_dir = path.with_name(path.name + _DROP_IN_SUFFIX)
    try:
        drop_ins = sorted(p for p in drop_in_dir.glob("*.toml") if p.is_file())
    except OSError as e:
        raise ConfigError(f"cannot list {drop_in_dir}: {e.strerror}; check its permissions") from e
    return tables + [(p, _read_toml(p)) for p in drop_ins]


def _read_toml(path: Path, *, missing_ok: bool = False) -> dict | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        if missing_ok and not path.is_symlink():
            return None  # no file: the defaults
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}; check its permissions") from e
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML in {path}: {e}") from e
    for key in table:
        if key not in FIELDS:
            raise ConfigError(f"unknown key {key!r} in {path}{_suggestion(key)}")
    return table


def _suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(FIELDS)}"


def _parse(key: str, raw, source: str, *, from_env: bool):
    field = FIELDS[key]
    parser = _PARSERS[field.type]
    try:
        value = parser(raw, from_env)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key} in {source} must be {e}, got {raw!r}") from None
    if key in _CHECKED_STRINGS:
        return _CHECKED_STRINGS[key](key, value, source)
    for item in value if isinstance(value, tuple) else (value,):
        _check_range(key, field.metadata, item, source)
    return value


def _as_float(raw, from_env: bool) -> float:
    if from_env and isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            raise ValueError("a number") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise TypeError("a number")
    return float(raw)


def _as_int(raw, from_env: bool) -> int:
    if from_env and isinstance(raw, str):
        try:
            raw = int(raw.strip(), 0)
        except ValueError:
            raise ValueError("an integer") from None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError("an integer")
    return raw


def _as_str(raw, from_env: bool) -> str:
    if not isinstance(raw, str):
        raise TypeError("a string")
    return raw


def _as_bool(raw, from_env: bool) -> bool:
    if from_env and isinstance(raw, str):
        raw = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            raw.strip().lower(), raw
        )
    if not isinstance(raw, bool):
        raise TypeError("true or false")
    return raw


def _as_int_tuple(raw, from_env: bool) -> tuple[int, ...]:
    if from_env and isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raise TypeError('a list of integers such as [0x012b, "0x012c"]')
    try:
        return tuple(_as_int(item, True) for item in raw)
    except (TypeError, ValueError):
        raise TypeError('a list of integers such as [0x012b, "0x012c"]') from None


_PARSERS = {float: _as_float, int: _as_int, str: _as_str, tuple[int, ...]: _as_int_tuple}
_PARSERS[bool] = _as_bool
_TYPE_NAMES = {
    bool: "boolean",
    float: "number",
    int: "integer",
    str: "string",
    tuple[int, ...]: "list of integers",
}


def _parse_status(key: str, value: str, source: str) -> str:
    try:
        return UsageStatisticsStatus.parse(value).name
    except ValueError as e:
        raise ConfigError(f"{key} in {source}: {e}") from None


# A POSIX-portable user/group name (useradd's default rule), at most 32 characters.
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _parse_group(key: str, value: str, source: str) -> str:
    if not _GROUP_NAME.fullmatch(value):
        raise ConfigError(
            f"{key} in {source} must be a group name such as 'tagstat', got {value!r}"
        )
    return value


def _parse_log_level(key: str, value: str, source: str) -> str:
    if value.strip().upper() not in LOG_LEVELS:
        raise ConfigError(
            f"{key} in {source} must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
        )
    return value.strip().upper()


def _parse_upload_url(key: str, value: str, source: str) -> str:
    """https:// anywhere; plain http:// only to this machine, where nothing can listen in."""
    url = value.strip()
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    try:
        host, _port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError as e:
        raise ConfigError(f"{key} in {source} is not a valid URL ({e}), got {value!r}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{key} in {source} must be an https:// URL, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            f"{key} in {source} must not have a query, fragment or credentials, got {value!r}"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"{key} in {source} must use https:// (plain http:// only to a loopback "
            f"address such as 127.0.0.1, ::1 or localhost), got {value!r}"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere


# String keys with a fixed form: checked (and normalised) by these, not by a range.
_CHECKED_STRINGS = {
    "initial_status": _parse_status,
    "max_status": _parse_status,
    "reader_group": _parse_group,
    "admin_group": _parse_group,
    "log_level": _parse_log_level,
    "upload_url": _parse_upload_url,
}


def _check_range(key: str, meta: Mapping, value, source: str) -> None:
    above, minimum, maximum = meta["above"], meta["minimum"], meta["maximum"]
    if above is not None and not value > above:
        raise ConfigError(f"{key} in {source} must be > {above}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} in {source} must be >= {_show(minimum, meta)}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} in {source} must be <= {_show(maximum, meta)}, got {value!r}")


def _check_together(config: Config, origins: Mapping[str, str]) -> None:
    for f in dataclasses.fields(Config):
        other = f.metadata["at_least"]
        if other is None or getattr(config, f.name) >= getattr(config, other):
            continue
        raise ConfigError(
            f"{f.name} ({getattr(config, f.name):g}, from {origins.get(f.name, 'the default')}) "
            f"must be >= {other} ({getattr(config, other):g}, "
            f"from {origins.get(other, 'the default')})"
        )


def _warn_about_misspelt_env(env: Mapping[str, str]) -> None:
    known = {env_var(k) for k in FIELDS}
    for name in env:
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
            if close:
                log.warning("ignoring environment variable %s; did you mean %s?", name, close[0])


def _show(value, meta: Mapping) -> str:
    return f"0x{value:04x}" if meta["hex"] else f"{value:g}"


def _toml(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f"0x{v:04x}" for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _range_text(meta: Mapping) -> str:
    parts = []
    if meta["above"] is not None:
        parts.append(f"> {_show(meta['above'], meta)}")
    if meta["minimum"] is not None:
        parts.append(f">= {_show(meta['minimum'], meta)}")
    if meta["maximum"] is not None:
        parts.append(f"<= {_show(meta['maximum'], meta)}")
    if meta["at_least"] is not None:
        parts.append(f">= `{meta['at_least']}`")
    return ", ".join(parts)


def _default_config_text() -> str:
    lines = [
        "# tagstat configuration. Every key is optional; the commented values are the",
        "# defaults. Files in tagstat.toml.d/*.toml override this file (in name order),",
        "# and TAGSTAT_<KEY> environment variables override both.",
    ]
    for f in dataclasses.fields(Config):
        unit = f" [{f.metadata['unit']}]" if f.metadata["unit"] else ""
        lines += ["", f"# {f.metadata['doc']}{unit} (env {env_var(f.name)})"]
        lines.append(f"#{f.name} = {_toml(f.default)}")
    return "\n".join(lines) + "\n"


def reference_table() -> str:
    """The Markdown table of every key; docs/CONFIG.md holds exactly this."""
    rows = [
        "| key | type | default | unit | allowed | environment | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(Config):
        m = f.metadata
        rows.append(
            f"| `{f.name}` | {_TYPE_NAMES[f.type]} | `{_toml(f.default)}` | {m['unit'] or '-'} "
            f"| {_range_text(m) or '-'} | `{env_var(f.name)}` | {m['doc']} |"
        )
    return "\n".join(rows) + "\n"


DEFAULT_CONFIG_TEXT = _default_config_text()
