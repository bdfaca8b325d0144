"""Site configuration: one TOML file -> one typed, validated, frozen `SiteConfig`.

Relative paths in the file are resolved against the file's directory. Any scalar can be
overridden by an environment variable `SWARMD_<SECTION>_<KEY>` (for example
`SWARMD_CHAIN_RPC_URL`), which is how systemd drop-ins and containers adjust a site.
The schema carries a version so later releases can migrate old files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from swarmd.errors import ConfigError
from swarmd.fsutil import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA_VERSION = 1
ENV_PREFIX = "SWARMD_"
# A site's name is published on chain at join and shown in every peer's logs and tables, so it is
# untrusted input there: short, plain ASCII (no look-alike letters), and never mistakable for an account.
SITE_NAME_MAX = 32
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SiteSection:
    name: str
    state_dir: Path
    task: Path  # the consortium's swarm.toml
    data_list: Path | None = None  # Decathlon-style datalist JSON of this site's images
    eval_list: Path | None = None  # held-out datalist the merged models are scored on (never trained on)


@dataclass(frozen=True)
class IdentitySection:
    keystore: Path  # Ethereum keystore v3 JSON
    passphrase_file: Path  # e.g. $CREDENTIALS_DIRECTORY/passphrase under systemd
    curve_secret: Path  # z85 CURVE secret key; the public key is derived from it


@dataclass(frozen=True)
class ChainSection:
    rpc_url: str
    contract: str = ""  # 0x address of the deployed SwarmLedger; empty until `swarm join`
    poa: bool = False  # QBFT/Clique-style extraData needs web3's POA middleware
    poll_interval: float = 0.5
    # The same node's websocket (eth_subscribe newHeads): the daemon reads the chain as each block is
    # mined instead of at its next poll. Empty: polling only. anvil serves it on the RPC port.
    ws_url: str = ""


@dataclass(frozen=True)
class TransportSection:
    bind: str  # e.g. tcp://0.0.0.0:7700
    endpoint: str  # advertised on chain, e.g. tcp://site-a.example.org:7700
    bulk: str = "aead"  # model bytes: "aead" (sealed, on port+1) or "curve" (one port, slower)
    bulk_bind: str = ""  # where the bulk socket binds; empty: the bind address's port + 1
    # Issue 18, the libp2p path (swarmd[p2p]; docs/deploy.md): "private" sites accept no connection
    # and are reached through a relay; "auto" is public when the endpoint has a tcp:// part.
    reachability: str = "public"
    relay: bool = False  # offer circuit relay v2 to the other members (a public site)
    p2p_bind: str = ""  # libp2p listen multiaddr, e.g. /ip4/0.0.0.0/tcp/7702 (a relay needs one)
    relays: str = ""  # a private site: space-separated relay multiaddrs (.../p2p/<relay peer id>)

    @property
    def private(self) -> bool:
        zmq_part = any(p.startswith(("tcp://", "ipc://")) for p in self.endpoint.split())
        return self.reachability == "private" or (self.reachability == "auto" and not zmq_part)

    @property
    def uses_p2p(self) -> bool:
        """The libp2p path runs: private, a relay, a libp2p listener, or a peer ID in the endpoint."""
        advertised = any(p.startswith("/") for p in self.endpoint.split())
        return self.private or self.relay or bool(self.p2p_bind) or advertised


@dataclass(frozen=True)
class TrainSection:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False
    threads: int = 0  # 0: choose from the CPU count


@dataclass(frozen=True)
class MetricsSection:
    bind: str = ""  # host:port for Prometheus; empty disables


@dataclass(frozen=True)
class SiteConfig:
    site: SiteSection
    identity: IdentitySection
    chain: ChainSection
    transport: TransportSection
    train: TrainSection = field(default_factory=TrainSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    path: Path | None = None  # where it was loaded from
    schema: int = SCHEMA_VERSION

    @property
    def control_socket(self) -> Path:
        return self.site.state_dir / "control.sock"


_SECTIONS: dict[str, type] = {
    "site": SiteSection,
    "identity": IdentitySection,
    "chain": ChainSection,
    "transport": TransportSection,
    "train": TrainSection,
    "metrics": MetricsSection,
}


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    if value is None:
        return None
    if "Path" in annotation:
        if "\x00" in str(value):  # the OS refuses such a path later with a bare ValueError
            raise ConfigError(f"{where}: a path cannot contain a NUL character")
        return Path(os.path.expanduser(str(value)))
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        if str(value).lower() in {"1", "true", "yes", "on"}:
            return True
        if str(value).lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation.startswith("int"):
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: TOML's inf
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if annotation.startswith("float"):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past a double
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build_section(name: str, raw: dict[str, Any], env: dict[str, str], base: Path) -> Any:
    cls = _SECTIONS[name]
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for fname, f in known.items():
        env_key = f"{ENV_PREFIX}{name}_{fname}".upper()
        if env_key in env:
            value: Any = env[env_key]
        elif fname in raw:
            value = raw[fname]
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ConfigError(f"[{name}]: missing required key '{fname}'")
        coerced = _coerce(value, str(f.type), f"[{name}].{fname}")
        if isinstance(coerced, Path) and not coerced.is_absolute():
            coerced = (base / coerced).resolve()
        values[fname] = coerced
    return cls(**values)


def parse_config(data: dict[str, Any], base: Path, env: dict[str, str] | None = None) -> SiteConfig:
    """Validate a parsed TOML document; `base` resolves relative paths."""
    env = dict(os.environ) if env is None else env
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ConfigError(f"config schema {schema!r} is not supported (this swarmd reads {SCHEMA_VERSION})")
    unknown = set(data) - set(_SECTIONS) - {"schema"}
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] must be a table")
        required = any(
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in dataclasses.fields(cls)
        )
        if name not in data and not required:
            sections[name] = _build_section(name, {}, env, base)
            continue
        sections[name] = _build_section(name, raw, env, base)
    cfg = SiteConfig(**sections)
    validate_config(cfg)
    return cfg


def site_name_problem(name: object) -> str | None:
    """Why `name` cannot name a site, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a site name must be a non-empty string"
    if len(name) > SITE_NAME_MAX:
        return f"a site name is at most {SITE_NAME_MAX} characters, got {len(name)}"
    if not _SITE_NAME.fullmatch(name):
        return "a site name is ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
    if name[:2].lower() == "0x":
        return "a site name must not start with 0x (it would read as an account)"
    return None


def check_site_name(name: str, label: str = "site.name") -> str:
    """Return `name` if it can name a site; raise ConfigError saying why not."""
    problem = site_name_problem(name)
    if problem is not None:
        raise ConfigError(f"{label} {name!r}: {problem}", hint="e.g. 'charite' or 'site-a'")
    return name


def validate_config(cfg: SiteConfig) -> None:
    """Raise ConfigError when a value is out of its domain (what load_config checks after parsing)."""
    check_site_name(cfg.site.name)
    _validate_reach(cfg.transport)
    check_rpc_url(cfg.chain.rpc_url)
    if cfg.chain.ws_url and (problem := ws_url_problem(cfg.chain.ws_url)) is not None:
        raise ConfigError(
            f"chain.ws_url {cfg.chain.ws_url!r}: {problem}",
            hint="the chain node's websocket endpoint, e.g. ws://127.0.0.1:8546, or leave it out to poll",
        )
    if cfg.transport.bulk not in ("aead", "curve"):
        raise ConfigError(f"transport.bulk must be aead or curve, got {cfg.transport.bulk!r}")
    contract = cfg.chain.contract
    if contract and not (contract.startswith("0x") and len(contract) == 42 and _is_hex(contract[2:])):
        raise ConfigError(f"chain.contract must be a 0x-prefixed 20-byte address, got {contract!r}")
    dev = cfg.train.device
    if dev not in {"auto", "cpu", "cuda"} and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    if cfg.train.threads < 0:
        raise ConfigError("train.threads must be >= 0")


def _validate_reach(t: TransportSection) -> None:
    """bind and endpoint, and the libp2p keys of issue 18 (a private site may bind nothing)."""
    if t.reachability not in ("public", "private", "auto"):
        raise ConfigError(f"transport.reachability must be public, private or auto, got {t.reachability!r}")
    if not (t.private and t.bind == "") and not t.bind.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"transport.bind must be a tcp:// or ipc:// address, got {t.bind!r}")
    parts = t.endpoint.split()
    if not parts or any(not p.startswith(("tcp://", "ipc://", "/")) for p in parts):
        raise ConfigError(
            f"transport.endpoint must be a tcp:// or ipc:// address and/or multiaddrs, got {t.endpoint!r}"
        )
    if not t.private and not parts[0].startswith(("tcp://", "ipc://")):
        raise ConfigError("a public site's transport.endpoint starts with its tcp:// address")
    if t.private and not t.relays.split():
        raise ConfigError("a private site needs transport.relays", hint="a public member with relay = true")
    if t.relay and not t.p2p_bind:
        raise ConfigError("transport.relay needs transport.p2p_bind", hint="e.g. /ip4/0.0.0.0/tcp/7702")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def check_rpc_url(url: str, label: str = "chain.rpc_url") -> str:
    """Return `url` if it is an http(s) URL with a host (and a valid port); raise ConfigError if not.

    Every way an RPC URL enters (site.toml, a SWARMD_ override, a CLI option) passes here, so a typo is
    named before any request library sees it. Only http(s): the synchronous web3 client speaks no websocket.
    """
    hint = "give the chain node's JSON-RPC endpoint, e.g. http://127.0.0.1:8545"
    if not isinstance(url, str) or any(c.isspace() for c in url):
        raise ConfigError(f"{label} is not a URL: {url!r}", hint=hint)
    try:
        parts = urlsplit(url)
        port = parts.port  # parses it: a port that is not a number in 0..65535 raises ValueError
    except ValueError as exc:
        raise ConfigError(f"{label} is not a valid URL: {url!r} ({exc})", hint=hint) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{label} must be an http:// or https:// URL, got {url!r}", hint=hint)
    if not parts.hostname or port == 0:
        raise ConfigError(f"{label} names no host and port: {url!r}", hint=hint)
    return url


def ws_url_problem(url: str) -> str | None:
    """Why `url` cannot be the chain node's websocket endpoint (`chain.ws_url`), or None when it can."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return "not a URL"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("ws", "wss"):
        return "must be a ws:// or wss:// URL"
    if not parts.hostname or port == 0:
        return "names no host and port"
    return None


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> SiteConfig:
    """Read and validate a site config file. Raises ConfigError with the file name on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist", hint="run `swarm init` first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{p}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        cfg = parse_config(data, p.resolve().parent, env)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc.args[0]}", hint=exc.hint) from None  # str(exc) holds the hint too
    return dataclasses.replace(cfg, path=p.resolve())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dump_config(cfg: SiteConfig) -> str:
    lines = [f"schema = {cfg.schema}", ""]
    for name in _SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is None:
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_config(cfg: SiteConfig, path: str | os.PathLike[str]) -> Path:
    """Write a config atomically (mode 0600: it names key files)."""
    return atomic_write_text(path, dump_config(cfg), mode=0o600)


def with_chain(cfg: SiteConfig, **changes: Any) -> SiteConfig:
    """A copy with [chain] fields replaced (used by `swarm join` to record the contract)."""
    return dataclasses.replace(cfg, chain=dataclasses.replace(cfg.chain, **changes))
