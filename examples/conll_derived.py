"""Derive sentence-level tasks from CoNLL-2003 (independent of adapterkit; only the standard library):

    python examples/conll_derived.py [--src ../shared/data/conll2003] [--out runs/conll-derived]

writes {train,validation,test}.jsonl with one object per sentence:
    text          the sentence (tokens joined by spaces)
    entity_types  the entity types occurring in it, e.g. ["LOC", "PER"]   (multi-label target)
    entities      how many entities it mentions (an IOB2 B- tag starts one) (regression target)
Used by recipes/conll2003-entity-types-multilabel.yaml and recipes/conll2003-entity-count-regression.yaml.
The shared data stay where they are; the derived files go under runs/ (not committed).
"""
import argparse
import json
from pathlib import Path


def sentences(path: Path):
    toks, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if toks:
                yield toks, tags
            toks, tags = [], []
            continue
        toks.append(parts[0])
        tags.append(parts[-1])


def derive(toks, tags) -> dict:
    types = sorted({t[2:] for t in tags if t != "O"})
    count = sum(1 for i, t in enumerate(tags) if t.startswith("B-") or (t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:])))
    return {"text": " ".join(toks), "entity_types": types, "entities": count}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="../shared/data/conll2003")
    ap.add_argument("--out", default="runs/conll-derived")
    args = ap.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        rows = [derive(t, g) for t, g in sentences(src / f"{split}.txt")]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"{out / f'{split}.jsonl'}: {len(rows)} sentences")


if __name__ == "__main__":
    main()
