"""A seeded fleet simulator: the world rapidloop is built to protect, in miniature.

It exists so the engine can be exercised end to end without real sensors: a
day of traffic from organizations of very different sizes, benign software
whose popularity is heavy-tailed (so "seen in many orgs" is not by itself a
sign of malice), hard negatives (admin, backup, installer, remote-access and
scripting tools that *behave* like malware), malware campaigns that start in
one tenant and spread to others in bursts while rotating hashes, delayed and
slightly noisy sandbox verdicts (biased towards files that look suspicious, as
real submission pipelines are), rogue tenants that lie to poison the shared
verdict, and the dirt of real pipelines (redelivered duplicates, skewed clocks,
malformed lines).

Rogue tenants look like any other org (same id scheme, same benign traffic);
only ``world.json`` says who they are. A *flooder* sends bursts of fabricated,
maximally scary reports (and ``org_report`` malicious feedback) about popular
signed benign software from many of its devices, hoping its volume passes for
consensus and gets the files blocked for everyone. A *whitewasher* learns of
campaign hashes after they start (sometimes it was really hit, sometimes not)
and sends ``org_report`` benign feedback plus fabricated clean reports (no
behaviours, low verdicts, no or a forged signer), hoping to get real malware
unblocked for everyone. Every rogue line is a valid contract message: the
engine has to see through lies, not parse errors.

Worlds drawn per seed (:mod:`rapidloop.worldparams`) set a few more knobs:
hard negatives picked apart at a share of all reports and spread across orgs,
sandbox detonation by a coverage of hashes rather than two fixed shares,
devices whose sensors send no scores, and one org's sensors glitching for an
hour or two. Their defaults leave the fixed world byte-identical.

Design constraints and why:

* **Streaming.** :meth:`Simulator.events` is a generator in event-time order.
  Benign traffic is drawn as sorted uniform order statistics one at a time, so
  any number of reports costs O(1) memory; everything scheduled for later
  (campaign sightings, dropped payloads, verdicts, redeliveries) waits in a
  heap whose size is bounded by the number of hashes, not reports.
* **Deterministic.** Every random draw comes from ``random.Random`` instances
  seeded with strings (stable across processes, unlike ``hash()``), and the
  output is serialised with stable key order, so the same parameters give the
  same bytes. The benign *world* (orgs, fleets, software catalogue) depends on
  the seed only; the *traffic* (campaigns, sightings, ids) also on the start
  time, so a live run started "now" gets fresh campaigns and report ids while
  the benign world the engine has learned stays the same.
* **Exact volume.** One epoch (``duration_s`` of event time) carries exactly
  ``reports`` report lines (campaign sightings + rogue fabrications + benign
  sightings + redelivered duplicates + malformed lines), unless campaigns alone
  need more.
* **Truth stays outside.** Labels, campaigns and families never appear in the
  wire data; they are available from :meth:`Simulator.truth` for evaluation.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import heapq
import math
import os
import random
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from rapidloop.schemas.model import BEHAVIORS

# --- knobs not (yet) in [simulate] of defaults.toml -----------------------------------
# Each is read from the config section when present (``getattr`` with these
# defaults), so moving one into defaults.toml needs no code change.
DEFAULT_START = "2026-11-28T00:00:00Z"
LABEL_NOISE = 0.01              # share of sandbox verdicts that are wrong
ANALYST_SHARE = 0.1             # chance an analyst rules on a malicious hash (less for benign)
ORG_REPORT_SHARE = 0.01         # chance an org reports a hard negative it sees as a false positive
HARD_NEGATIVE_SHARE = 0.04      # share of the benign catalogue that behaves like malware
INHOUSE_SHARE = 0.15            # share of the benign catalogue private to one org
JITTER_SHARE = 0.05             # share of reports whose sensor clock is off...
JITTER_S = 5.0                  # ...by up to this many seconds either way
UPPERCASE_SHARE = 0.002         # share of reports carrying an upper-case sha256
ZIPF_S = 1.1                    # popularity exponent of benign software
MAX_CAMPAIGN_SHARE = 0.25       # campaigns are thinned to at most this share of reports
QUIET_SHARE = 0.35              # waves of statically loud families that barely behave
MAX_ROGUE_SHARE = 0.05          # rogue reports are thinned to at most this share of reports
ORG_SIZE_ALPHA = 1.0            # Pareto exponent of fleet sizes: many small orgs, a few huge
ROGUE_TARGET_RANKS = (3, 80)    # flooders attack benign files of these popularity ranks
SANDBOX_GAIN = 0.02             # sandbox_coverage: how fast the detonation rate corrects

REPORT = "report"
FEEDBACK = "feedback"

_SOURCES_BENIGN = (("antivirus", 0.35), ("edr", 0.25), ("behavior", 0.2),
                   ("asr", 0.1), ("network", 0.1))
_SOURCES_ACTIVE = (("behavior", 0.35), ("edr", 0.35), ("antivirus", 0.15),
                   ("asr", 0.1), ("network", 0.05))
_STATIC_ONLY_SOURCES = frozenset(("antivirus", "network"))
# SimParams fields that fixed worlds leave out of world.json unless set: their files
# stay byte-identical to those written before worlds were drawn per seed.
_DRAWN_ONLY = ("varied", "org_size_alpha", "hard_negative_reports", "hard_negative_zipf",
               "sandbox_coverage", "sandbox_bias", "silent_share", "glitch_mode",
               "glitch_behavior", "glitch_start_s", "glitch_s")
LOCAL_SHARE = 0.1               # share of an org's benign sightings of its in-house software

_VENDORS: dict[str, tuple[str, ...]] = {
    "Microsoft Corporation": ("teams", "outlook", "winword", "excel", "onedrive", "msedge",
                              "powerpnt", "code", "msteamsupdate", "defenderui"),
    "Google LLC": ("chrome", "googleupdate", "drivefs", "chrome_proxy"),
    "Adobe Inc.": ("acrord32", "acrobat", "adobe_updater", "creativecloud", "photoshop"),
    "Mozilla Corporation": ("firefox", "maintenanceservice", "plugin-container"),
    "Zoom Video Communications, Inc.": ("zoom", "zoomoutlookplugin", "cptinstall"),
    "Slack Technologies, LLC": ("slack", "slack_helper"),
    "Oracle America, Inc.": ("java", "javaw", "jp2launcher"),
    "JetBrains s.r.o.": ("idea64", "pycharm64", "toolbox", "fsnotifier"),
    "Dropbox, Inc": ("dropbox", "dropboxupdate"),
    "Igor Pavlov": ("7z", "7zfm", "7zg"),
    "VideoLAN": ("vlc",),
    "Python Software Foundation": ("python", "pythonw", "py"),
    "Notepad++": ("notepad++", "gup"),
    "Spotify AB": ("spotify", "spotifylauncher"),
    "Valve Corp.": ("steam", "steamwebhelper"),
    "Citrix Systems, Inc.": ("receiver", "wfica32", "selfservice"),
    "Cisco Systems, Inc.": ("vpnui", "vpnagent", "webex"),
    "Intel Corporation": ("igfxem", "esrv", "intel_dsa"),
    "NVIDIA Corporation": ("nvcontainer", "nvdisplay.container", "nvidia_share"),
    "Apple Inc.": ("itunes", "icloud", "applemobiledeviceservice"),
}
_UNSIGNED_UTILS = ("putty", "keepass", "winscp", "gimp", "obs64", "audacity", "paint.net",
                   "greenshot", "everything", "sumatrapdf", "filezilla", "hwmonitor")
_COMPONENT = ("", "", "", "_helper", "_updater", "svc", "64", "host", "_crashpad", "_launcher")

# Hard negatives: legitimate tools whose behaviours look malicious. Their optional
# behaviours are generous on purpose: how *many* alarming things a file did must
# not by itself separate a backup agent from ransomware or PsExec from a worm.
# role -> (names with signer or None, core behaviours, optional behaviours, file type, paths)
_HARD: dict[str, tuple[tuple[tuple[str, str | None], ...], tuple[str, ...], tuple[str, ...],
                       str, tuple[str, ...]]] = {
    "admin": ((("PsExec64.exe", "Microsoft Corporation"), ("PsExec.exe", "Microsoft Corporation"),
               ("procdump64.exe", "Microsoft Corporation"),
               ("advanced_ip_scanner.exe", "Famatech Corp."), ("nmap.exe", "Insecure.Com LLC"),
               ("adfind.exe", None), ("wmic_inventory.exe", None)),
              ("discovery", "lateral_movement"), ("credential_dumping", "privilege_escalation",
                                                  "persistence", "defense_evasion"),
              "pe", ("system", "program_files", "user")),
    "backup": ((("VeeamAgent.exe", "Veeam Software Group GmbH"),
                ("TrueImageService.exe", "Acronis International GmbH"),
                ("rclone.exe", None), ("restic.exe", None), ("wbadmin_helper.exe", None)),
               ("ransomware_encryption",), ("defense_evasion", "exfiltration", "discovery",
                                            "persistence"),
               "pe", ("program_files", "system")),
    "installer": ((("setup.exe", "Microsoft Corporation"), ("installer_x64.exe", None),
                   ("ChromeSetup.exe", "Google LLC"), ("vcredist_x64.exe", "Microsoft Corporation"),
                   ("AdobeAcrobatInstaller.exe", "Adobe Inc."), ("driver_setup.exe", None)),
                  ("persistence",), ("privilege_escalation", "defense_evasion",
                                     "process_injection", "discovery"),
                  "pe", ("downloads", "temp")),
    "scripting": ((("logon.ps1", None), ("deploy_agents.ps1", None), ("inventory.vbs", None),
                   ("map_drives.bat", None), ("printer_setup.vbs", None),
                   ("cleanup_temp.ps1", None)),
                  ("obfuscated_script",), ("discovery", "office_child_process", "persistence",
                                           "lateral_movement", "c2_beacon"),
                  "script", ("user", "temp", "other")),
    "remote_access": ((("AnyDesk.exe", "philandro Software GmbH"),
                       ("TeamViewer_Service.exe", "TeamViewer Germany GmbH"),
                       ("ScreenConnect.ClientService.exe", "ConnectWise, LLC"),
                       ("rustdesk.exe", None)),
                      ("c2_beacon",), ("persistence", "discovery", "privilege_escalation",
                                       "exfiltration"),
                      "pe", ("program_files", "downloads")),
}


@dataclass(frozen=True, slots=True)
class Family:
    """A malware family: how its files look and what they do."""

    name: str
    core: tuple[str, ...]
    optional: tuple[str, ...]
    static: tuple[float, float]          # static_ml range; low means evasive
    signature: bool                      # AV signatures catch up after a few hours
    file_type: str
    paths: tuple[str, ...]
    names: tuple[str, ...]
    signed_share: float = 0.0            # stolen or fraudulent certificates
    payload: str | None = None           # family of the payload a dropper drops


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("ransomware", ("ransomware_encryption", "defense_evasion"),
           ("privilege_escalation", "persistence", "discovery"), (0.7, 0.99), True, "pe",
           ("temp", "downloads", "user"), ("invoice_{n}.exe", "svchost{n}.exe", "locker.exe",
                                           "Rechnung_{n}.pdf.exe")),
    Family("stealer", ("credential_dumping", "exfiltration", "c2_beacon"),
           ("defense_evasion", "discovery"), (0.05, 0.35), False, "pe",
           ("downloads", "temp", "user"), ("CrackedSetup_{n}.exe", "chrome_update.exe",
                                           "discord_patch.exe")),
    Family("loader", ("persistence", "process_injection"),
           ("obfuscated_script", "office_child_process", "defense_evasion"), (0.3, 0.7), True,
           "document", ("downloads", "user"), ("Invoice_{n}.docm", "Счёт_{n}.xlsm",
                                                "shipping_{n}.docm"),
           payload="backdoor"),
    Family("dropper", ("persistence", "process_injection"), ("obfuscated_script",),
           (0.2, 0.6), False, "script", ("temp", "downloads"), ("update_{n}.js", "doc_{n}.vbs",
                                                                 "setup_{n}.ps1"),
           payload="stealer"),
    Family("backdoor", ("c2_beacon", "persistence", "process_injection"), ("discovery",),
           (0.02, 0.3), False, "pe", ("program_files", "user", "temp"),
           ("OneDriveSync.exe", "svc_host_{n}.exe", "msupdate.exe"), signed_share=0.3),
    Family("worm", ("lateral_movement", "discovery", "privilege_escalation"), ("c2_beacon",),
           (0.75, 0.99), True, "pe", ("system", "temp"), ("wuauclt_{n}.exe", "lsass_{n}.exe")),
    Family("fileless", ("obfuscated_script", "c2_beacon", "defense_evasion"),
           ("credential_dumping", "discovery"), (0.03, 0.25), False, "script",
           ("temp", "user"), ("{n}.ps1", "wsus_{n}.vbs")),
)}
_CAMPAIGN_FAMILIES = ("ransomware", "stealer", "loader", "dropper", "backdoor", "worm", "fileless")
_STOLEN_SIGNERS = ("Shenzhen Yunda Tech Co., Ltd.", "TOV Softline Plus", "Nordic Digital ApS")
# What a flooder claims: the behaviours most policies block on sight, plus some colour.
_SCARY = ("ransomware_encryption", "credential_dumping", "process_injection")
_SCARY_EXTRA = ("defense_evasion", "c2_beacon", "persistence", "lateral_movement")
# What a whitewasher forges: a signer that would make a file look vendor-shipped.
_FORGED_SIGNERS = ("Microsoft Corporation", "Google LLC", "Adobe Inc.", "Zoom Video "
                   "Communications, Inc.")


class SimulationError(ValueError):
    """Parameters the simulator cannot work with."""


class Event(NamedTuple):
    """One line of output: ``kind`` is REPORT or FEEDBACK, ``t`` the scheduled event time."""

    kind: str
    t: float
    key: bytes | None
    value: bytes
    malformed: bool
    duplicate: bool


# --- time ------------------------------------------------------------------------------

_DAY_CACHE: dict[int, str] = {}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def format_ts(t: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``; arithmetic, because strftime is the hot path."""
    ms = math.floor(t * 1000.0 + 0.5)
    sec, milli = divmod(ms, 1000)
    day, rem = divmod(sec, 86400)
    date = _DAY_CACHE.get(day)
    if date is None:
        date = _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        _DAY_CACHE[day] = date
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{date}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


def parse_ts(text: str) -> float:
    """An RFC 3339 time as epoch seconds; a time without offset is taken as UTC."""
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SimulationError(f"not an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


# --- parameters ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SimParams:
    """Everything that shapes one simulated world; ``epochs=None`` means forever."""

    seed: int = 1
    start: float = field(default_factory=lambda: parse_ts(DEFAULT_START))
    orgs: int = 300
    devices_min: int = 10
    devices_max: int = 5000
    benign_files: int = 3000
    campaigns: int = 12
    hashes_per_campaign: int = 5
    duration_s: float = 86400.0
    reports: int = 200000
    sandbox_share: float = 0.1              # hashes whose first report looks ordinary
    sandbox_suspicious_share: float = 0.8   # hashes whose first report looks suspicious
    sandbox_delay_s: tuple[float, float] = (120.0, 600.0)   # cloud detonation: minutes
    malformed_share: float = 0.001
    duplicate_share: float = 0.002
    label_noise: float = LABEL_NOISE
    analyst_share: float = ANALYST_SHARE
    org_report_share: float = ORG_REPORT_SHARE
    hard_negative_share: float = HARD_NEGATIVE_SHARE
    inhouse_share: float = INHOUSE_SHARE
    jitter_share: float = JITTER_SHARE
    jitter_s: float = JITTER_S
    uppercase_share: float = UPPERCASE_SHARE
    rogue_flooders: int = 1                 # orgs flooding fake reports about benign files
    rogue_whitewashers: int = 1             # orgs vouching for real malware
    rogue_targets: int = 5                  # popular benign files each flooder attacks
    rogue_flood_reports: int = 3000         # fabricated reports per flooder per duration
    rogue_whitewash_reports: int = 1200     # fabricated clean reports per whitewasher per duration
    rogue_whitewash_share: float = 0.5      # share of campaign hashes a whitewasher defends
    rogue_devices: int = 60                 # devices of its own a rogue reports from (at most)
    epochs: int | None = 1
    # Knobs of worlds drawn per seed (rapidloop.worldparams). Their defaults reproduce the
    # one fixed world, and world.json lists them only when a world was drawn or one is set.
    varied: bool = False                    # drawn by worldparams.draw_world
    org_size_alpha: float = ORG_SIZE_ALPHA  # Pareto shape of fleet sizes
    hard_negative_reports: float | None = None  # share of all reports about hard negatives
    hard_negative_zipf: float = ZIPF_S      # ...and their popularity exponent among themselves
    sandbox_coverage: float | None = None   # share of hashes detonated (replaces the two shares)
    sandbox_bias: float = 8.0               # ...this many times likelier when suspicious-looking
    silent_share: float = 0.0               # devices whose sensors send no scores
    glitch_mode: str | None = None          # "static_ml" (scores near 1) or "behavior"...
    glitch_behavior: str | None = None      # ...(this flag on every report) of one org's sensors
    glitch_start_s: float = 0.0             # from start, for glitch_s of event time
    glitch_s: float = 0.0

    @classmethod
    def from_config(cls, section: Any, **overrides: Any) -> SimParams:
        """Parameters from ``cfg.simulate``; keys it lacks keep the module defaults."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in ("seed", "start", "epochs"):
                continue
            try:
                values[name] = getattr(section, name)
            except AttributeError:
                continue
        if "sandbox_delay_s" in values:
            delay = values["sandbox_delay_s"]
            if not (isinstance(delay, (list, tuple)) and len(delay) == 2):
                raise SimulationError("simulate.sandbox_delay_s must be [min, max] seconds")
            values["sandbox_delay_s"] = (float(delay[0]), float(delay[1]))
        if "start" in overrides and isinstance(overrides["start"], str):
            overrides["start"] = parse_ts(overrides["start"])
        values.update({k: v for k, v in overrides.items() if v is not None or k == "epochs"})
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise SimulationError naming the first unusable setting."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SimulationError(what)
        need(self.orgs >= 1, f"orgs must be at least 1 (got {self.orgs})")
        need(1 <= self.devices_min <= self.devices_max,
             f"need 1 <= devices_min <= devices_max (got {self.devices_min}, {self.devices_max})")
        need(self.benign_files >= 1, f"benign_files must be at least 1 (got {self.benign_files})")
        need(self.campaigns >= 0, f"campaigns must be >= 0 (got {self.campaigns})")
        need(self.hashes_per_campaign >= 1,
             f"hashes_per_campaign must be at least 1 (got {self.hashes_per_campaign})")
        need(self.duration_s > 0, f"duration must be positive (got {self.duration_s:g}s)")
        need(self.reports >= 1, f"reports must be at least 1 (got {self.reports})")
        lo, hi = self.sandbox_delay_s
        need(0 <= lo <= hi, f"sandbox_delay_s must be [min, max] with 0 <= min <= max "
                            f"(got [{lo:g}, {hi:g}])")
        for name in ("sandbox_share", "sandbox_suspicious_share", "malformed_share",
                     "duplicate_share", "label_noise", "analyst_share", "org_report_share",
                     "hard_negative_share", "inhouse_share", "jitter_share", "uppercase_share",
                     "rogue_whitewash_share"):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be within [0, 1] (got {value})")
        need(self.malformed_share + self.duplicate_share < 0.5,
             "malformed_share + duplicate_share must stay below 0.5")
        need(self.jitter_s >= 0, f"jitter_s must be >= 0 (got {self.jitter_s})")
        for name in ("rogue_flooders", "rogue_whitewashers", "rogue_targets",
                     "rogue_flood_reports", "rogue_whitewash_reports"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0 "
                                                        f"(got {value})")
        need(self.rogue_devices >= 1, f"rogue_devices must be at least 1 "
                                      f"(got {self.rogue_devices})")
        need(self.epochs is None or self.epochs >= 1, "epochs must be at least 1")
        need(math.isfinite(self.start), "start must be a finite time")
        for name in ("hard_negative_reports", "sandbox_coverage", "silent_share"):
            value = getattr(self, name)
            need(value is None or 0.0 <= value <= 1.0,
                 f"{name} must be within [0, 1] (got {value})")
        need(self.org_size_alpha > 0, f"org_size_alpha must be positive "
                                      f"(got {self.org_size_alpha})")
        need(self.hard_negative_zipf >= 0, f"hard_negative_zipf must be >= 0 "
                                           f"(got {self.hard_negative_zipf})")
        need(self.sandbox_bias >= 1, f"sandbox_bias must be at least 1 (got {self.sandbox_bias})")
        need(self.glitch_mode in (None, "static_ml", "behavior"),
             f"glitch_mode must be static_ml or behavior (got {self.glitch_mode!r})")
        need(self.glitch_mode != "behavior" or self.glitch_behavior in BEHAVIORS,
             f"glitch_behavior must be a behaviour (got {self.glitch_behavior!r})")
        need(self.glitch_start_s >= 0 and self.glitch_s >= 0,
             "glitch_start_s and glitch_s must be >= 0")


# --- the world -------------------------------------------------------------------------

class _File:
    """One distinct hash: what it is (truth), how sensors see it, and what was seen."""

    __slots__ = ("av", "behaviors_core", "behaviors_opt", "campaign", "core_p", "family",
                 "file", "first_seen", "first_t", "home_org", "kind", "label", "last_seen",
                 "min_one", "noisy", "opt_p", "orgs", "parent", "quiet", "reports", "rogue",
                 "role", "sha", "sha_b", "sha_upper", "sig_lag", "sources", "static", "wave")

    def __init__(self, sha: str, label: str, kind: str, file: dict[str, Any], static: float,
                 *, core: tuple[str, ...] = (), optional: tuple[str, ...] = (),
                 core_p: float = 0.0, opt_p: float = 0.0, min_one: bool = False,
                 av: float = 0.0, sig_lag: float | None = None,
                 sources: tuple[tuple[str, ...], list[float]] | None = None) -> None:
        self.sha = sha
        self.sha_b = sha.encode()
        self.sha_upper = sha.upper()
        self.label = label
        self.kind = kind
        self.file = file
        self.static = static
        self.behaviors_core = core
        self.behaviors_opt = optional
        self.core_p = core_p
        self.opt_p = opt_p
        self.min_one = min_one
        self.av = av
        self.sig_lag = sig_lag
        self.sources = sources
        self.role: str | None = None
        self.family: str | None = None
        self.campaign: str | None = None
        self.wave: int | None = None
        self.parent: str | None = None
        self.home_org: int | None = None
        self.rogue: str | None = None          # "target" (flooded) or "whitewashed"
        self.quiet = False                     # a malware variant that barely behaves
        self.first_seen: float | None = None   # written ts of the first valid report
        self.first_t: float | None = None
        self.last_seen: float | None = None
        self.reports = 0
        self.orgs: set[int] = set()
        self.noisy = 0

    def truth(self, org_ids: list[str]) -> dict[str, Any]:
        return {
            "sha256": self.sha, "label": self.label, "kind": self.kind, "role": self.role,
            "family": self.family, "campaign": self.campaign, "wave": self.wave,
            "parent_sha256": self.parent, "name": self.file["name"],
            "signer": self.file["signer"],
            "home_org": org_ids[self.home_org] if self.home_org is not None else None,
            "first_seen": format_ts(self.first_seen) if self.first_seen is not None else None,
            "last_seen": format_ts(self.last_seen) if self.last_seen is not None else None,
            "reports": self.reports, "orgs": len(self.orgs), "noisy_verdicts": self.noisy,
            "rogue": self.rogue, "quiet": self.quiet,
        }


def _cum(weights: list[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def _source_table(pairs: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ...], list[float]]:
    return tuple(p[0] for p in pairs), _cum([p[1] for p in pairs])


_BENIGN_SOURCES = _source_table(_SOURCES_BENIGN)
_ACTIVE_SOURCES = _source_table(_SOURCES_ACTIVE)


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _size(rng: random.Random, median: float) -> int:
    return max(512, int(median * math.exp(rng.gauss(0.0, 1.0))))


@dataclass(slots=True)
class SimStats:
    """What was emitted; the CLI's summary line and the world file come from here."""

    reports: int = 0
    report_malformed: int = 0
    report_duplicates: int = 0
    feedback: int = 0
    feedback_malformed: int = 0
    feedback_duplicates: int = 0
    feedback_by_source: Counter[str] = field(default_factory=Counter)
    malformed_by_reason: Counter[str] = field(default_factory=Counter)
    noisy_verdicts: int = 0
    campaign_reports: int = 0
    rogue_reports: int = 0
    rogue_feedback: int = 0
    first_t: float | None = None
    last_t: float | None = None
    epochs: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feedback_by_source"] = dict(sorted(self.feedback_by_source.items()))
        out["malformed_by_reason"] = dict(sorted(self.malformed_by_reason.items()))
        out["first_t"] = format_ts(self.first_t) if self.first_t is not None else None
        out["last_t"] = format_ts(self.last_t) if self.last_t is not None else None
        return out


class Simulator:
    """A seeded world and its event stream; call :meth:`events` once."""

    def __init__(self, params: SimParams) -> None:
        params.validate()
        self.p = params
        self.stats = SimStats()
        world = random.Random(f"rapidloop-world:{params.seed}")
        self._build_orgs(world)
        self._build_catalog(world)
        # A separate stream, so rogue knobs never reshape the benign world.
        self._build_rogues(random.Random(f"rapidloop-rogues:{params.seed}"))
        self._build_sensor_quirks(params)
        self._hard_q: float | None = None     # per benign pick, set per epoch (drawn worlds)
        self._n_suspicious = self._n_calm = 0  # first sightings so far (sandbox_coverage)...
        self._given = 0.0                      # ...and the sum of their detonation chances
        start_ms = math.floor(params.start * 1000.0 + 0.5)
        self._traffic_key = f"{params.seed}:{start_ms}"
        tag = hashlib.blake2b(self._traffic_key.encode(), digest_size=4).hexdigest()
        self._report_prefix = f"r-{tag}-"
        self._feedback_prefix = f"f-{tag}-"
        self._campaign_files: list[_File] = []
        self.campaigns: list[dict[str, Any]] = []
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._n_reports = 0
        self._n_feedback = 0
        self._recent: list[tuple[bytes, bytes | None, float]] = []
        self._rng = random.Random(f"rapidloop-traffic:{self._traffic_key}")

    # -- world construction (seed only) --

    def _build_orgs(self, rng: random.Random) -> None:
        """Fleet sizes from a Pareto law truncated to [devices_min, devices_max].

        Real customer bases are heavy-tailed: most tenants are small businesses,
        a few are enterprises with thousands of endpoints. That matters to the
        engine: a big org's volume must not read as consensus, and a small
        org's single sighting must still count as an independent witness.
        """
        p = self.p
        lo, hi = p.devices_min, p.devices_max
        sizes = [max(lo, min(hi, round(lo * (1.0 - rng.random()) ** (-1.0 / p.org_size_alpha))))
                 for _ in range(p.orgs)]
        if p.orgs >= 3:  # always one big tenant: heavy tails need a head
            sizes[rng.randrange(p.orgs)] = hi
        width = max(3, len(str(p.orgs - 1)))
        self.org_ids = [f"org-{i:0{width}d}" for i in range(p.orgs)]
        self.org_sizes = sizes
        self._org_cum = _cum([float(s) for s in sizes])
        self._device_prefix = [f"{o}-dev-" for o in self.org_ids]

    def _build_catalog(self, rng: random.Random) -> None:
        p = self.p
        n = p.benign_files
        n_hard = min(n, max(1, round(n * p.hard_negative_share))) if p.hard_negative_share else 0
        n_inhouse = min(n - n_hard, round(n * p.inhouse_share))
        n_apps = n - n_hard - n_inhouse
        vendors = list(_VENDORS.items())
        apps: list[_File] = []
        for _ in range(n_apps):
            if rng.random() < 0.1:
                product, signer = rng.choice(_UNSIGNED_UTILS), None
            else:
                signer, products = vendors[min(len(vendors) - 1,
                                               int(len(vendors) * rng.random() ** 1.5))]
                product = rng.choice(products)
            comp = rng.choice(_COMPONENT)
            ext = "dll" if comp in ("_crashpad", "host") and rng.random() < 0.5 else "exe"
            name = f"{product}{comp}.{ext}"
            updater = comp == "_updater" or "update" in product
            f = _File(_sha(rng), "benign", "app",
                      {"name": name, "size": _size(rng, 3e6), "type": "pe",
                       "signed": signer is not None, "signer": signer,
                       "path": "program_files" if rng.random() < 0.8 else
                       rng.choice(("system", "user", "downloads"))},
                      round(rng.random() ** 4 * (0.35 if signer else 0.5), 3),
                      optional=("persistence",) if updater else (),
                      opt_p=0.5 if updater else 0.0, sources=_BENIGN_SOURCES)
            f.role = "updater" if updater else "app"
            apps.append(f)
        hard: list[_File] = []
        roles = list(_HARD)
        for i in range(n_hard):
            role = roles[i % len(roles)]
            names, core, optional, ftype, paths = _HARD[role]
            name, signer = rng.choice(names)
            hot = rng.random() < 0.4  # moderately high static verdicts: the hardest negatives
            f = _File(_sha(rng), "benign", "hard_negative",
                      {"name": name, "size": _size(rng, 8e5), "type": ftype,
                       "signed": signer is not None, "signer": signer,
                       "path": rng.choice(paths)},
                      round(rng.uniform(0.45, 0.8) if hot else rng.uniform(0.05, 0.45), 3),
                      core=core, optional=optional, core_p=0.75, opt_p=0.35,
                      av=0.5 if rng.random() < 0.3 else 0.0, sources=_ACTIVE_SOURCES)
            f.role = role
            hard.append(f)
        # Popularity ranks: a few hard negatives sit among the most popular files (seen
        # in every org, so prevalence alone cannot clear or condemn a file); the rest are
        # spread through the long tail like any other software.
        ranked = apps[:]
        rng.shuffle(ranked)
        n_top = max(1, len(hard) // 10) if hard else 0
        for j, f in enumerate(hard):
            pos = (rng.randint(min(5, len(ranked)), min(100, len(ranked))) if j < n_top
                   else rng.randrange(len(ranked) + 1))
            ranked.insert(pos, f)
        self._global = ranked
        self._global_cum = _cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(ranked))])
        # What benign sightings pick from. Drawn worlds (hard_negative_reports set) pick
        # hard negatives apart, at a drawn share of all reports and with a popularity law
        # of their own: admin and remote-access tools run in many orgs at once.
        self._pick_list, self._pick_cum = self._global, self._global_cum
        self._hard_list: list[_File] = []
        self._hard_cum: list[float] = []
        apps_only = [f for f in ranked if f.kind != "hard_negative"]
        if p.hard_negative_reports is not None and hard and apps_only:
            order = hard[:]
            random.Random(f"rapidloop-hard:{p.seed}").shuffle(order)
            self._hard_list = order
            self._hard_cum = _cum([1.0 / (r + 1) ** p.hard_negative_zipf
                                   for r in range(len(order))])
            self._pick_list = apps_only
            self._pick_cum = _cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(apps_only))])
        # In-house software: private to one org (weighted by fleet size).
        local: list[list[_File]] = [[] for _ in range(p.orgs)]
        for _ in range(n_inhouse):
            org = bisect_right(self._org_cum, rng.random() * self._org_cum[-1])
            org = min(org, p.orgs - 1)
            signed = rng.random() < 0.4
            signer = f"{self.org_ids[org]} Internal CA" if signed else None
            tool = rng.choice(("hr_portal", "erp_client", "timesheet", "labelprinter", "sync",
                               "crm_addin", "build_agent", "kiosk"))
            f = _File(_sha(rng), "benign", "inhouse",
                      {"name": f"{tool}_{rng.randrange(100)}.exe", "size": _size(rng, 1.5e6),
                       "type": "pe", "signed": signed, "signer": signer,
                       "path": rng.choice(("program_files", "other", "user"))},
                      round(rng.random() ** 2 * 0.5, 3), sources=_BENIGN_SOURCES)
            f.role = "inhouse"
            f.home_org = org
            local[org].append(f)
        self._local = local
        self._local_cum = [_cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(fs))])
                           for fs in local]
        # share of benign sightings that pick from the global catalogue, not in-house
        with_local = sum(size for size, fs in zip(self.org_sizes, local, strict=True) if fs)
        self._global_share = 1.0 - LOCAL_SHARE * with_local / sum(self.org_sizes)
        self.benign = [*apps, *hard, *(f for fs in local for f in fs)]

    def _build_rogues(self, rng: random.Random) -> None:
        """Pick the rogue tenants, the devices they report from and the flooders' targets.

        Rogues are drawn among orgs big enough to report from ``rogue_devices``
        devices (a flood from one laptop would be trivially discounted) and take
        at most a third of all orgs, so a tiny world keeps honest majorities.
        Flooders attack popular, mostly signed software: that is what hurts
        most when blocked everywhere, and what a naive consensus rule would
        happily block on volume.
        """
        p = self.p
        cap = p.orgs // 3
        n_flood = min(p.rogue_flooders, cap)
        n_white = min(p.rogue_whitewashers, cap - n_flood)
        order = sorted(range(p.orgs), key=lambda o: (self.org_sizes[o] < p.rogue_devices,
                                                     rng.random()))
        chosen = order[:n_flood + n_white]
        self._rogue_devices: dict[int, list[int]] = {
            o: sorted(rng.sample(range(self.org_sizes[o]),
                                 min(self.org_sizes[o], p.rogue_devices)))
            for o in chosen}
        lo, hi = ROGUE_TARGET_RANKS
        pool = [f for f in self._global[lo:hi] if f.kind == "app"] or \
            [f for f in self._global if f.kind == "app"] or list(self._global)
        signed = [f for f in pool if f.file["signed"]]
        unsigned = [f for f in pool if not f.file["signed"]]
        taken: set[str] = set()
        self._flooders: list[tuple[int, list[_File]]] = []
        for org in chosen[:n_flood]:
            targets: list[_File] = []
            for _ in range(p.rogue_targets):
                # mostly signed: the software every tenant runs and trusts
                prefer = signed if (rng.random() < 0.85 or not unsigned) else unsigned
                free = [f for f in prefer if f.sha not in taken] or \
                    [f for f in pool if f.sha not in taken]
                if not free:
                    break
                f = free[int(rng.random() * len(free))]
                taken.add(f.sha)
                targets.append(f)
            self._flooders.append((org, targets))
        self._whitewashers = chosen[n_flood:]
        self._attacked: dict[str, None] = {}      # insertion-ordered sets of sha256
        self._defended: dict[str, None] = {}

    def _build_sensor_quirks(self, p: SimParams) -> None:
        """Drawn worlds' sensor quirks, each from a random stream of its own.

        Silent devices (``silent_share`` of every org's fleet, by a hash of the
        device number) send reports without scores. A glitch makes one honest
        org's sensors misbehave for ``glitch_s`` of event time: ``static_ml``
        near 1.0, or ``glitch_behavior``, on every report. The org is one of
        the tenth biggest honest orgs, so the glitch is big enough to be
        noticed. The files stay what they are: a benign file reported during
        a glitch is benign in truth.
        """
        self._silent_below = int(p.silent_share * 2 ** 32)
        self._silent_salt: list[int] = []
        if self._silent_below:
            rng = random.Random(f"rapidloop-silent:{p.seed}")
            self._silent_salt = [rng.getrandbits(32) for _ in range(p.orgs)]
        self._glitch_org = -1
        self._glitch_t0 = self._glitch_t1 = p.start
        self._glitched = 0
        if p.glitch_mode is not None and p.glitch_s > 0:
            rng = random.Random(f"rapidloop-glitch:{p.seed}")
            honest = sorted((o for o in range(p.orgs) if o not in self._rogue_devices),
                            key=lambda o: -self.org_sizes[o]) or list(range(p.orgs))
            self._glitch_org = rng.choice(honest[:max(1, len(honest) // 10)])
            self._glitch_t0 = p.start + p.glitch_start_s
            self._glitch_t1 = self._glitch_t0 + p.glitch_s
        self._quirks = bool(self._silent_below) or self._glitch_org >= 0

    # -- campaigns (seed + start + epoch) --

    def _plan_epoch(self, epoch: int, rng: random.Random
                    ) -> tuple[int, list[tuple[int, list[_File], float]]]:
        """Schedule this epoch's campaigns; returns the number of reports planned and what
        the whitewashers will defend (rogue, hashes, wave start)."""
        p = self.p
        e0 = p.start + epoch * p.duration_s
        e1 = e0 + p.duration_s
        hour = 3600.0 * min(1.0, p.duration_s / 86400.0)  # a "scaled hour" for short runs
        families = list(_CAMPAIGN_FAMILIES)
        rng.shuffle(families)
        planned: list[tuple[float, _File, int, int, str, bool]] = []
        defend: list[tuple[int, list[_File], float]] = []   # whitewasher, hashes, wave start
        for c in range(p.campaigns):
            fam = FAMILIES[families[c % len(families)]]
            cid = f"c{epoch}-{c:02d}"
            origin = rng.randrange(p.orgs)
            t0 = e0 + rng.uniform(0.02, 0.45) * p.duration_s
            life = rng.uniform(0.15, 0.35) * p.duration_s
            waves = []
            pool = [o for o in range(p.orgs) if o != origin]
            for w in range(p.hashes_per_campaign):
                # Quiet variants (sandbox-aware, sleeping) of families static ML catches
                # show few or no behaviours: caught by static scores, not by what they do.
                quiet = fam.static[1] >= 0.7 and rng.random() < QUIET_SHARE
                f = self._malicious_file(rng, fam, cid, w, quiet=quiet)
                payload = (self._malicious_file(rng, FAMILIES[fam.payload], cid, w, parent=f)
                           if fam.payload else None)
                t_w = t0 + life * w / p.hashes_per_campaign + rng.uniform(0, 0.1) * hour
                n_orgs = min(p.orgs, 3 + w + rng.randint(0, 2))
                others = rng.sample(pool, n_orgs - 1)
                spread = rng.uniform(1.0, 4.0) * hour
                offsets = sorted(rng.uniform(0.05, 1.0) * spread for _ in others)
                hits = [(origin, 0.0), *zip(others, offsets, strict=True)]
                for ww in self._whitewashers:
                    if rng.random() < p.rogue_whitewash_share:
                        # sometimes the whitewasher was really hit; sometimes it only heard
                        if rng.random() < 0.5 and all(o != ww for o, _ in hits):
                            hits.append((ww, rng.uniform(0.05, 1.0) * spread))
                        defend.append((ww, [f] if payload is None else [f, payload], t_w))
                for org, off in hits:
                    self._plan_burst(rng, planned, f, payload, org, t_w + off, hour)
                waves.append({"wave": w, "sha256": f.sha,
                              "payload_sha256": payload.sha if payload else None,
                              "start": format_ts(t_w),
                              "orgs": [self.org_ids[o] for o, _ in hits]})
            self.campaigns.append({"campaign": cid, "family": fam.name,
                                   "origin_org": self.org_ids[origin], "start": format_ts(t0),
                                   "waves": waves})
        planned = [e for e in planned if e[0] < e1]
        cap = int(p.reports * MAX_CAMPAIGN_SHARE)
        if len(planned) > cap:  # tiny runs: keep each hash's first sighting per org
            essential = [e for e in planned if e[5]]
            rest = [e for e in planned if not e[5]]
            keep = rng.sample(rest, max(0, min(len(rest), cap - len(essential))))
            planned = sorted(essential + keep, key=lambda e: e[0])
        for t, f, org, dev, source, _ in planned:
            self._push(t, 0, (f, org, dev, source))
        return len(planned), defend

    def _plan_rogues(self, epoch: int, rng: random.Random, defend: list[tuple[int, list[_File],
                                                                               float]]) -> int:
        """Schedule this epoch's rogue reports and feedback; returns the reports planned.

        Each (rogue, hash, burst) keeps its first report through thinning, and
        its ``org_report`` comes after that report, so a rogue's feedback never
        precedes a sighting of the file it is about.
        """
        p = self.p
        e0 = p.start + epoch * p.duration_s
        e1 = e0 + p.duration_s
        hour = 3600.0 * min(1.0, p.duration_s / 86400.0)
        reports: list[tuple[float, tuple[_File, int, int, str, str], bool]] = []
        feedback: list[tuple[float, tuple[_File, str, str, int]]] = []
        for org, targets in self._flooders:
            if not targets or not p.rogue_flood_reports:
                continue
            devs = self._rogue_devices[org]
            n_bursts = rng.randint(4, 10)
            weights = [0.2 + rng.random() for _ in range(n_bursts)]
            total = sum(weights)
            reported: set[str] = set()
            for w in weights:
                tb = e0 + rng.uniform(0.03, 0.95) * p.duration_s
                length = rng.uniform(0.1, 0.5) * hour
                n = max(len(targets), round(p.rogue_flood_reports * w / total))
                for f in targets:   # every burst names every target at least once
                    t = tb + rng.uniform(0.0, 60.0)
                    dev = devs[int(rng.random() * len(devs))]
                    reports.append((t, (f, org, dev, rng.choice(("behavior", "edr")), "flood"),
                                    True))
                    if f.sha not in reported or rng.random() < 0.3:
                        reported.add(f.sha)
                        feedback.append((t + rng.uniform(60.0, 600.0),
                                         (f, "malicious", "org_report", org)))
                for _ in range(n - len(targets)):
                    f = targets[int(rng.random() * len(targets))]
                    dev = devs[int(rng.random() * len(devs))]
                    src = rng.choice(("behavior", "edr", "antivirus"))
                    reports.append((tb + rng.random() * length, (f, org, dev, src, "flood"),
                                    False))
        n_hashes = Counter[int]()
        for ww, files, _ in defend:
            n_hashes[ww] += len(files)
        for ww, files, t_w in defend:
            devs = self._rogue_devices[ww]
            per_hash = max(3, round(p.rogue_whitewash_reports / n_hashes[ww]))
            for f in files:
                t_learn = t_w + rng.uniform(0.5, 3.0) * hour   # it hears of the file late
                reports.append((t_learn, (f, ww, devs[int(rng.random() * len(devs))],
                                          "antivirus", "clean"), True))
                feedback.append((t_learn + rng.uniform(60.0, 900.0),
                                 (f, "benign", "org_report", ww)))
                bursts = [t_learn + rng.uniform(0.0, 4.0) * hour
                          for _ in range(rng.randint(1, 3))]
                for _ in range(per_hash - 1):
                    dev = devs[int(rng.random() * len(devs))]
                    src = rng.choice(("antivirus", "edr", "behavior"))
                    tb = bursts[int(rng.random() * len(bursts))]
                    reports.append((tb + rng.random() * 0.3 * hour, (f, ww, dev, src, "clean"),
                                    False))
        reports = [r for r in reports if r[0] < e1]
        cap = int(p.reports * MAX_ROGUE_SHARE)
        if len(reports) > cap:   # small runs: thin the flood, keep each burst's opening
            essential = [r for r in reports if r[2]]
            rest = [r for r in reports if not r[2]]
            reports = essential + rng.sample(rest, max(0, min(len(rest), cap - len(essential))))
        for t, payload, _ in reports:
            self._push(t, 3, payload)
        for t, fb in feedback:
            if t < e1:
                self._push(t, 4, fb)
        return len(reports)

    def _malicious_file(self, rng: random.Random, fam: Family, cid: str, wave: int,
                        parent: _File | None = None, quiet: bool = False) -> _File:
        name = rng.choice(fam.names).replace("{n}", str(rng.randrange(1000, 99999)))
        signer = rng.choice(_STOLEN_SIGNERS) if rng.random() < fam.signed_share else None
        f = _File(_sha(rng), "malicious", "campaign",
                  {"name": name, "size": _size(rng, 4e5 if fam.file_type == "pe" else 6e4),
                   "type": fam.file_type, "signed": signer is not None, "signer": signer,
                   "path": rng.choice(fam.paths)},
                  round(rng.uniform(max(0.6, fam.static[0]), fam.static[1]) if quiet
                        else rng.uniform(*fam.static), 3),
                  core=fam.core, optional=fam.optional, core_p=0.3 if quiet else 0.85,
                  opt_p=0.05 if quiet else 0.3, min_one=not quiet,
                  sig_lag=rng.uniform(2, 8) * 3600.0 if fam.signature else None,
                  sources=_ACTIVE_SOURCES)
        f.family = fam.name
        f.quiet = quiet
        f.campaign = cid
        f.wave = wave
        f.role = "payload" if parent else ("dropper" if fam.payload else "primary")
        if parent is not None:
            f.parent = parent.sha
        self._campaign_files.append(f)
        return f

    def _plan_burst(self, rng: random.Random, planned: list[tuple[float, _File, int, int, str,
                                                                     bool]],
                    f: _File, payload: _File | None, org: int, t: float, hour: float) -> None:
        """Several devices of one org hit within minutes; droppers drop their payload."""
        size = self.org_sizes[org]
        k = min(size, rng.randint(2, 8))
        first = first_payload = True
        for dev in rng.sample(range(size), k):
            td = t + rng.uniform(0, hour / 3)
            for r in range(rng.randint(1, 3)):
                src = "behavior" if r == 0 else rng.choice(("edr", "antivirus", "asr", "network"))
                planned.append((td, f, org, dev, src, first))
                first = False
                td += rng.uniform(1, 120)
            if payload is not None:
                tp = td + rng.uniform(5, 120)
                for r in range(rng.randint(1, 2)):
                    planned.append((tp, payload, org, dev, "edr" if r == 0 else "behavior",
                                    first_payload))
                    first_payload = False
                    tp += rng.uniform(1, 60)

    # -- the stream --

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def events(self) -> Iterator[Event]:
        """Every report and feedback line, in (scheduled) event-time order."""
        p = self.p
        rng = self._rng
        rnd = rng.random
        heap = self._heap
        pop = heapq.heappop
        stats = self.stats
        epoch = 0
        while p.epochs is None or epoch < p.epochs:
            stats.epochs = epoch + 1
            n_campaign, defend = self._plan_epoch(epoch, rng)
            stats.campaign_reports += n_campaign
            n_campaign += self._plan_rogues(epoch, rng, defend)
            slots = max(0, p.reports - n_campaign)
            n_dup = min(slots, round(p.reports * p.duplicate_share))
            n_mal = min(slots - n_dup, round(p.reports * p.malformed_share))
            if self._hard_list:
                # benign picks (redeliveries replay the same mix) carry hard_negative_reports
                # of all report lines
                picks = (slots - n_mal) * self._global_share
                target = (p.hard_negative_reports or 0.0) * p.reports
                self._hard_q = min(1.0, target / picks) if picks > 0 else 0.0
            e0 = p.start + epoch * p.duration_s
            span = p.duration_s
            u = 0.0
            for k in range(slots, 0, -1):
                # k-th smallest of k uniforms: sorted event times, one at a time.
                u = 1.0 - (1.0 - u) * rnd() ** (1.0 / k)
                t = e0 + u * span
                while heap and heap[0][0] <= t:
                    yield self._scheduled(pop(heap))
                r = rnd() * k
                if r < n_dup:
                    n_dup -= 1
                    if self._recent:
                        yield self._duplicate(rng)
                        continue
                elif r < n_dup + n_mal:
                    n_mal -= 1
                    yield self._malformed_report(t, rng)
                    continue
                yield self._benign(t, rng)
            epoch += 1
        while heap:
            yield self._scheduled(pop(heap))

    def _pick_benign(self, rng: random.Random) -> tuple[_File, int, int]:
        rnd = rng.random
        cum = self._org_cum
        org = bisect_right(cum, rnd() * cum[-1])
        if org >= len(cum):
            org = len(cum) - 1
        local = self._local[org]
        if local and rnd() < LOCAL_SHARE:
            lcum = self._local_cum[org]
            i = bisect_right(lcum, rnd() * lcum[-1])
            f = local[i if i < len(local) else -1]
        else:
            hard_q = self._hard_q
            if hard_q is not None and rnd() < hard_q:
                hcum = self._hard_cum
                i = bisect_right(hcum, rnd() * hcum[-1])
                f = self._hard_list[i if i < len(self._hard_list) else -1]
            else:
                gcum = self._pick_cum
                i = bisect_right(gcum, rnd() * gcum[-1])
                f = self._pick_list[i if i < len(self._pick_list) else -1]
        return f, org, int(rnd() * self.org_sizes[org])

    def _benign(self, t: float, rng: random.Random) -> Event:
        f, org, dev = self._pick_benign(rng)
        names, cum = f.sources  # type: ignore[misc]
        i = bisect_right(cum, rng.random() * cum[-1])
        return self._report(t, f, org, dev, names[i if i < len(names) else -1], rng)

    def _scheduled(self, item: tuple[float, int, int, Any]) -> Event:
        t, _, kind, payload = item
        if kind == 0:
            f, org, dev, source = payload
            return self._report(t, f, org, dev, source, self._rng)
        if kind == 1:
            return self._feedback(t, *payload)
        if kind == 3:
            f, org, dev, source, mode = payload
            (self._attacked if mode == "flood" else self._defended)[f.sha] = None
            f.rogue = "target" if mode == "flood" else "whitewashed"
            self.stats.rogue_reports += 1
            return self._emit(t, f, org, self._rogue_dict(t, f, org, dev, source, mode,
                                                          self._rng), self._rng)
        if kind == 4:
            self.stats.rogue_feedback += 1
            return self._feedback(t, *payload)
        value, key, dup = payload  # kind 2: a prepared raw feedback line
        if dup:
            self.stats.feedback_duplicates += 1
        else:
            self.stats.feedback_malformed += 1
        self.stats.feedback += 1
        self._track_t(t)
        return Event(FEEDBACK, t, key, value, not dup, dup)

    def _track_t(self, t: float) -> None:
        st = self.stats
        if st.first_t is None:
            st.first_t = t
        st.last_t = t

    def _behaviors(self, f: _File, source: str, rng: random.Random) -> list[str]:
        rnd = rng.random
        if source in _STATIC_ONLY_SOURCES and rnd() < 0.7:
            return ["c2_beacon"] if source == "network" and "c2_beacon" in f.behaviors_core \
                else []
        out = [b for b in f.behaviors_core if rnd() < f.core_p]
        if f.min_one and not out and f.behaviors_core:
            out.append(f.behaviors_core[int(rnd() * len(f.behaviors_core))])
        if f.behaviors_opt:
            out.extend(b for b in f.behaviors_opt if rnd() < f.opt_p)
        return out

    def _verdicts(self, f: _File, t: float, source: str, rng: random.Random) -> dict[str, float]:
        rnd = rng.random
        if source == "network" or rnd() < 0.03:
            return {}
        static = f.static + (rnd() - 0.5) * 0.06
        static = round(0.0 if static < 0 else 1.0 if static > 1 else static, 3)
        if source != "antivirus":
            return {"static_ml": static}
        av = f.av
        if f.sig_lag is not None and f.first_t is not None and t >= f.first_t + f.sig_lag:
            av = 1.0  # the signature update has shipped
        return {"static_ml": static, "av_signature": av}

    def _report_dict(self, t: float, f: _File, org: int, dev: int, source: str,
                     rng: random.Random) -> dict[str, Any]:
        rnd = rng.random
        p = self.p
        ts = t + (rnd() * 2.0 - 1.0) * p.jitter_s if rnd() < p.jitter_share else t
        self._n_reports += 1
        rep = {
            "report_id": f"{self._report_prefix}{self._n_reports:010d}",
            "ts": ts,
            "org_id": self.org_ids[org],
            "device_id": f"{self._device_prefix[org]}{dev:05d}",
            "sha256": f.sha_upper if rnd() < p.uppercase_share else f.sha,
            "source": source,
            "file": f.file,
            "behaviors": self._behaviors(f, source, rng),
            "verdicts": self._verdicts(f, t, source, rng),
            "parent_sha256": f.parent,
        }
        if self._quirks:
            self._sensor_quirks(rep, t, org, dev, rng)
        return rep

    def _sensor_quirks(self, rep: dict[str, Any], t: float, org: int, dev: int,
                       rng: random.Random) -> None:
        """Silent devices drop their scores; a glitching org's sensors misbehave."""
        if self._silent_below and \
                (dev * 2654435761 + self._silent_salt[org]) & 0xFFFFFFFF < self._silent_below:
            rep["verdicts"] = {}
        if org == self._glitch_org and self._glitch_t0 <= t < self._glitch_t1:
            self._glitched += 1
            if self.p.glitch_mode == "static_ml":
                rep["verdicts"] = {**rep["verdicts"],
                                   "static_ml": round(0.96 + 0.04 * rng.random(), 3)}
            elif self.p.glitch_behavior not in rep["behaviors"]:
                rep["behaviors"] = [*rep["behaviors"], self.p.glitch_behavior]

    def _rogue_dict(self, t: float, f: _File, org: int, dev: int, source: str, mode: str,
                    rng: random.Random) -> dict[str, Any]:
        """A fabricated report: ``flood`` claims the worst, ``clean`` claims nothing at all.

        Both copy the file's real name, size and type (a lie has to be about the
        file others see), but not its sensors' opinion: a flooder reports the
        behaviours and scores that block on sight, a whitewasher no behaviour,
        near-zero scores and no signer or a forged one.
        """
        rnd = rng.random
        self._n_reports += 1
        file = f.file
        if mode == "flood":
            behaviors = [b for b in _SCARY if rnd() < 0.75] or [_SCARY[int(rnd() * 3)]]
            behaviors.extend(b for b in _SCARY_EXTRA if rnd() < 0.3)
            verdicts = {"static_ml": round(0.95 + 0.04 * rnd(), 3), "av_signature": 1.0}
            if rnd() < 0.6:   # "it was unsigned and in temp on my machine"
                file = {**file, "signed": False, "signer": None,
                        "path": ("temp", "downloads", "user")[int(rnd() * 3)]}
        else:
            behaviors = []
            verdicts = {"static_ml": round(0.01 + 0.07 * rnd(), 3), "av_signature": 0.0}
            if rnd() < 0.35:
                file = {**file, "signed": True, "path": "program_files",
                        "signer": _FORGED_SIGNERS[int(rnd() * len(_FORGED_SIGNERS))]}
            else:
                file = {**file, "signed": False, "signer": None}
        return {
            "report_id": f"{self._report_prefix}{self._n_reports:010d}",
            "ts": t,
            "org_id": self.org_ids[org],
            "device_id": f"{self._device_prefix[org]}{dev:05d}",
            "sha256": f.sha,
            "source": source,
            "file": file,
            "behaviors": behaviors,
            "verdicts": verdicts,
            "parent_sha256": None,
        }

    def _report(self, t: float, f: _File, org: int, dev: int, source: str,
                rng: random.Random) -> Event:
        return self._emit(t, f, org, self._report_dict(t, f, org, dev, source, rng), rng)

    def _emit(self, t: float, f: _File, org: int, rep: dict[str, Any],
              rng: random.Random) -> Event:
        """Serialise a report and do the bookkeeping every sighting needs."""
        ts = rep["ts"]
        rep["ts"] = format_ts(ts)
        value = orjson.dumps(rep)
        if f.first_seen is None:
            f.first_seen = ts
            f.first_t = t
            self._first_sighting(f, t, rng, bool(rep["behaviors"])
                                 or rep["verdicts"].get("static_ml", 0.0) >= 0.5)
        f.last_seen = ts
        f.reports += 1
        orgs = f.orgs
        if org not in orgs:
            orgs.add(org)
            if f.kind == "hard_negative" and rng.random() < self.p.org_report_share:
                # a tenant's false-positive report about a tool it knows is fine
                self._push(t + rng.uniform(600, 7200), 1, (f, "benign", "org_report", org))
        recent = self._recent
        recent.append((value, f.sha_b, t))
        if len(recent) > 16:
            del recent[0]
        st = self.stats
        st.reports += 1
        self._track_t(t)
        return Event(REPORT, t, f.sha_b, value, False, False)

    def _first_sighting(self, f: _File, t: float, rng: random.Random,
                        suspicious: bool) -> None:
        """Verdicts are triggered by a hash's first sighting, as in a real pipeline.

        Sandboxes are scarce, so real pipelines submit what *looks* suspicious
        (a behaviour, or a static score of 0.5 or more) far more often than
        the rest. The labels a learner sees are therefore biased towards hard
        cases: evasive malware that only behaves badly is labelled about as
        often as loud malware, and benign tools that behave like malware are
        labelled far more often than ordinary apps.
        """
        p = self.p
        if p.sandbox_coverage is None:
            submit = p.sandbox_suspicious_share if suspicious else p.sandbox_share
        else:
            submit = self._detonation_chance(suspicious)
        if rng.random() < submit:
            verdict = f.label
            if rng.random() < p.label_noise:
                verdict = "benign" if verdict == "malicious" else "malicious"
                f.noisy += 1
                self.stats.noisy_verdicts += 1
            self._push(t + rng.uniform(*p.sandbox_delay_s), 1, (f, verdict, "sandbox", None))
        share = {"malicious": p.analyst_share,
                 "benign": p.analyst_share / 3 if f.kind == "hard_negative"
                 else p.analyst_share / 100}[f.label]
        if rng.random() < share:
            self._push(t + rng.uniform(1200, 6 * 3600), 1, (f, f.label, "analyst", None))

    def _detonation_chance(self, suspicious: bool) -> float:
        """The chance to detonate a new hash when a world fixes the coverage instead.

        How many first sightings look suspicious depends on the world (its
        campaigns, its hard negatives), so the mix is counted as hashes come:
        calm ones go at x, suspicious ones at ``sandbox_bias`` * x (at most
        1), with x such that the share of all hashes so far would be
        ``sandbox_coverage``. The mix drifts over a day (popular, calm
        software is first seen early, campaigns later), so x is also scaled
        by exp(SANDBOX_GAIN * the detonations owed so far, in hashes at that
        share): the expected coverage keeps to the share all day, whatever the
        order, while every moment's rates keep the ratio ``sandbox_bias``
        (over a day, the drift brings it down to about two thirds).
        """
        if suspicious:
            self._n_suspicious += 1
        else:
            self._n_calm += 1
        s, c = self._n_suspicious, self._n_calm
        bias = self.p.sandbox_bias
        coverage = self.p.sandbox_coverage or 0.0
        x = coverage * (s + c) / (bias * s + c)
        if coverage > 0:
            owed = (coverage * (s + c - 1) - self._given) / coverage
            x *= math.exp(max(-5.0, min(5.0, SANDBOX_GAIN * owed)))
        chance = min(1.0, bias * x if suspicious else x)
        self._given += chance
        return chance

    def _feedback(self, t: float, f: _File, verdict: str, source: str,
                  org: int | None) -> Event:
        rng = self._rng
        p = self.p
        self._n_feedback += 1
        fb = {"feedback_id": f"{self._feedback_prefix}{self._n_feedback:08d}",
              "ts": format_ts(t), "sha256": f.sha, "verdict": verdict, "source": source,
              "org_id": self.org_ids[org] if org is not None else None}
        value = orjson.dumps(fb)
        if rng.random() < p.duplicate_share:
            self._push(t + rng.uniform(0.5, 30), 2, (value, f.sha_b, True))
        if rng.random() < p.malformed_share:
            raw, key, reason = _corrupt_feedback(fb, f.sha_b, rng)
            self.stats.malformed_by_reason[f"feedback_{reason}"] += 1
            self._push(t + rng.uniform(0.5, 30), 2, (raw, key, False))
        st = self.stats
        st.feedback += 1
        st.feedback_by_source[source] += 1
        self._track_t(t)
        return Event(FEEDBACK, t, f.sha_b, value, False, False)

    def _duplicate(self, rng: random.Random) -> Event:
        """A redelivery: the very same bytes (same report_id) of a recent report."""
        value, key, t = self._recent[int(rng.random() * len(self._recent))]
        st = self.stats
        st.reports += 1
        st.report_duplicates += 1
        return Event(REPORT, t, key, value, False, True)

    def _malformed_report(self, t: float, rng: random.Random) -> Event:
        f, org, dev = self._pick_benign(rng)
        rep = self._report_dict(t, f, org, dev, "antivirus", rng)
        rep["ts"] = format_ts(rep["ts"])
        raw, key, reason = _corrupt_report(rep, f.sha_b, rng)
        st = self.stats
        st.reports += 1
        st.report_malformed += 1
        st.malformed_by_reason[reason] += 1
        self._track_t(t)
        return Event(REPORT, t, key, raw, True, False)

    # -- ground truth --

    def files(self) -> Iterator[_File]:
        yield from self.benign
        yield from self._campaign_files

    def truth(self) -> Iterator[dict[str, Any]]:
        """One record per hash that was sighted: label, campaign, family, first seen."""
        for f in self.files():
            if f.first_seen is not None:
                yield f.truth(self.org_ids)

    def world(self) -> dict[str, Any]:
        """The parameters, tenants and campaign timelines: what an evaluator needs besides
        per-hash labels."""
        p = self.p
        params = asdict(p)
        params["start"] = format_ts(p.start)
        fields = SimParams.__dataclass_fields__
        for name in _DRAWN_ONLY:
            if not p.varied and params[name] == fields[name].default:
                del params[name]
        if p.sandbox_coverage is not None:   # detonation goes by coverage, not these
            del params["sandbox_share"], params["sandbox_suspicious_share"]
        extra: dict[str, Any] = {}
        if self._glitch_org >= 0:
            extra["glitch"] = {"org_id": self.org_ids[self._glitch_org], "mode": p.glitch_mode,
                               "behavior": p.glitch_behavior if p.glitch_mode == "behavior"
                               else None, "start": format_ts(self._glitch_t0),
                               "end": format_ts(self._glitch_t1), "reports": self._glitched}
        return {"params": params,
                "orgs": [{"org_id": o, "devices": s}
                         for o, s in zip(self.org_ids, self.org_sizes, strict=True)],
                "campaigns": self.campaigns,
                "rogues": {
                    "orgs": [self.org_ids[o] for o in self._rogue_devices],
                    "flooders": [self.org_ids[o] for o, _ in self._flooders],
                    "whitewashers": [self.org_ids[o] for o in self._whitewashers],
                    "targets": list(self._attacked),
                    "whitewashed": list(self._defended),
                    "reports": self.stats.rogue_reports,
                    "feedback": self.stats.rogue_feedback,
                },
                **extra,
                "stats": self.stats.as_dict()}


# --- malformed lines ---------------------------------------------------------------------

_REQUIRED = ("report_id", "ts", "org_id", "device_id", "sha256")


def _corrupt_report(rep: dict[str, Any], key: bytes,
                    rng: random.Random) -> tuple[bytes, bytes | None, str]:
    """A line a real pipeline might deliver; never contains a raw newline."""
    kind = rng.choice(("invalid_json", "missing_field", "bad_sha256", "wrong_type",
                       "invalid_utf8", "bad_ts", "not_object", "out_of_range"))
    rep = dict(rep)
    if kind == "invalid_json":
        raw = orjson.dumps(rep)
        return raw[: rng.randint(1, len(raw) - 2)], key, kind
    if kind == "missing_field":
        field_ = rng.choice(_REQUIRED)
        del rep[field_]
        return orjson.dumps(rep), (None if field_ == "sha256" else key), kind
    if kind == "bad_sha256":
        sha = rep["sha256"]
        rep["sha256"] = rng.choice((sha[:63], sha + "0", "z" * 64, sha[:32], ""))
        return orjson.dumps(rep), None, kind
    if kind == "wrong_type":
        which = rng.choice(("ts", "sha256", "org_id", "size", "behaviors", "verdicts", "file"))
        if which == "ts":
            rep["ts"] = int(parse_ts(rep["ts"]))
        elif which == "sha256":
            rep["sha256"] = int(rep["sha256"][:12], 16)
            key = None
        elif which == "org_id":
            rep["org_id"] = None
        elif which == "size":
            rep["file"] = {**rep["file"], "size": "big"}
        elif which == "behaviors":
            rep["behaviors"] = "persistence,discovery"
        elif which == "verdicts":
            rep["verdicts"] = [0.5, 0.9]
        else:
            rep["file"] = rep["file"]["name"]
        return orjson.dumps(rep), key, kind
    if kind == "invalid_utf8":
        raw = orjson.dumps(rep).replace(b'"name":"', b'"name":"\xff\xfe', 1)
        return raw, key, kind
    if kind == "bad_ts":
        rep["ts"] = rng.choice(("2026-13-45T99:00:00Z", "yesterday", "", "1764288000"))
        return orjson.dumps(rep), key, kind
    if kind == "not_object":
        return orjson.dumps([rep["sha256"], rep["ts"]]), key, kind
    rep["verdicts"] = {"static_ml": rng.choice((1.7, -0.2, 42.0))}
    return orjson.dumps(rep), key, kind


def _corrupt_feedback(fb: dict[str, Any], key: bytes,
                      rng: random.Random) -> tuple[bytes, bytes | None, str]:
    kind = rng.choice(("invalid_json", "missing_field", "bad_verdict", "org_report_no_org",
                       "bad_sha256"))
    fb = dict(fb)
    if kind == "invalid_json":
        raw = orjson.dumps(fb)
        return raw[: rng.randint(1, len(raw) - 2)], key, kind
    if kind == "missing_field":
        del fb[rng.choice(("feedback_id", "ts", "sha256", "verdict"))]
    elif kind == "bad_verdict":
        fb["verdict"] = rng.choice(("maybe", "MALWARE", "", 1))
    elif kind == "org_report_no_org":
        fb["source"] = "org_report"
        fb["org_id"] = None
    else:
        fb["sha256"] = fb["sha256"][:40]
        key = None
    return orjson.dumps(fb), key, kind


# --- files -------------------------------------------------------------------------------

@dataclass(slots=True)
class WriteResult:
    """Where the files went and how long generation took."""

    paths: dict[str, Path]
    seconds: float
    stats: SimStats


class _Sink:
    """One output file, gzip-compressed or not; compressed output is reproducible."""

    def __init__(self, path: Path, compress: bool) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        # mtime=0 and no file name in the header: same input, same bytes.
        self._gz = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                  compresslevel=3, mtime=0) if compress else None)
        self.write = (self._gz or self._raw).write

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def write_files(sim: Simulator, out_dir: str | os.PathLike[str],
                compress: bool = True) -> WriteResult:
    """Write reports, feedback, ground truth and the world description under ``out_dir``.

    Lines are buffered and written in chunks: per-line writes would cost more
    than generating the line.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".jsonl.gz" if compress else ".jsonl"
    paths = {"reports": out / f"reports{ext}", "feedback": out / f"feedback{ext}",
             "truth": out / "truth.jsonl", "world": out / "world.json"}
    started = time.perf_counter()
    rep_f = _Sink(paths["reports"], compress)
    fb_f = _Sink(paths["feedback"], compress)
    try:
        rep_buf: list[bytes] = []
        fb_buf: list[bytes] = []
        for ev in sim.events():
            if ev.kind is REPORT:
                rep_buf.append(ev.value)
                if len(rep_buf) >= 8192:
                    rep_buf.append(b"")
                    rep_f.write(b"\n".join(rep_buf))
                    rep_buf.clear()
            else:
                fb_buf.append(ev.value)
                if len(fb_buf) >= 1024:
                    fb_buf.append(b"")
                    fb_f.write(b"\n".join(fb_buf))
                    fb_buf.clear()
        for f, buf in ((rep_f, rep_buf), (fb_f, fb_buf)):
            if buf:
                buf.append(b"")
                f.write(b"\n".join(buf))
    finally:
        rep_f.close()
        fb_f.close()
    seconds = time.perf_counter() - started
    write_truth(sim, paths["truth"])
    paths["world"].write_bytes(orjson.dumps(sim.world(), option=orjson.OPT_INDENT_2) + b"\n")
    return WriteResult(paths, seconds, sim.stats)


def write_truth(sim: Simulator, path: str | os.PathLike[str]) -> int:
    """Ground truth as JSONL, one hash per line; returns the number of hashes."""
    n = 0
    with open(path, "wb") as fh:
        for rec in sim.truth():
            fh.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n

