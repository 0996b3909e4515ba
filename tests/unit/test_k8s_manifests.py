"""The Kubernetes manifests (infra/k8s) and the image (infra/Dockerfile) hang together.

No cluster and no Docker daemon here, so these checks are what can go wrong
without one: every manifest parses; names, labels, ports and the replica
count agree across the StatefulSet, the headless Service and the pod's
script; the ConfigMap's TOML is a valid rapidloop configuration whose
partition counts suit the replica count; every ``RAPIDLOOP_`` variable names
a real setting; and the pod's start script, run with ``sh``, produces a
``rapidloop run -i K -a ...`` command line that rapidloop accepts.

Parsed with PyYAML when it is installed; otherwise with the small
block-style reader below, which covers the subset the manifests use
(mappings, sequences, quoted and plain scalars, flow lists, ``|`` blocks).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rapidloop.base.config import load_config
from rapidloop.cli import build_parser
from rapidloop.cli.run import _addresses, _check_args

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")   # Kubernetes' rule for env names


# ------------------------------------------------------------ YAML subset

def _strip_comment(text: str) -> str:
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or text[i - 1] in " [{:,"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str) -> Any:
    t = _strip_comment(text).strip()
    if t.startswith('"') and t.endswith('"') and len(t) >= 2:
        return json.loads(t)
    if t.startswith("'") and t.endswith("'") and len(t) >= 2:
        return t[1:-1].replace("''", "'")
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [_scalar(x) for x in inner.split(",")] if inner else []
    if t == "{}":
        return {}
    if t in ("true", "false"):
        return t == "true"
    if t in ("null", "~", ""):
        return None
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if re.fullmatch(r"-?\d+\.\d*", t):
        return float(t)
    return t


class _Reader:
    """Indentation-driven reader of one YAML document in block style."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.i = 0

    def _skip(self) -> None:
        while self.i < len(self.lines):
            s = self.lines[self.i].strip()
            if s and not s.startswith("#"):
                return
            self.i += 1

    def _peek(self) -> tuple[int, str] | None:
        self._skip()
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i]
        return len(line) - len(line.lstrip(" ")), line.strip()

    def block(self, indent: int) -> Any:
        nxt = self._peek()
        if nxt is None or nxt[0] < indent:
            return None
        if nxt[1] == "-" or nxt[1].startswith("- "):
            return self.seq(nxt[0])
        return self.mapping(nxt[0])

    def seq(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (nxt := self._peek()) and nxt[0] == indent and (
                nxt[1] == "-" or nxt[1].startswith("- ")):
            rest = nxt[1][1:].strip()
            if not rest:
                self.i += 1
                out.append(self.block(indent + 1))
            elif rest in ("|", "|-"):
                self.i += 1
                out.append(self._literal(indent, keep_newline=rest == "|"))
            elif re.match(r"^[^\"'\[{][^:]*:( |$)", rest):
                # "- key: value": a mapping whose keys sit two columns in.
                line = self.lines[self.i]
                self.lines[self.i] = line.replace("-", " ", 1)
                out.append(self.mapping(indent + 2))
            else:
                self.i += 1
                out.append(_scalar(rest))
        return out

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (nxt := self._peek()) and nxt[0] == indent and not (
                nxt[1] == "-" or nxt[1].startswith("- ")):
            m = re.match(r"^(\"[^\"]*\"|'[^']*'|[^:]+?):( +(.*))?$", nxt[1])
            assert m, f"not a mapping entry: {nxt[1]!r}"
            key = _scalar(m.group(1))
            value = _strip_comment(m.group(3) or "")
            self.i += 1
            if value in ("|", "|-"):
                out[key] = self._literal(indent, keep_newline=value == "|")
            elif value:
                out[key] = _scalar(value)
            else:
                after = self._peek()
                if after and after[0] == indent and after[1].startswith("- "):
                    out[key] = self.seq(indent)
                else:
                    out[key] = self.block(indent + 1)
        return out

    def _literal(self, indent: int, keep_newline: bool) -> str:
        body: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            body.append(line)
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        width = min(len(x) - len(x.lstrip(" ")) for x in body if x.strip())
        text = "\n".join(x[width:] for x in body)
        return text + "\n" if keep_newline else text


def load_all(text: str) -> list[Any]:
    try:
        import yaml
    except ImportError:
        docs = re.split(r"^---[ \t]*$", text, flags=re.M)
        return [_Reader(d).block(0) for d in docs if _Reader(d)._peek() is not None]
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ------------------------------------------------------------------ fixtures

def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {p.name: load_all(p.read_text(encoding="utf-8")) for p in sorted(K8S.glob("*.yaml"))}


def _one(kind: str) -> dict[str, Any]:
    found = [d for docs in _manifests().values() for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _replicas_and_container() -> tuple[int, dict[str, Any]]:
    sts = _one("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return int(sts["spec"]["replicas"]), container


def _config(tmp_path: Path) -> Any:
    toml = _one("ConfigMap")["data"]["rapidloop.toml"]
    tomllib.loads(toml)
    path = tmp_path / "rapidloop.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, env={})


# --------------------------------------------------------------------- tests

def test_every_manifest_parses_and_names_its_kind() -> None:
    manifests = _manifests()
    assert {"configmap.yaml", "service.yaml", "statefulset.yaml",
            "kustomization.yaml"} <= set(manifests)
    for name, docs in manifests.items():
        assert docs, f"{name} is empty"
        for d in docs:
            assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), name
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"] == "rapidloop", name
    (kust,) = manifests["kustomization.yaml"]
    assert sorted(kust["resources"]) == sorted(n for n in manifests if n != "kustomization.yaml")


def test_the_reader_agrees_with_a_few_known_shapes() -> None:
    text = ('a: 1\nb:\n  - x\n  - name: "q # not a comment"\n    v: [1, two]\n'
            'c: |\n  line # kept\n    more\n\nd: true  # comment\ne:\n- 2\n- |\n  x\n')
    assert _Reader(text).block(0) == {
        "a": 1, "b": ["x", {"name": "q # not a comment", "v": [1, "two"]}],
        "c": "line # kept\n  more\n", "d": True, "e": [2, "x\n"]}


def test_statefulset_service_and_ports_agree() -> None:
    svc = _one("Service")
    sts = _one("StatefulSet")
    replicas, container = _replicas_and_container()
    spec = sts["spec"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert spec["serviceName"] == svc["metadata"]["name"]
    assert spec["podManagementPolicy"] == "Parallel"     # the cluster forms only when all run
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    env = _env(container)
    assert int(env["REPLICAS"]["value"]) == replicas >= 2
    (svc_port,) = svc["spec"]["ports"]
    (c_port,) = container["ports"]
    assert int(env["CLUSTER_PORT"]["value"]) == svc_port["port"] == c_port["containerPort"]
    assert svc_port["targetPort"] == c_port["name"]


def test_recovery_volume_and_config(tmp_path: Path) -> None:
    replicas, container = _replicas_and_container()
    sts = _one("StatefulSet")
    cfg = _config(tmp_path)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    # Each pod's share of the partitions on its own volume: ReadWriteOnce is enough.
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The recovery dir is created inside the volume (its temporary sibling too).
    assert Path(cfg.recovery.dir).parent == Path(mounts[claim["metadata"]["name"]])
    assert cfg.recovery.partitions >= replicas and cfg.recovery.partitions % replicas == 0
    workers = int(_env(container)["WORKERS"]["value"])
    assert cfg.kafka.partitions % (replicas * workers) == 0
    config_volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"]
                         if v.get("configMap"))
    assert config_volume["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    assert "--config " + mounts[config_volume["name"]] + "/rapidloop.toml" in \
        container["args"][0]


def test_environment_names_real_settings_and_takes_secrets_from_a_secret() -> None:
    _, container = _replicas_and_container()
    env = _env(container)
    assert all(ENV_NAME.match(name) for name in env)
    ours = {n: e for n, e in env.items() if n.startswith("RAPIDLOOP_")}
    assert {"RAPIDLOOP_KAFKA__CLIENT__SASL.USERNAME",
            "RAPIDLOOP_KAFKA__CLIENT__SASL.PASSWORD"} <= set(ours)
    for name, e in ours.items():
        assert "value" not in e, f"{name}: credentials come from a Secret, not the manifest"
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"]
    cfg = load_config(env={n: "x" for n in ours})   # unknown settings would raise
    assert cfg.kafka.client.as_dict() == {"sasl.username": "x", "sasl.password": "x"}


@pytest.mark.parametrize("ordinal", [0, 1])
def test_pod_script_builds_a_command_rapidloop_accepts(ordinal: int, tmp_path: Path) -> None:
    replicas, container = _replicas_and_container()
    assert container["command"] == ["/bin/sh", "-c"]
    stub = tmp_path / "rapidloop"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "POD_NAME": f"rapidloop-{ordinal}", "POD_NAMESPACE": "prod", "POD_IP": "10.0.0.7"}
    env.update({n: e["value"] for n, e in _env(container).items() if "value" in e})
    done = subprocess.run(["/bin/sh", "-c", container["args"][0]], env=env,
                          capture_output=True, text=True, timeout=30, check=True)
    argv = done.stdout.splitlines()
    assert argv[0] == "run"
    args = build_parser().parse_args(argv)
    _check_args(args)
    assert args.process_id == ordinal
    port = env["CLUSTER_PORT"]
    want = [f"rapidloop-{i}.rapidloop.prod.svc.cluster.local:{port}" for i in range(replicas)]
    want[ordinal] = f"10.0.0.7:{port}"      # its own address: its pod IP, bindable at once
    assert _addresses(args) == want


def test_dockerfile_copies_every_package_and_uses_a_bytewax_python() -> None:
    text = (ROOT / "infra" / "Dockerfile").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    sources = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+?)/? \S+/?$", text, re.M))
    assert {s.split("/")[0] for s in sources} <= copied
    assert all((ROOT / c).exists() for c in copied)
    bases = re.findall(r"^FROM python:(3\.\d+)", text, re.M)
    assert bases and all(b in ("3.11", "3.12") for b in bases)   # Bytewax 0.21 wheels
    assert re.search(r"^USER \d+", text, re.M)
