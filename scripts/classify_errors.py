"""Sorts the misreads of ``tools/eval_rec.py --errors errors.tsv`` (set, label, prediction per line) by
kind, on the benchmark's normalised strings (lower case, letters and digits only):

    python scripts/classify_errors.py errors.tsv

confused (same length, letters wrong), missing letters (of which a doubled letter read once), extra
letters, and mostly wrong (empty, 3+ letters short, or under half similar); then the most frequent
letter confusions."""
import argparse
import collections
import difflib
import re
import sys


def normalise(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def kind(label: str, pred: str) -> str:
    if not pred or len(pred) < len(label) - 2 or difflib.SequenceMatcher(None, label, pred).ratio() < 0.5:
        return "mostly wrong"
    if len(pred) == len(label):
        return "confused"
    return "missing" if len(pred) < len(label) else "extra"


def doubled_letter_read_once(label: str, pred: str) -> bool:
    return any(label[i] == label[i + 1] and label[:i] + label[i + 1:] == pred for i in range(len(label) - 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("errors", help="the TSV written by tools/eval_rec.py --errors")
    p.add_argument("--top", type=int, default=10, help="letter confusions listed")
    args = p.parse_args(argv)
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    confusions: collections.Counter = collections.Counter()
    with open(args.errors, encoding="utf-8") as f:
        for line in f:
            name, label, pred = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            label, pred = normalise(label), normalise(pred)
            k = kind(label, pred)
            kinds[name][k] += 1
            if k == "missing" and doubled_letter_read_once(label, pred):
                kinds[name]["missing: a doubled letter read once"] += 1
            if k == "confused":
                confusions.update((a, b) for a, b in zip(label, pred) if a != b)
    columns = ["confused", "missing", "missing: a doubled letter read once", "extra", "mostly wrong"]
    print(f"{'set':<16}" + "".join(f"{c:>{len(c) + 2}}" for c in columns))
    for name, counts in list(kinds.items()) + [("all", sum(kinds.values(), collections.Counter()))]:
        print(f"{name:<16}" + "".join(f"{counts[c]:>{len(c) + 2}}" for c in columns))
    print("letter confusions (label -> read):",
          ", ".join(f"{a}->{b} {n}" for (a, b), n in confusions.most_common(args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
