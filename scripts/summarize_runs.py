"""Last evaluation (or the one at --step) of each training run: per-set word accuracy, the Average
over chosen sets, median training speed; optionally one figure comparing the runs' curves.

    python scripts/summarize_runs.py RUN_DIR [RUN_DIR ...] [--sets IIIT5k_3000 SVT_647 IC13_857]
        [--step 5000] [--json out.json] [--plot curves.png]
"""
import argparse
import json
import os


def read_history(run: str) -> list[dict]:
    with open(os.path.join(run, "history.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def last_eval(run: str, step: int | None = None) -> dict:
    rows = read_history(run)
    evals = [r for r in rows if r["kind"] == "eval" and (step is None or r["step"] == step)]
    train = [r for r in rows if r["kind"] == "train"]
    if not evals:
        return {"run": run, "step": None}
    last = evals[-1]
    acc = {k[:-4]: v for k, v in last.items() if k.endswith("/acc") and k not in ("combined/acc", "average/acc")}
    ned = {k[:-len("/norm_edit_dis")]: v for k, v in last.items() if k.endswith("/norm_edit_dis")}
    ips = sorted(r["img_per_s"] for r in train[len(train) // 5:]) if train else []
    return {"run": run, "step": last["step"], "acc": acc, "ned": ned,
            "median_img_per_s": ips[len(ips) // 2] if ips else None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--sets", nargs="*", default=None, help="sets for the Average column (default: all)")
    p.add_argument("--step", type=int, default=None, help="compare the evaluations at this step (default: the last)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG: training loss and the Average over --sets against step")
    args = p.parse_args()
    results = [last_eval(r, args.step) for r in args.runs]
    names = sorted({n for r in results for n in r.get("acc", {})})
    avg_sets = args.sets or names
    widths = [max(15, len(n) + 1) for n in names]  # whole set names: "IIIT5k_train_2000[holdout]" and the like
    print("run".ljust(28) + "step".rjust(7) + "img/s".rjust(7) + "".join(n.rjust(w) for n, w in zip(names, widths))
          + "avg".rjust(8))
    for r in results:
        if r["step"] is None:
            print(os.path.basename(os.path.normpath(r["run"])).ljust(28) + "  (no evaluation at that step)")
            continue
        avg = sum(r["acc"].get(n, 0.0) for n in avg_sets) / len(avg_sets)
        r["average_acc"] = avg
        print(os.path.basename(os.path.normpath(r["run"]))[:27].ljust(28) + f"{r['step']:7d}" + f"{r['median_img_per_s'] or 0:7.0f}"
              + "".join(f"{100 * r['acc'].get(n, float('nan')):{w}.2f}" for n, w in zip(names, widths)) + f"{100 * avg:8.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot_runs(args.runs, avg_sets, args.plot)


def plot_runs(runs: list[str], avg_sets: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        rows, name = read_history(run), os.path.basename(os.path.normpath(run))
        train = [r for r in rows if r["kind"] == "train"]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label=name)
        pts = [(r["step"], 100 * sum(r.get(f"{s}/acc", 0.0) for s in avg_sets) / len(avg_sets))
               for r in rows if r["kind"] == "eval"]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", ms=3, label=name)
    ax_loss.set(xlabel="step", ylabel="training loss (smoothed)", yscale="log", title="loss")
    ax_acc.set(xlabel="step", ylabel="word accuracy (%)", ylim=(0, 100), title="Average of " + ", ".join(avg_sets))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
