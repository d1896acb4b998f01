#!/usr/bin/env python3
"""Checks manifests rendered by `helm template` from helm/dftg (used by scripts/check-deploy.sh).

1. Core Kubernetes kinds go through the `kubernetes-validate --strict` CLI (offline JSON
   schemas of the Kubernetes API) for each requested Kubernetes version. That CLI only *warns*
   (and exits 0) when it has no schema for a kind, which would also let a removed API version
   (policy/v1beta1, autoscaling/v2beta2, ...) through: here the CRD kinds are routed away from
   it and any warning it prints is a failure.
2. CRD kinds it has no schema for (KEDA ScaledObject / TriggerAuthentication, Prometheus
   Operator ServiceMonitor / PrometheusRule) are validated structurally against the schemas
   below: apiVersion, kind, the required fields and the types of the fields the chart uses,
   with unknown fields refused where the upstream CRDs refuse them (a subset of the upstream
   CRD schemas, written by hand).
3. Cross-references and policy: Services, PDBs, HPAs, ScaledObjects, ServiceMonitors and the
   Ingress point at objects and ports that exist; a Deployment has at most one autoscaler and
   no fixed replicas under one; every container runs non-root with a read-only root
   filesystem, no capabilities, seccomp RuntimeDefault, a /tmp emptyDir, probes and resources;
   workers get a termination grace period longer than a shard and no preStop hook; no Secret
   is rendered and no credential is put in plain env or in the ConfigMap; the dashboard and
   rule copies shipped in the chart equal deploy/grafana/dftg.json and deploy/prometheus/alerts.yml.

Usage: check_manifests.py --kubernetes-validate BIN [-k 1.27.0 ...] --repo ROOT RENDERED.yaml...
Exit status: 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

# Minimum grace period a worker must get after SIGTERM (a shard takes up to a few minutes).
MIN_WORKER_GRACE_SECONDS = 300
WORKER_COMPONENTS = {"inference", "generator"}
TASK_QUEUES = {"dftg.diagnose", "dftg.generate"}

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

_HPA_SCALING_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "value", "periodSeconds"],
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
            },
        },
    },
}

_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}

SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string", "minLength": 1},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "behavior": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {"scaleUp": _HPA_SCALING_RULES, "scaleDown": _HPA_SCALING_RULES},
                                    },
                                },
                            },
                            "scalingModifiers": {"type": "object"},
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string", "minLength": 1},
                                "name": {"type": "string"},
                                "useCachedMetrics": {"type": "boolean"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                # KEDA's CRD: metadata is a map of strings (a number must be quoted)
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                                "authenticationRef": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string", "minLength": 1}, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "minProperties": 1,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {"parameter": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
                        },
                    },
                    "env": {"type": "array"},
                    "podIdentity": {"type": "object"},
                    "hashiCorpVault": {"type": "object"},
                },
            },
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "targetLabels": {"type": "array", "items": {"type": "string"}},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "sampleLimit": {"type": "integer"},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["string", "integer"]},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "honorTimestamps": {"type": "boolean"},
                                "relabelings": {"type": "array"},
                                "metricRelabelings": {"type": "array"},
                                "params": {"type": "object"},
                                "tlsConfig": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "partial_response_strategy": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["expr"],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def selector_matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        val, op, values = labels.get(e["key"]), e["operator"], e.get("values") or []
        if op == "In" and val not in values:
            return False
        if op == "NotIn" and val in values:
            return False
        if op == "Exists" and val is None:
            return False
        if op == "DoesNotExist" and val is not None:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def pod_labels(dep: dict) -> dict:
    return dep["spec"]["template"]["metadata"].get("labels") or {}


def containers(dep: dict) -> list[dict]:
    return dep["spec"]["template"]["spec"].get("containers") or []


def container_port_names(dep: dict) -> set[str]:
    return {p.get("name") for c in containers(dep) for p in c.get("ports") or [] if p.get("name")}


def run_kubernetes_validate(binary: str, versions: list[str], docs: list[dict], label: str, rep: Report) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
        path = f.name
    try:
        cmd = [binary, "--strict", "--quiet"]
        for v in versions:
            cmd += ["-k", v]
        cmd.append(path)
        p = subprocess.run(cmd, capture_output=True, text=True)
        out = (p.stdout + p.stderr).replace(path, label)
        warnings = [line for line in out.splitlines() if line.startswith("WARN")]
        if out.strip():
            print(out.rstrip())
        rep.check(p.returncode == 0, f"{label}: kubernetes-validate --strict failed (exit {p.returncode})")
        rep.check(not warnings, f"{label}: kubernetes-validate has no schema for a core object (removed API version?)")
        print(f"  kubernetes-validate --strict {' '.join('-k ' + v for v in versions)}: {len(docs)} objects, exit {p.returncode}, {len(warnings)} warnings")
    finally:
        os.unlink(path)


def check_crds(docs: list[dict], rep: Report) -> None:
    for d in docs:
        schema = SCHEMAS[d["kind"]]
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
        for e in errors:
            print(f"  ERROR {name_of(d)}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        rep.check(not errors, f"{name_of(d)}: does not match its CRD's structure")
    if docs:
        print(f"  structural CRD check: {len(docs)} objects ({', '.join(sorted({d['kind'] for d in docs}))})")


def check_policy(docs: list[dict], repo: str, rep: Report) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deps = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}

    rep.check("Secret" not in by_kind, "the chart must not render Secrets (credentials come from existing Secrets)")
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    rep.check(len(names) == len(set(names)), f"duplicate objects: {sorted(n for n in names if names.count(n) > 1)}")

    cred = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|API_KEY|TOKEN)", re.I)
    for cm in by_kind.get("ConfigMap", []):
        for k, v in (cm.get("data") or {}).items():
            if k.endswith(".json"):
                continue
            rep.check(not cred.search(k), f"{name_of(cm)}: {k} looks like a credential in a ConfigMap")
            rep.check(not re.search(r"://[^/@\s]+:[^/@\s]+@", str(v)), f"{name_of(cm)}: {k} holds a URL with a password")

    # --- Deployments: security, probes, resources, volumes, roles
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        component = (dep["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        rep.check(selector_matches(dep["spec"]["selector"], pod_labels(dep)), f"{name}: selector does not match its pod labels")
        rep.check(pod.get("automountServiceAccountToken") is False, f"{name}: mounts a service account token it does not need")
        tmp_volumes = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
        for c in containers(dep):
            sc = c.get("securityContext") or {}
            where = f"{name}/{c['name']}"
            rep.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot is not true")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            rep.check(isinstance(uid, int) and uid != 0, f"{where}: runAsUser is not a non-root uid")
            rep.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is not read-only")
            rep.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
            rep.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: capabilities are not dropped (ALL)")
            rep.check(not (sc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            rep.check(seccomp == "RuntimeDefault", f"{where}: seccomp profile is not RuntimeDefault")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            rep.check(mounts.get("/tmp") in tmp_volumes, f"{where}: no emptyDir mounted at /tmp")
            res = c.get("resources") or {}
            rep.check(bool((res.get("requests") or {}).get("cpu")) and bool((res.get("requests") or {}).get("memory")), f"{where}: no cpu/memory requests")
            rep.check(bool((res.get("limits") or {}).get("memory")), f"{where}: no memory limit")
            ports = {p.get("name") for p in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe"):
                pr = c.get(probe) or {}
                http = pr.get("httpGet") or {}
                rep.check(bool(http.get("path")), f"{where}: no {probe} over HTTP")
                rep.check(http.get("port") in ports or isinstance(http.get("port"), int), f"{where}: {probe} port {http.get('port')} is not a container port")
            rep.check(not (c.get("lifecycle") or {}).get("preStop"), f"{where}: has a preStop hook (SIGTERM alone must drain)")
            for e in c.get("env") or []:
                if cred.search(e["name"]):
                    rep.check("valueFrom" in e and "secretKeyRef" in e["valueFrom"], f"{where}: {e['name']} is not taken from a Secret")
            args = c.get("args") or []
            rep.check(bool(args) and args[0] in {"coordinator", "worker", "sim"}, f"{where}: args do not start with a dftg role: {args[:1]}")
        if component == "coordinator":
            rep.check(dep["spec"].get("replicas") == 1 and dep["spec"].get("strategy", {}).get("type") == "Recreate", f"{name}: the coordinator must be 1 replica with the Recreate strategy")
            args = containers(dep)[0].get("args") or []
            rep.check(args[:1] == ["coordinator"] and "--listen" in args, f"{name}: coordinator args {args}")
        if component in WORKER_COMPONENTS:
            grace = pod.get("terminationGracePeriodSeconds") or 30
            rep.check(grace >= MIN_WORKER_GRACE_SECONDS, f"{name}: terminationGracePeriodSeconds {grace} is shorter than a shard ({MIN_WORKER_GRACE_SECONDS}s at least)")
            args = containers(dep)[0].get("args") or []
            rep.check(args[:3] == ["worker", "--role", component], f"{name}: worker args {args[:3]}")
            rep.check("--metrics-listen" in args and "metrics" in container_port_names(dep), f"{name}: workers must serve /metrics (--metrics-listen + a metrics port)")

    # --- Services select pods and name ports that exist
    for name, svc in services.items():
        sel = {"matchLabels": svc["spec"].get("selector") or {}}
        targets = [d for d in deps.values() if selector_matches(sel, pod_labels(d))]
        rep.check(len(targets) >= 1, f"Service/{name}: selects no Deployment's pods")
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort")
            if isinstance(tp, str):
                rep.check(all(tp in container_port_names(d) for d in targets), f"Service/{name}: targetPort {tp} is not a port of the selected pods")
        if name.endswith("-metrics"):
            rep.check(svc["spec"].get("clusterIP") == "None", f"Service/{name}: a worker metrics Service must be headless")

    # --- PDBs
    for pdb in by_kind.get("PodDisruptionBudget", []):
        rep.check(any(selector_matches(pdb["spec"]["selector"], pod_labels(d)) for d in deps.values()), f"{name_of(pdb)}: selects no pods")

    # --- autoscalers
    scaled: dict[str, list[str]] = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa["spec"]["scaleTargetRef"]["name"]
        scaled.setdefault(t, []).append(name_of(hpa))
        rep.check(t in deps, f"{name_of(hpa)}: targets a missing Deployment {t}")
        rep.check(hpa["spec"]["minReplicas"] >= 1, f"{name_of(hpa)}: minReplicas must be >= 1 for an HPA")
    auths = {d["metadata"]["name"]: d for d in by_kind.get("TriggerAuthentication", [])}
    for so in by_kind.get("ScaledObject", []):
        t = so["spec"]["scaleTargetRef"]["name"]
        scaled.setdefault(t, []).append(name_of(so))
        rep.check(t in deps, f"{name_of(so)}: targets a missing Deployment {t}")
        for trig in so["spec"]["triggers"]:
            md = trig.get("metadata") or {}
            rep.check(trig.get("type") == "rabbitmq", f"{name_of(so)}: trigger type {trig.get('type')} is not rabbitmq")
            rep.check(md.get("mode") == "QueueLength", f"{name_of(so)}: mode is not QueueLength")
            rep.check(isinstance(md.get("value"), str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", md.get("value", "")) is not None, f"{name_of(so)}: value must be a quoted number")
            rep.check(md.get("queueName") in TASK_QUEUES, f"{name_of(so)}: queueName {md.get('queueName')} is not a task queue")
            rep.check(md.get("protocol") in {"amqp", "http", "auto"}, f"{name_of(so)}: protocol {md.get('protocol')}")
            rep.check("host" not in md and "password" not in md, f"{name_of(so)}: credentials in trigger metadata")
            ref = (trig.get("authenticationRef") or {}).get("name")
            rep.check(ref in auths, f"{name_of(so)}: authenticationRef {ref} is not a rendered TriggerAuthentication")
            if ref in auths:
                params = {r["parameter"] for r in auths[ref]["spec"].get("secretTargetRef") or []}
                rep.check("host" in params, f"TriggerAuthentication/{ref}: no `host` parameter from a Secret")
        comp = (deps.get(t, {}).get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component")
        want = {"inference": "dftg.diagnose", "generator": "dftg.generate"}.get(comp)
        rep.check(want is None or all((tr.get("metadata") or {}).get("queueName") == want for tr in so["spec"]["triggers"]), f"{name_of(so)}: {comp} workers must scale on {want}")
    for t, owners in scaled.items():
        rep.check(len(owners) == 1, f"Deployment/{t} has several autoscalers: {owners}")
        if t in deps:
            rep.check("replicas" not in deps[t]["spec"], f"Deployment/{t}: fixed replicas under an autoscaler")

    # --- ServiceMonitors select Services and name their ports
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]
        matched = [s for s in services.values() if selector_matches(sel, s["metadata"].get("labels") or {})]
        rep.check(len(matched) >= 1, f"{name_of(sm)}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            rep.check(all(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in matched), f"{name_of(sm)}: port {ep.get('port')} is missing on a selected Service")
            rep.check(ep.get("path") == "/metrics", f"{name_of(sm)}: path is not /metrics")
        if any((s["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "coordinator" for s in matched):
            rep.check(all(ep.get("honorLabels") is True for ep in sm["spec"]["endpoints"]), f"{name_of(sm)}: the coordinator's `job` label (job id) needs honorLabels: true")

    # --- Ingress backends
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                svc = path["backend"]["service"]
                rep.check(svc["name"] in services, f"{name_of(ing)}: backend Service {svc['name']} is not rendered")
                if svc["name"] in services:
                    rep.check(svc["port"].get("name") in {p.get("name") for p in services[svc["name"]]["spec"]["ports"]}, f"{name_of(ing)}: backend port {svc['port']} missing")

    # --- the chart's copies of the dashboard and the rules
    with open(os.path.join(repo, "deploy/grafana/dftg.json")) as f:
        dashboard = json.load(f)
    with open(os.path.join(repo, "deploy/prometheus/alerts.yml")) as f:
        alerts = yaml.safe_load(f)
    for cm in by_kind.get("ConfigMap", []):
        if "dftg.json" in (cm.get("data") or {}):
            rep.check(json.loads(cm["data"]["dftg.json"]) == dashboard, f"{name_of(cm)}: differs from deploy/grafana/dftg.json (copy it to helm/dftg/files/dftg.json)")
            labels = cm["metadata"].get("labels") or {}
            rep.check(labels.get("grafana_dashboard") == "1", f"{name_of(cm)}: no Grafana sidecar label (grafana_dashboard: \"1\")")
    for pr in by_kind.get("PrometheusRule", []):
        rep.check(pr["spec"].get("groups") == alerts["groups"], f"{name_of(pr)}: differs from deploy/prometheus/alerts.yml (copy it to helm/dftg/files/alerts.yml)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubernetes-validate", required=True, help="path of the kubernetes-validate CLI")
    ap.add_argument("-k", "--kubernetes-version", action="append", default=[], help="Kubernetes version(s) to validate against")
    ap.add_argument("--repo", required=True, help="repository root")
    ap.add_argument("rendered", nargs="+")
    args = ap.parse_args()
    versions = args.kubernetes_version or ["1.27.0"]
    failed = 0
    for path in args.rendered:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        label = os.path.basename(path)
        print(f"-- {label}: {len(docs)} objects: " + ", ".join(f"{k}×{n}" for k, n in sorted({d['kind']: sum(1 for x in docs if x['kind'] == d['kind']) for d in docs}.items())))
        rep = Report()
        core = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS]
        crds = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in CRD_KINDS]
        unknown = [d for d in crds if d["kind"] not in SCHEMAS]
        rep.check(not unknown, f"no structural schema for {[name_of(d) for d in unknown]}")
        run_kubernetes_validate(args.kubernetes_validate, versions, core, label, rep)
        check_crds(crds, rep)
        check_policy(docs, args.repo, rep)
        for f_ in rep.failures:
            print(f"  FAIL {f_}")
        print(f"  {label}: {rep.passed} checks passed, {len(rep.failures)} failed")
        failed += len(rep.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
