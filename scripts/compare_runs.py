"""Compare two training histories (e.g. 1 GPU vs DDP): per-step loss difference and throughput ratio.

    python scripts/compare_runs.py A/history.jsonl B/history.jsonl [--skip 40]
"""
import argparse
import json
import statistics


def load(path):
    with open(path) as f:
        return {r["step"]: r for r in map(json.loads, f) if r["kind"] == "train"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--skip", type=int, default=20, help="warm-up steps left out of the throughput median")
    args = p.parse_args()
    a, b = load(args.a), load(args.b)
    steps = sorted(set(a) & set(b))
    rel = [abs(a[s]["step_loss"] - b[s]["step_loss"]) / max(abs(a[s]["step_loss"]), 1e-9) for s in steps]
    ips_a = statistics.median(a[s]["img_per_s"] for s in steps if s > args.skip)
    ips_b = statistics.median(b[s]["img_per_s"] for s in steps if s > args.skip)
    print(f"steps compared: {len(steps)}")
    for s in steps[:5] + steps[-5:]:
        print(f"step {s:5d}: loss {a[s]['step_loss']:.4f} vs {b[s]['step_loss']:.4f}")
    print(f"relative loss difference: median {statistics.median(rel):.4f}, max {max(rel):.4f}")
    print(f"throughput (median img/s after step {args.skip}): {ips_a:.0f} vs {ips_b:.0f}  ratio {ips_b / ips_a:.2f}")


if __name__ == "__main__":
    main()
