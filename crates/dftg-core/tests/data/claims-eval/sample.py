#!/usr/bin/env python3
"""Draw the captions of the hand-labelled claims evaluation set (issue 11, part 2).

Reproducible: `python3 sample.py ../../../../../../shared/data > candidates.jsonl` gives the
same 320 captions (seeded); with `--fresh`, the 160 of the fresh draw (see the end). Half are drawn uniformly at random from 19 real caption files (the
five POPE models x two prompts, the three OPERA models x three decodings); the other half are
drawn at random among the captions where a naive reader is likely fooled, 32 for each of five
kinds of trap named in the issue. The patterns only choose which captions get read; the labels
come from reading each caption whole (see README.md).
"""
import json
import os
import random
import re
import sys

DATA = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DFTG_SHARED_DATA", "../shared/data")
rng = random.Random(20261128)

sources = []
for model in ["minigpt-4", "mplug", "llava", "instructblip", "mmgpt"]:
    for prompt in ["instruction1", "instruction2"]:
        sources.append((f"pope/captions/{model}.{prompt}.jsonl", f"pope:{model}.{prompt}"))
for model in ["instructblip", "llava-1.5", "shikra"]:
    for decoding in ["greedy", "beam5", "ours"]:
        sources.append((f"opera-captions/{model}/{decoding}.jsonl", f"opera:{model}.{decoding}"))

captions = []
for path, name in sources:
    with open(os.path.join(DATA, path)) as f:
        for line in f:
            row = json.loads(line)
            captions.append({"source": name, "image_id": int(row["image_id"]), "caption": row["caption"]})

TRAPS = {
    "part-or-modifier": r"\b(toilet bowl|bowl of|cup ?holder|bus stop|train station|train tracks?|car door|pizza box|dog bed|cat bed|"
    r"parking lot|bike (rack|lane|path)|tennis court|baseball (field|game|diamond)|stop sign|fire hydrant|surf ?board shop|"
    r"(car|bus|train|truck|boat|cake|pizza|kitchen|dining|coffee|table|bed) ?(window|seat|door|shop|stand|cart|top|side|frame|cloth|sheet|spread|room))\b",
    "negation": r"\b(no|not|without|nor|neither|absence|free of|lack of|nobody|none)\b",
    "colour-or-material": r"\b(orange|glass|glasses|wooden)\b",
    "hypothetical-or-generic": r"\b(might|may|could|would|perhaps|possibly|maybe|where (people|visitors|guests|one)|such as|often|usually|typically|popular)\b",
    "appended-text": r"(\?|\b(question|answer)\b|\n\s*\d[.)]|\n\s*-)",
}

picked = set()
out = []
for i in rng.sample(range(len(captions)), 160):
    picked.add(i)
    out.append(dict(captions[i], why="random"))
for trap, pattern in TRAPS.items():
    rx = re.compile(pattern, re.IGNORECASE)
    matches = [i for i, c in enumerate(captions) if i not in picked and rx.search(c["caption"])]
    for i in rng.sample(matches, 32):
        picked.add(i)
        out.append(dict(captions[i], why=trap))
# A second, fresh draw (`--fresh`), made after the rules of issue 11 were written: 80 at random
# and 16 for each trap, none of the first 320, with its own seed. Nobody designing rules has
# read these captions; they measure how the rules carry to captions they were not made from.
if "--fresh" in sys.argv:
    fresh_rng = random.Random(20261129)
    first = len(out)
    fresh = []
    for i in fresh_rng.sample([i for i in range(len(captions)) if i not in picked], 80):
        picked.add(i)
        fresh.append(dict(captions[i], why="random", draw="fresh"))
    for trap, pattern in TRAPS.items():
        rx = re.compile(pattern, re.IGNORECASE)
        matches = [i for i, c in enumerate(captions) if i not in picked and rx.search(c["caption"])]
        for i in fresh_rng.sample(matches, 16):
            picked.add(i)
            fresh.append(dict(captions[i], why=trap, draw="fresh"))
    for n, row in enumerate(fresh, start=first):
        print(json.dumps({"n": n, **row}, ensure_ascii=False))
else:
    for n, row in enumerate(out):
        print(json.dumps({"n": n, **row}, ensure_ascii=False))
