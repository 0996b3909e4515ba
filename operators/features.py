"""The names of the per-file feature vector the prior and the learners score.

A file's history is summarised as a flat ``dict[str, float]`` so that every
scorer (the hand-set prior, the River learners) reads the same evidence, and
so that the schema lives in one place: the code that computes the vector
(``filestate``) and the code that consumes it (``prior``, ``classifiers``)
both refer to these names. A key missing from a vector means 0.0; the
learners fill the gaps themselves (``dense``), because River's scalers and
naive Bayes only update the keys they are given, which would make a one-hot
feature look constant (see ``classifiers.dense``).

Verdicts from the sensors' own classifiers:

* ``verdict_max`` — the highest sensor verdict score ever seen for the file (0..1).
* ``verdict_mean`` — mean over the file's reports of each report's highest verdict (0..1).
* ``n_verdict_sources`` — log1p of the number of distinct sensor verdict names
  that scored the file at least 0.5 (several independent engines agreeing).

Behaviours (``beh_<name>``, one per name in ``BEHAVIORS``): the share of the
file's reports that showed the behaviour (0..1), and ``n_behaviors``, the
number of distinct known behaviours seen (a count, as float).

Attributes of the file: ``signed`` (0/1); ``type_<t>`` one-hot over ``FILE_TYPES``;
``path_<p>`` one-hot over ``FILE_PATHS`` (where it was seen last); ``log_size``
(log1p of bytes / 20, near 0..1); ``has_parent`` (0/1: some report named the
file that dropped or launched it); ``parent_flagged`` (0/1: that parent is
currently blocked or labelled malicious).

Prevalence and time: ``log_devices``, ``log_orgs`` (log1p of distinct devices /
organizations ever); ``orgs_10m``, ``orgs_1h``, ``orgs_24h``, ``devices_1h``
(log1p of distinct counts in sliding event-time windows: a burst across
tenants is a campaign, a slow steady spread is usually software);
``log_age_h`` (log1p of hours since first seen); ``log_reports`` (log1p of
the number of reports).

Reputation: ``org_trust`` (0..1, mean trust of the reporting organizations;
0.5 when unknown).

>>> len(FEATURE_NAMES), FEATURE_NAMES[0], "beh_c2_beacon" in FEATURE_NAMES
(41, 'verdict_max', True)
"""

from __future__ import annotations

from rapidloop.schemas.model import BEHAVIORS, FILE_PATHS, FILE_TYPES

VERDICT_FEATURES: tuple[str, ...] = ("verdict_max", "verdict_mean", "n_verdict_sources")
BEHAVIOR_FEATURES: tuple[str, ...] = tuple(f"beh_{b}" for b in BEHAVIORS)
TYPE_FEATURES: tuple[str, ...] = tuple(f"type_{t}" for t in FILE_TYPES)
PATH_FEATURES: tuple[str, ...] = tuple(f"path_{p}" for p in FILE_PATHS)
PREVALENCE_FEATURES: tuple[str, ...] = (
    "log_devices", "log_orgs", "orgs_10m", "orgs_1h", "orgs_24h", "devices_1h",
    "log_age_h", "log_reports",
)

BEHAVIOR_KEY: dict[str, str] = dict(zip(BEHAVIORS, BEHAVIOR_FEATURES, strict=True))
TYPE_KEY: dict[str, str] = dict(zip(FILE_TYPES, TYPE_FEATURES, strict=True))
PATH_KEY: dict[str, str] = dict(zip(FILE_PATHS, PATH_FEATURES, strict=True))


def behavior_key(behavior: str) -> str:
    """The feature of a behaviour: ``beh_<name>``. A name outside the contract's list (the
    parser lets them through) gets the same form; no scorer has a weight for it.

    >>> behavior_key("c2_beacon"), behavior_key("new_trick")
    ('beh_c2_beacon', 'beh_new_trick')
    """
    return BEHAVIOR_KEY.get(behavior) or f"beh_{behavior}"


FEATURE_NAMES: tuple[str, ...] = (
    *VERDICT_FEATURES,
    *BEHAVIOR_FEATURES,
    "n_behaviors",
    "signed",
    *TYPE_FEATURES,
    *PATH_FEATURES,
    "log_size",
    "has_parent",
    "parent_flagged",
    *PREVALENCE_FEATURES,
    "org_trust",
)
"""Every feature, in a fixed order (the order learners see them in)."""
