#!/usr/bin/env python3
"""Checks deploy/Dockerfile against the repository (used by scripts/check-deploy.sh).

- the builder is rust:1.95-bookworm running `cargo build --release --locked --bin dftg`, the
  runtime is debian:bookworm-slim with ca-certificates, runs as uid 10001, and starts dftg in
  exec form (no shell);
- every COPY source exists in the repository (the build context is the repository root);
- every file the crates embed at compile time (include_str!/include_bytes!) lies under a
  path the builder stage copies, so the image builds from exactly what it copies.

Usage: check_dockerfile.py --repo ROOT [--context-list OUT]
  --context-list OUT: write the builder stage's COPY sources, one a line (for a build test).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import sys


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--context-list")
    args = ap.parse_args()
    dockerfile = os.path.join(args.repo, "deploy/Dockerfile")
    ins = instructions(dockerfile)
    failures: list[str] = []
    passed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failures.append(what)

    args_default = {}
    stages: list[dict] = []
    for word, rest in ins:
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args_default[k] = v
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args_default.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append({"image": image, "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, rest))
    check(len(stages) == 2, f"two stages (builder, runtime), found {len(stages)}")
    if len(stages) < 2:
        print("\n".join(f"  FAIL {f}" for f in failures))
        return 1
    build, runtime = stages[0], stages[-1]
    check(build["image"] == "rust:1.95-bookworm", f"builder image is {build['image']}, want rust:1.95-bookworm")
    check(runtime["image"] == "debian:bookworm-slim", f"runtime image is {runtime['image']}, want debian:bookworm-slim")
    build_runs = " ".join(r for w, r in build["ins"] if w == "RUN")
    check("cargo build --release --locked --bin dftg" in build_runs, "the builder runs cargo build --release --locked --bin dftg")
    runtime_runs = " ".join(r for w, r in runtime["ins"] if w == "RUN")
    check("ca-certificates" in runtime_runs, "the runtime installs ca-certificates")
    check("--no-install-recommends" in runtime_runs and "rm -rf /var/lib/apt/lists" in runtime_runs, "the runtime's apt layer is minimal and cleaned")
    users = [r for w, r in runtime["ins"] if w == "USER"]
    check(bool(users) and users[-1].split(":")[0] == "10001", f"the runtime runs as uid 10001 (USER {users[-1] if users else None})")
    check("10001" in runtime_runs, "the runtime creates the 10001 user and group")
    entry = [r for w, r in runtime["ins"] if w == "ENTRYPOINT"]
    try:
        entry_ok = bool(entry) and json.loads(entry[-1])[0] == "/usr/local/bin/dftg"
    except (ValueError, IndexError):
        entry_ok = False
    check(entry_ok, "ENTRYPOINT is the exec form [\"/usr/local/bin/dftg\"] (no shell)")
    check(not any(w == "SHELL" for w, _ in runtime["ins"]), "no SHELL override in the runtime")

    copied: list[str] = []
    for stage in stages:
        for w, r in stage["ins"]:
            if w != "COPY" or "--from=" in r:
                continue
            parts = [p for p in shlex.split(r) if not p.startswith("--")]
            for src in parts[:-1]:
                check(os.path.exists(os.path.join(args.repo, src)), f"COPY source {src} does not exist in the repository")
                if stage is build:
                    copied.append(src.rstrip("/"))

    embedded = 0
    for rs in glob.glob(os.path.join(args.repo, "crates/*/src/**/*.rs"), recursive=True):
        with open(rs) as f:
            text = f.read()
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', text):
            target = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(rs), m.group(1))), args.repo)
            embedded += 1
            ok = any(target == c or target.startswith(c + "/") for c in copied)
            check(ok, f"{os.path.relpath(rs, args.repo)} embeds {target}, which the builder stage does not COPY")
    print(f"  Dockerfile: stages {build['image']} -> {runtime['image']}; builder copies {', '.join(copied)}; {embedded} embedded files covered")

    if args.context_list:
        with open(args.context_list, "w") as f:
            f.write("\n".join(copied) + "\n")

    for f_ in failures:
        print(f"  FAIL {f_}")
    print(f"  Dockerfile: {passed} checks passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
