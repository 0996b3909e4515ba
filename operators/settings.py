"""The operators' settings, typed, read from the configuration once.

The configuration's sections are attribute views of TOML tables
(``rapidloop.base.config``): every value comes back untyped, and an operator
reading ``cfg.policy.org_block_score`` in its body would convert it again
and again, in places a type checker cannot follow. Here each operator's
settings are one frozen dataclass, read and converted by its
``from_config`` when the job is built; the operators read typed attributes.

Settings are not state: a snapshot (``operators.snapshot``) never holds
them, and a restored operator takes them from the configuration it is
restored under, as a fresh one does.

>>> from rapidloop.base.config import load_config
>>> s = Settings.from_config(load_config(env={"RAPIDLOOP_POLICY__GLOBAL_MIN_ORGS": "1"}))
>>> s.decider.policy.global_min_orgs   # one tenant is never consensus
2
>>> s.correlator.windows
(600.0, 3600.0, 86400.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidloop.base.config import Config

from .cost import CostSettings
from .lineage import LineageRecord
from .prior import Prior
from .reliability import SourceReliability
from .signers import SignerRecord
from .trust import OrgTrust


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """``[models]``: the learners and their combiner (``classifiers.Ensemble``)."""

    min_class_labels: int     # labels of each class before the learners get a say
    tied: bool                # combiner "sum": the experts' weights tied
    stack_lr: float
    stack_l2: float
    lesson_weight: float      # the combiner's step on a lesson, relative to a verdict's
    balance_cap: float
    tree_max_depth: int
    tree_max_size_mib: float

    @classmethod
    def from_config(cls, cfg: Config) -> ModelSettings:
        m = cfg.models
        return cls(int(m.min_class_labels), m.combiner == "sum", float(m.stack_lr),
                   float(m.stack_l2), float(m.stack_lesson_weight), float(m.class_balance_cap),
                   int(m.tree_max_depth), float(m.tree_max_size_mib))


@dataclass(frozen=True, slots=True)
class AccusationSettings:
    """The report-level suspicion test (``operators.accusation``), from ``[policy]``."""

    threshold: float          # device_block_score: the prior's bar for one report's evidence
    strong: frozenset[str]    # device_block_behaviors: accuse on sight

    @classmethod
    def from_config(cls, cfg: Config) -> AccusationSettings:
        p = cfg.policy
        return cls(float(p.device_block_score), frozenset(p.device_block_behaviors))


@dataclass(frozen=True, slots=True)
class CorrelatorSettings:
    """A shard's file state (``operators.correlate``): ``[state]``, ``[windows]``, ``[dedup]``."""

    windows: tuple[float, ...]
    max_orgs: int
    max_devices: int
    max_parents: int
    max_behaviors: int
    evidence_orgs: int
    max_accusers: int
    max_allowers: int
    accuse_window: float      # policy.global_window_s: how long an accusation counts
    lesson_max: int           # models.lesson_max
    idle_ttl: float
    sweep_interval: float
    ids_per_shard: int
    accusation: AccusationSettings

    @classmethod
    def from_config(cls, cfg: Config) -> CorrelatorSettings:
        st = cfg.state
        return cls(tuple(float(w) for w in cfg.windows.sizes_s), int(st.max_orgs),
                   int(st.max_devices), int(st.max_parents), int(st.max_behaviors),
                   int(st.evidence_orgs), int(st.max_accusers), int(st.max_allowers),
                   float(cfg.policy.global_window_s), int(cfg.models.lesson_max),
                   float(st.idle_ttl_s), float(st.sweep_interval_s),
                   int(cfg.dedup.ids_per_shard), AccusationSettings.from_config(cfg))


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """``[policy]``'s sizes and priors of the records a decider learns: organizations'
    trust (also the vouchers'), signers, siblings, verdict sources."""

    trust_prior_a: float
    trust_prior_b: float
    trust_refute_weight: float
    trust_max_orgs: int
    signer_vouch_clean: int
    signer_max_files: int     # the siblings' record is as large as the signers'
    verdict_reliability: tuple[tuple[str, float], ...]
    reliability_prior_n: float

    @classmethod
    def from_config(cls, cfg: Config) -> RecordSettings:
        p = cfg.policy
        return cls(float(p.trust_prior_a), float(p.trust_prior_b), float(p.trust_refute_weight),
                   int(p.trust_max_orgs), int(p.signer_vouch_clean), int(p.signer_max_files),
                   tuple((src, float(r)) for src, r in p.verdict_reliability.as_dict().items()),
                   float(p.reliability_prior_n))

    def new_trust(self) -> OrgTrust:
        """An empty organization trust table (``operators.trust``)."""
        return OrgTrust(self.trust_prior_a, self.trust_prior_b, self.trust_refute_weight,
                        self.trust_max_orgs)

    def new_signers(self) -> SignerRecord:
        """An empty signer record (``operators.signers``)."""
        return SignerRecord(self.signer_vouch_clean, self.signer_max_files)

    def new_lineage(self) -> LineageRecord:
        """An empty siblings' record (``operators.lineage``)."""
        return LineageRecord(self.signer_max_files)

    def new_reliability(self) -> SourceReliability:
        """Verdict sources' reliability, learned over the configured prior
        (``operators.reliability``)."""
        return SourceReliability(dict(self.verdict_reliability), self.reliability_prior_n)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policy]``'s rules (``operators.policy``); see defaults.toml for each."""

    device_score: float
    device_behaviors: frozenset[str]
    org_score: float
    release_score: float
    release_min_orgs: int
    reweigh_min_orgs: int
    provisional_lift_score: float
    trim: bool                # trim_eager_learner
    global_trimmed_score: float
    global_score: float
    global_min_orgs: int      # never fewer than two: one tenant is never consensus
    global_min_corroboration: float
    trusted_block_score: float
    first_sight_score: float
    first_sight_min_trust: float
    signer_condemn: int
    trusted_unblock_score: float
    global_window: float
    prevalent_orgs: int
    device_ttl: float
    org_ttl: float
    global_ttl: float
    trusted_ttl: float
    cost: CostSettings
    records: RecordSettings

    @classmethod
    def from_config(cls, cfg: Config) -> PolicySettings:
        p = cfg.policy
        cost = CostSettings(float(p.exposure_weight), float(p.parent_condemned),
                            int(p.sibling_min_files), float(p.sibling_bound),
                            float(p.vouch_weight), float(p.vouch_bound), float(p.sibling_block))
        return cls(
            float(p.device_block_score), frozenset(p.device_block_behaviors),
            float(p.org_block_score), float(p.release_score), int(p.release_min_orgs),
            int(p.reweigh_min_orgs), float(p.provisional_lift_score),
            bool(p.trim_eager_learner), float(p.global_trimmed_score),
            float(p.global_block_score), max(2, int(p.global_min_orgs)),
            float(p.global_min_corroboration), float(p.trusted_block_score),
            float(p.first_sight_score), float(p.first_sight_min_trust), int(p.signer_condemn),
            float(p.trusted_unblock_score), float(p.global_window_s), int(p.prevalent_orgs),
            float(p.device_block_ttl_s), float(p.org_block_ttl_s), float(p.global_block_ttl_s),
            float(p.trusted_block_ttl_s), cost, RecordSettings.from_config(cfg))


@dataclass(frozen=True, slots=True)
class DeciderSettings:
    """A model replica (``operators.decide``): its ensemble, policy and state's lifetime."""

    idle_ttl: float           # state.idle_ttl_s
    label_ttl: float          # policy.trusted_block_ttl_s: a labelled file's state lasts this
    sweep_interval: float
    fast: bool                # stream.settled_fast_path
    models: ModelSettings
    policy: PolicySettings

    @classmethod
    def from_config(cls, cfg: Config) -> DeciderSettings:
        return cls(float(cfg.state.idle_ttl_s), float(cfg.policy.trusted_block_ttl_s),
                   float(cfg.state.sweep_interval_s), bool(cfg.stream.settled_fast_path),
                   ModelSettings.from_config(cfg), PolicySettings.from_config(cfg))


@dataclass(frozen=True, slots=True)
class Settings:
    """Every stateful operator's settings, and the one prior they share.

    Built once per job from its configuration (``flows.dataflow.build_flow``):
    the correlators' accusation test and the deciders' ensembles score with
    the same hand-set rule, which holds nothing but its weights.
    """

    correlator: CorrelatorSettings
    decider: DeciderSettings
    prior: Prior

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        return cls(CorrelatorSettings.from_config(cfg), DeciderSettings.from_config(cfg),
                   Prior.from_config(cfg))
