"""The benign world a seed draws: tenants and their fleets, the software they run, and
the malware families campaigns are made of.

The world depends on the seed only (one ``random.Random`` drawn in a fixed
order: fleets, then the catalogue), so a live run started at another time
meets the same software the engine has learned. Popularity is heavy-tailed
(Zipf) and hard negatives (admin, backup, installer, remote-access and
scripting tools that behave like malware) sit among it, so "seen in many
orgs" is not by itself a sign of malice.

>>> import random
>>> fleet = Fleet.draw(random.Random(1), orgs=5, devices_min=10, devices_max=100,
...                    alpha=1.0)
>>> fleet.org_ids, max(fleet.sizes)
(['org-000', 'org-001', 'org-002', 'org-003', 'org-004'], 100)
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from .params import LOCAL_SHARE, ZIPF_S, SimParams, format_ts

_SOURCES_BENIGN = (("antivirus", 0.35), ("edr", 0.25), ("behavior", 0.2),
                   ("asr", 0.1), ("network", 0.1))
_SOURCES_ACTIVE = (("behavior", 0.35), ("edr", 0.35), ("antivirus", 0.15),
                   ("asr", 0.1), ("network", 0.05))
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
CAMPAIGN_FAMILIES = ("ransomware", "stealer", "loader", "dropper", "backdoor", "worm", "fileless")
STOLEN_SIGNERS = ("Shenzhen Yunda Tech Co., Ltd.", "TOV Softline Plus", "Nordic Digital ApS")


class SimFile:
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


BENIGN_SOURCES = _source_table(_SOURCES_BENIGN)
ACTIVE_SOURCES = _source_table(_SOURCES_ACTIVE)


def new_sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def file_size(rng: random.Random, median: float) -> int:
    return max(512, int(median * math.exp(rng.gauss(0.0, 1.0))))



@dataclass(slots=True)
class Fleet:
    """The tenants: ids, fleet sizes, and the weights benign sightings pick an org by."""

    org_ids: list[str]
    sizes: list[int]
    cum: list[float]                     # cumulative fleet sizes
    device_prefix: list[str]

    @classmethod
    def draw(cls, rng: random.Random, orgs: int, devices_min: int, devices_max: int,
             alpha: float) -> Fleet:
        """Fleet sizes from a Pareto law truncated to [devices_min, devices_max].

        Real customer bases are heavy-tailed: most tenants are small businesses,
        a few are enterprises with thousands of endpoints. That matters to the
        engine: a big org's volume must not read as consensus, and a small
        org's single sighting must still count as an independent witness.
        """
        lo, hi = devices_min, devices_max
        sizes = [max(lo, min(hi, round(lo * (1.0 - rng.random()) ** (-1.0 / alpha))))
                 for _ in range(orgs)]
        if orgs >= 3:  # always one big tenant: heavy tails need a head
            sizes[rng.randrange(orgs)] = hi
        width = max(3, len(str(orgs - 1)))
        org_ids = [f"org-{i:0{width}d}" for i in range(orgs)]
        return cls(org_ids, sizes, _cum([float(s) for s in sizes]),
                   [f"{o}-dev-" for o in org_ids])

    def device_id(self, org: int, dev: int) -> str:
        return f"{self.device_prefix[org]}{dev:05d}"


class Catalog:
    """The benign software and how sightings pick from it.

    ``ranked`` is the global catalogue in popularity order (apps and hard
    negatives); ``benign`` every benign file including in-house ones. Drawn
    worlds (``hard_negative_reports`` set) pick hard negatives apart, at a
    share of all reports set per epoch (``hard_q``) and with a popularity law
    of their own: admin and remote-access tools run in many orgs at once.
    """

    def __init__(self, rng: random.Random, p: SimParams, fleet: Fleet) -> None:
        n = p.benign_files
        n_hard = min(n, max(1, round(n * p.hard_negative_share))) if p.hard_negative_share else 0
        n_inhouse = min(n - n_hard, round(n * p.inhouse_share))
        n_apps = n - n_hard - n_inhouse
        vendors = list(_VENDORS.items())
        apps: list[SimFile] = []
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
            f = SimFile(new_sha(rng), "benign", "app",
                      {"name": name, "size": file_size(rng, 3e6), "type": "pe",
                       "signed": signer is not None, "signer": signer,
                       "path": "program_files" if rng.random() < 0.8 else
                       rng.choice(("system", "user", "downloads"))},
                      round(rng.random() ** 4 * (0.35 if signer else 0.5), 3),
                      optional=("persistence",) if updater else (),
                      opt_p=0.5 if updater else 0.0, sources=BENIGN_SOURCES)
            f.role = "updater" if updater else "app"
            apps.append(f)
        hard: list[SimFile] = []
        roles = list(_HARD)
        for i in range(n_hard):
            role = roles[i % len(roles)]
            names, core, optional, ftype, paths = _HARD[role]
            name, signer = rng.choice(names)
            hot = rng.random() < 0.4  # moderately high static verdicts: the hardest negatives
            f = SimFile(new_sha(rng), "benign", "hard_negative",
                      {"name": name, "size": file_size(rng, 8e5), "type": ftype,
                       "signed": signer is not None, "signer": signer,
                       "path": rng.choice(paths)},
                      round(rng.uniform(0.45, 0.8) if hot else rng.uniform(0.05, 0.45), 3),
                      core=core, optional=optional, core_p=0.75, opt_p=0.35,
                      av=0.5 if rng.random() < 0.3 else 0.0, sources=ACTIVE_SOURCES)
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
        self.ranked = ranked
        self.ranked_cum = _cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(ranked))])
        # What benign sightings pick from. Drawn worlds (hard_negative_reports set) pick
        # hard negatives apart, at a drawn share of all reports and with a popularity law
        # of their own: admin and remote-access tools run in many orgs at once.
        self.pick_list, self.pick_cum = self.ranked, self.ranked_cum
        self.hard_list: list[SimFile] = []
        self.hard_cum: list[float] = []
        apps_only = [f for f in ranked if f.kind != "hard_negative"]
        if p.hard_negative_reports is not None and hard and apps_only:
            order = hard[:]
            random.Random(f"rapidloop-hard:{p.seed}").shuffle(order)
            self.hard_list = order
            self.hard_cum = _cum([1.0 / (r + 1) ** p.hard_negative_zipf
                                   for r in range(len(order))])
            self.pick_list = apps_only
            self.pick_cum = _cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(apps_only))])
        # In-house software: private to one org (weighted by fleet size).
        local: list[list[SimFile]] = [[] for _ in range(p.orgs)]
        for _ in range(n_inhouse):
            org = bisect_right(fleet.cum, rng.random() * fleet.cum[-1])
            org = min(org, p.orgs - 1)
            signed = rng.random() < 0.4
            signer = f"{fleet.org_ids[org]} Internal CA" if signed else None
            tool = rng.choice(("hr_portal", "erp_client", "timesheet", "labelprinter", "sync",
                               "crm_addin", "build_agent", "kiosk"))
            f = SimFile(new_sha(rng), "benign", "inhouse",
                      {"name": f"{tool}_{rng.randrange(100)}.exe", "size": file_size(rng, 1.5e6),
                       "type": "pe", "signed": signed, "signer": signer,
                       "path": rng.choice(("program_files", "other", "user"))},
                      round(rng.random() ** 2 * 0.5, 3), sources=BENIGN_SOURCES)
            f.role = "inhouse"
            f.home_org = org
            local[org].append(f)
        self.local = local
        self.local_cum = [_cum([1.0 / (r + 1) ** ZIPF_S for r in range(len(fs))])
                           for fs in local]
        # share of benign sightings that pick from the global catalogue, not in-house
        with_local = sum(size for size, fs in zip(fleet.sizes, local, strict=True) if fs)
        self.global_share = 1.0 - LOCAL_SHARE * with_local / sum(fleet.sizes)
        self.benign = [*apps, *hard, *(f for fs in local for f in fs)]

        self.fleet = fleet
        self.hard_q: float | None = None   # per benign pick, set per epoch (drawn worlds)

    def pick(self, rng: random.Random) -> tuple[SimFile, int, int]:
        """A benign sighting: which file, in which org, on which device."""
        rnd = rng.random
        cum = self.fleet.cum
        org = bisect_right(cum, rnd() * cum[-1])
        if org >= len(cum):
            org = len(cum) - 1
        local = self.local[org]
        if local and rnd() < LOCAL_SHARE:
            lcum = self.local_cum[org]
            i = bisect_right(lcum, rnd() * lcum[-1])
            f = local[i if i < len(local) else -1]
        else:
            hard_q = self.hard_q
            if hard_q is not None and rnd() < hard_q:
                hcum = self.hard_cum
                i = bisect_right(hcum, rnd() * hcum[-1])
                f = self.hard_list[i if i < len(self.hard_list) else -1]
            else:
                gcum = self.pick_cum
                i = bisect_right(gcum, rnd() * gcum[-1])
                f = self.pick_list[i if i < len(self.pick_list) else -1]
        return f, org, int(rnd() * self.fleet.sizes[org])
