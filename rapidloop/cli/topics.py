"""`rapidloop topics create|list`: the contract's four topics and the feed on a Kafka cluster.

``create`` makes whichever of the configured reports, feedback, decisions,
dead-letter and active-feed topics are missing, and each tenant's own two
input topics (``[tenants] orgs``, ``tenants.partitions`` partitions each:
one tenant's volume rarely needs more, and every partition is one more for
the job's single merging consumer to follow). Existing ones are left alone,
so it is safe to run on every start; configs in ``rapidloop.base.kafka.topic_config``.
``list`` shows the cluster's topics with their partition counts. An unreachable
cluster is one line on stderr within ``kafka.connect_timeout_s``.
"""

from __future__ import annotations

import argparse

from rapidloop.base.config import Config, load_config, tenant_topics
from rapidloop.base.kafka import BrokerUnavailable, describe_topics, ensure_topics, topic_names
from rapidloop.cli import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topics", help="create or list the Kafka topics",
                       description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", required=True, metavar="create|list")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    common.add_argument("--config", metavar="FILE", help="TOML configuration")
    create = actions.add_parser("create", parents=[common], help="create the missing topics")
    create.add_argument("--partitions", type=int, metavar="N",
                        help="partitions per topic (default: kafka.partitions from config; "
                             "tenants' topics: tenants.partitions)")
    create.add_argument("--replication-factor", type=int, default=1, metavar="N",
                        help="replicas per partition (default 1; use 3 on a production cluster)")
    lst = actions.add_parser("list", parents=[common], help="list topics and partition counts")
    lst.add_argument("--all", action="store_true", help="include internal (__) topics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    brokers = args.brokers or cfg.kafka.brokers
    try:
        if args.action == "create":
            return _create(cfg, brokers, args)
        return _list(cfg, brokers, args)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None


def _create(cfg: Config, brokers: str, args: argparse.Namespace) -> int:
    partitions = args.partitions if args.partitions is not None else cfg.kafka.partitions
    if partitions < 1:
        raise CliError(f"--partitions must be at least 1 (got {partitions})")
    if args.replication_factor < 1:
        raise CliError(f"--replication-factor must be at least 1 (got {args.replication_factor})")
    names = topic_names(cfg)
    created = ensure_topics(cfg, brokers, partitions, names, args.replication_factor)
    for name in created:
        print(f"created {name} ({partitions} partitions)")
    own = [t for _, *pair in tenant_topics(cfg) for t in pair]
    if own:
        few = int(cfg.tenants.partitions)
        made = ensure_topics(cfg, brokers, few, own, args.replication_factor)
        for name in made:
            print(f"created {name} ({few} partition{'s' if few != 1 else ''})")
        created += made
        names += own
    if len(created) < len(names):
        existing = [n for n in names if n not in created]
        print(f"already there: {', '.join(existing)}")
    return 0


def _list(cfg: Config, brokers: str, args: argparse.Namespace) -> int:
    topics = describe_topics(cfg, brokers, internal=args.all)
    if not topics:
        print(f"no topics on {brokers}")
        return 0
    width = max(len(n) for n in topics)
    for name in sorted(topics):
        n = topics[name]
        print(f"{name:<{width}}  {n} partition{'s' if n != 1 else ''}")
    return 0
