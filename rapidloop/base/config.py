"""One TOML file of settings, with defaults and environment overrides.

The defaults live in ``defaults.toml`` beside this module, so every knob has
one documented home. A user file only needs the settings it changes, and
``RAPIDLOOP_<SECTION>__<KEY>`` environment variables override both. Unknown
sections or keys, and values of the wrong type, are errors: a typo in a
threshold must not silently fall back to the default.

>>> cfg = load_config(env={"RAPIDLOOP_POLICY__GLOBAL_MIN_ORGS": "4"})
>>> cfg.policy.global_min_orgs
4
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

ENV_PREFIX = "RAPIDLOOP_"
FREEFORM = {("kafka", "client"), ("models", "behavior_weights")}


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


class Section:
    """Read-only attribute view of one TOML table."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = {k: Section(f"{name}.{k}", v) if isinstance(v, dict) else v
                        for k, v in values.items()}

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no setting {self._name}.{key}") from None

    def as_dict(self) -> dict[str, Any]:
        return {k: v.as_dict() if isinstance(v, Section) else v for k, v in self._values.items()}

    def __repr__(self) -> str:
        return f"Section({self._name}, {self.as_dict()!r})"


class Config(Section):
    """The whole configuration; sections are attributes (``cfg.policy``)."""

    __slots__ = ()

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__("config", values)


def _defaults() -> dict[str, Any]:
    text = resources.files("rapidloop.base").joinpath("defaults.toml").read_text("utf-8")
    return tomllib.loads(text)


def _check_type(path: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{path}: expected {type(default).__name__}, got {value!r}")
    return value


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> None:
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        freeform = tuple(where.split(".")[-2:]) in FREEFORM
        if freeform or (path and tuple(path.split(".")) in FREEFORM):
            if isinstance(base.get(key), dict) and isinstance(value, dict):
                base[key].update(value)
            else:
                base[key] = value
            continue
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean {where.rsplit('.', 1)[0] + '.' if path else ''}{close[0]}?)" \
                if close else ""
            raise ConfigError(f"unknown setting {where}{hint}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table")
            _merge(base[key], value, where)
        else:
            base[key] = _check_type(where, base[key], value)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string such as a broker list


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        # Client settings (passwords included) are librdkafka strings: never reinterpret them.
        freeform = tuple(parts[:2]) == ("kafka", "client")
        node[parts[-1]] = raw if freeform else _parse_env_value(raw)
    return out


INPUT_ORDERS = ("event_time", "arrival")
ACTIVE_CLOCKS = ("live", "event")

# Tenants' own input topics ([tenants]): one fixed naming rule, so an ACL, a capture and a
# recovery manifest can all name a tenant's topics from its org id alone.
TENANT_ORG = re.compile(r"[A-Za-z0-9._-]+")
SHARED_REPORTS = ("any", "unbound_only")
SHARED_FEEDBACK = ("any", "unbound_only", "trusted_only")
MAX_TOPIC_CHARS = 249     # Kafka's limit on a topic name


def tenant_topic(topic: str, org: str) -> str:
    """The tenant ``org``'s own counterpart of the shared input topic ``topic``."""
    return f"{topic}.tenant.{org}"


def tenant_topics(cfg: Config) -> list[tuple[str, str, str]]:
    """(org, its reports topic, its feedback topic) for each org in ``tenants.orgs``, in order."""
    k = cfg.kafka
    return [(org, tenant_topic(k.reports_topic, org), tenant_topic(k.feedback_topic, org))
            for org in cfg.tenants.orgs]


def _check_tenants(values: dict[str, Any]) -> None:
    """Org ids that cannot name a topic, twice the same, or a rule misspelt: one line.

    Checked at load, not when the topics are made: a bad id would otherwise
    surface as a missing topic at start, or a refused ACL, far from its cause.
    Kafka cannot tell '.' from '_' in topic names (its metric names merge
    them), so two ids differing only there could not both have topics.
    """
    t, k = values["tenants"], values["kafka"]
    seen: dict[str, str] = {}
    for org in t["orgs"]:
        if not isinstance(org, str) or not TENANT_ORG.fullmatch(org):
            raise ConfigError(f"tenants.orgs: {org!r} cannot be part of a Kafka topic name "
                              "(letters, digits, '.', '_' and '-' only)")
        clash = seen.get(org.replace(".", "_"))
        if clash is not None:
            same = "is listed twice" if clash == org else f"and {clash!r} differ only in '.' " \
                "and '_', which Kafka topic names cannot tell apart"
            raise ConfigError(f"tenants.orgs: {org!r} {same}")
        seen[org.replace(".", "_")] = org
        longest = max(k["reports_topic"], k["feedback_topic"], key=len)
        if len(tenant_topic(longest, org)) > MAX_TOPIC_CHARS:
            raise ConfigError(f"tenants.orgs: {org!r} makes the topic name "
                              f"{tenant_topic(longest, org)[:40]}... longer than Kafka's "
                              f"{MAX_TOPIC_CHARS} characters")
    for key, allowed in (("shared_reports", SHARED_REPORTS),
                         ("shared_feedback", SHARED_FEEDBACK)):
        if t[key] not in allowed:
            raise ConfigError(f"tenants.{key} must be one of {', '.join(allowed)}, "
                              f"not {t[key]!r}")

# What each number may be. Probabilities (scores, shares, bars of quality) are in [0, 1];
# sizes, counts and intervals the job divides by or allocates are > 0; the prior's weights
# may be anything; every other number is >= 0. Two-number lists are ranges (low <= high).
_PROBABILITY = re.compile(r"(_score|_share|label_noise|_protection|_collateral|"
                          r"_before_third_org|_auc|_min_trust|verdict_reliability\.\w+)$")
_POSITIVE = frozenset({
    "kafka.partitions", "kafka.connect_timeout_s", "kafka.consume_batch", "stream.shards",
    "stream.epoch_interval_s", "stream.merge_buffer", "stream.gc_gen0_threshold",
    "recovery.partitions", "recovery.chunk_grace_snapshots", "recovery.file_log_segments",
    "limits.max_message_bytes", "limits.max_string_len", "limits.max_list_len",
    "limits.max_verdicts", "limits.max_future_skew_s", "dedup.ids_per_shard",
    "state.idle_ttl_s", "state.max_devices", "state.max_orgs", "state.max_parents",
    "state.max_behaviors", "state.evidence_orgs", "state.max_accusers", "state.max_allowers",
    "state.sweep_interval_s", "models.lesson_max", "models.tree_max_depth",
    "models.tree_max_size_mib", "policy.global_window_s", "policy.device_block_ttl_s",
    "policy.org_block_ttl_s", "policy.global_block_ttl_s", "policy.trusted_block_ttl_s",
    "policy.reliability_prior_n", "policy.trust_prior_a", "policy.trust_prior_b",
    "policy.trust_max_orgs", "policy.signer_max_files", "telemetry.export_interval_s",
    "simulate.orgs", "simulate.benign_files", "simulate.duration_s", "simulate.reports",
    "serve.max_target_chars", "serve.request_timeout_s", "serve.page_rows",
    "serve.no_expiry_duration_s", "serve.catch_up_timeout_s", "serve.poll_s", "serve.retry_s",
    "tenants.partitions"})
_ANY_SIGN = ("models.prior_", "models.behavior_weights.")


def _check_ranges(values: dict[str, Any], path: str = "") -> None:
    """One line naming the key, the value and the allowed range, for the first that is off."""
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            if tuple(where.split(".")[-2:]) not in FREEFORM:
                _check_ranges(value, where)
            continue
        if where == "windows.sizes_s":
            if not value or any(v <= 0 for v in value) or value != sorted(set(value)):
                raise ConfigError(f"{where} = {value}: window lengths > 0, ascending")
            continue
        if isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            if value[0] > value[1] or value[0] < 0:
                raise ConfigError(f"{where} = {value}: a range [low, high] with "
                                  "0 <= low <= high")
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if where.startswith(_ANY_SIGN):
            continue
        if _PROBABILITY.search(where):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where} = {value}: must be in [0, 1]")
        elif where in _POSITIVE:
            if value <= 0:
                raise ConfigError(f"{where} = {value}: must be > 0")
        elif value < 0:
            raise ConfigError(f"{where} = {value}: must be >= 0")


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file at ``path`` (if any), then environment overrides."""
    values = _defaults()
    if path:
        p = Path(path)
        try:
            user = tomllib.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        _merge(values, user)
    _merge(values, _env_overrides(os.environ if env is None else env))
    if values["policy"]["global_window_s"] not in values["windows"]["sizes_s"]:
        raise ConfigError("policy.global_window_s must be one of windows.sizes_s")
    if values["stream"]["shards"] < 1:
        raise ConfigError("stream.shards must be at least 1")
    if values["stream"]["replicas"] < 0:
        raise ConfigError("stream.replicas must be 0 (one per worker) or more")
    _check_ranges(values)
    if values["models"]["class_balance_cap"] < 1:
        raise ConfigError(f"models.class_balance_cap = {values['models']['class_balance_cap']}:"
                          " must be >= 1 (1: verdicts unweighted)")
    if values["stream"]["input_order"] not in INPUT_ORDERS:
        raise ConfigError(f"stream.input_order must be one of {', '.join(INPUT_ORDERS)}, "
                          f"not {values['stream']['input_order']!r}")
    if values["stream"]["active_clock"] not in ACTIVE_CLOCKS:
        raise ConfigError(f"stream.active_clock must be one of {', '.join(ACTIVE_CLOCKS)}, "
                          f"not {values['stream']['active_clock']!r}")
    if values["stream"]["idle_partition_s"] < 0 or values["stream"]["merge_buffer"] < 1:
        raise ConfigError("stream.idle_partition_s must be ≥ 0 and stream.merge_buffer ≥ 1")
    _check_tenants(values)
    return Config(values)
