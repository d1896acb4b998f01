#!/usr/bin/env python3
"""Checks deploy/compose/ (used by scripts/check-deploy.sh and scripts/test.sh).

- compose.yaml is valid against the Compose specification's JSON schema
  ($DFTG_DATA/compose-spec/compose-spec.json, or --schema);
- every bind-mounted file or folder exists (paths are relative to the compose file);
- every published port listens on loopback only (the stack's credentials are local ones);
- the dftg services run known dftg commands, and with --dftg BINARY every flag they pass
  exists in that binary's `--help`;
- job.toml's corpus and model endpoint are inside the stack's DFTG_ALLOW_STORES and
  DFTG_ALLOW_ENDPOINTS, so the coordinator accepts it;
- Grafana is provisioned with the dashboard of deploy/grafana.

Usage: check_compose.py [--schema compose-spec.json] [--dftg BINARY] [--file FILE] [COMPOSE_DIR]
Exit status 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

try:
    import jsonschema
    import tomllib
    import yaml
except ImportError as e:  # pragma: no cover - environment problem, said plainly
    sys.exit(f"check_compose.py needs python3 >= 3.11 with PyYAML and jsonschema: {e}")

DFTG_COMMANDS = {"coordinator", "worker", "sim", "submit", "status", "run"}


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    data = os.environ.get("DFTG_DATA", os.path.join(repo, "..", "shared", "data"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", default=os.path.join(data, "compose-spec", "compose-spec.json"))
    ap.add_argument("--dftg", help="a dftg binary: check the services' flags against its --help")
    ap.add_argument("--file", help="the compose file (default: COMPOSE_DIR/compose.yaml); relative paths in it stay relative to COMPOSE_DIR")
    ap.add_argument("dir", nargs="?", default=os.path.join(repo, "deploy", "compose"))
    args = ap.parse_args()
    problems: list[str] = []
    path = args.file or os.path.join(args.dir, "compose.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    with open(args.schema) as f:
        schema = json.load(f)
    # the specification declares draft-07
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{path}: {where}: {err.message}")
    services = doc.get("services", {}) if isinstance(doc, dict) else {}
    for name, svc in services.items():
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith(".") or src.startswith("/"):
                if not os.path.exists(os.path.join(args.dir, src)):
                    problems.append(f"{name}: bind mount source {src} does not exist")
        for port in svc.get("ports", []) or []:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published beyond loopback")
        if svc.get("image", "").startswith("dftg:"):
            cmd = svc.get("command") or []
            if not cmd or cmd[0] not in DFTG_COMMANDS:
                problems.append(f"{name}: dftg command {cmd[:1]} is not one of {sorted(DFTG_COMMANDS)}")
            elif args.dftg:
                sub = [cmd[0]]
                helptext = subprocess.run([args.dftg, *sub, "--help"], capture_output=True, text=True).stdout
                for word in cmd[1:]:
                    if word.startswith("--") and f"{word.split('=')[0]} " not in helptext and f"{word}\n" not in helptext:
                        problems.append(f"{name}: dftg {cmd[0]} has no flag {word}")
    env = (services.get("coordinator") or {}).get("environment") or {}
    job_path = os.path.join(args.dir, "job.toml")
    with open(job_path, "rb") as f:
        job = tomllib.load(f)
    stores = [s for s in str(env.get("DFTG_ALLOW_STORES", "")).split(",") if s]
    endpoints = [e for e in str(env.get("DFTG_ALLOW_ENDPOINTS", "")).split(",") if e]
    corpus = job.get("corpus", {}).get("path", "")
    if not any(corpus == s or corpus.startswith(s.rstrip("/") + "/") for s in stores):
        problems.append(f"{job_path}: corpus {corpus} is outside DFTG_ALLOW_STORES {stores}")
    endpoint = job.get("model", {}).get("endpoint", "")
    if not any(endpoint.startswith(e) for e in endpoints):
        problems.append(f"{job_path}: model endpoint {endpoint} is outside DFTG_ALLOW_ENDPOINTS {endpoints}")
    grafana_mounts = " ".join(str(v) for v in (services.get("grafana") or {}).get("volumes", []))
    if "../grafana/dftg.json" not in grafana_mounts or "provisioning" not in grafana_mounts:
        problems.append("grafana: the dftg dashboard or the provisioning folder is not mounted")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
