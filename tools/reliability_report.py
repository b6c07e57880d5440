"""Run the reliability experiments and draw README's figure.

    python tools/reliability_report.py --work /tmp/reliability --out docs/figures/reliability.png [--trials 10]

Bad data (1000 fuzzed records + 200 good), SIGKILL-and-resume trials, the config-mistake table, and bad
inference inputs. Writes ``report.json`` in --work and the PNG at --out.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402

from openrec.data.fuzz import _huge_header_png  # noqa: E402
from openrec.engine.infer import TextRecognizer, expand_inputs  # noqa: E402
from openrec.engine.reliability import (TINY_TRAIN_CONFIG, config_mistakes_report, fuzz_data_report,  # noqa: E402
                                        kill_resume_trials)


def inference_inputs_report(work: str) -> dict:
    import cv2
    folder = os.path.join(work, "infer_inputs")
    os.makedirs(folder, exist_ok=True)
    for i in range(5):
        cv2.imwrite(os.path.join(folder, f"good{i}.png"), np.full((32, 64 + 16 * i, 3), 60 * i, np.uint8))
    with open(os.path.join(folder, "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 garbage")
    with open(os.path.join(folder, "empty.png"), "wb") as f:
        f.write(b"")
    with open(os.path.join(folder, "huge.png"), "wb") as f:
        f.write(_huge_header_png())
    with open(os.path.join(folder, "readme.txt"), "w") as f:
        f.write("not an image")
    recognizer = TextRecognizer(dict(TINY_TRAIN_CONFIG), None)
    paths = expand_inputs([folder, os.path.join(folder, "missing.png")])
    rows = [{"file": os.path.basename(p), "error": err} for p, _, _, err in recognizer.read_files(paths)]
    return {"files": rows, "read": sum(r["error"] is None for r in rows), "failed": sum(r["error"] is not None for r in rows)}


def draw(report: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), gridspec_kw={"width_ratios": [1.1, 1, 1, 0.8]})
    fz = report["fuzz"]
    reasons = sorted(set(fz["skipped"]) | set(fz["expected_skips"]))
    y = np.arange(len(reasons))
    axes[0].barh(y - 0.2, [fz["expected_skips"].get(r, 0) for r in reasons], 0.4, label="planted")
    axes[0].barh(y + 0.2, [fz["skipped"].get(r, 0) for r in reasons], 0.4, label="skipped")
    axes[0].set_yticks(y, reasons, fontsize=8)
    axes[0].set_title(f"bad data: {fz['records_tried']} records, {fz['crashes']} crashes,\n"
                      f"{fz['records_used']} used, training {fz['training_steps']} steps done", fontsize=9)
    axes[0].legend(fontsize=8)
    kr = report["kill_resume"]
    lost = [n for r in kr["results"] for n in r["steps_lost"]]
    axes[1].hist(lost, bins=np.arange(-0.5, kr["save_every"] + 1.5, 1), rwidth=0.8)
    axes[1].axvline(kr["save_every"] + 0.5, color="r", ls="--", label="one checkpoint interval")
    axes[1].set(xlabel="steps redone after a SIGKILL", ylabel="kills",
                title=f"kill and resume: {kr['passed']}/{kr['trials']} trials bit-identical,\n{len(lost)} kills, "
                      f"final step {kr['total_steps']} in every trial")
    axes[1].title.set_fontsize(9)
    axes[1].legend(fontsize=8)
    cm = report["config_mistakes"]
    secs = [r["seconds"] for r in cm]
    axes[2].bar(range(len(cm)), secs, color=["tab:green" if r["names_it"] else "tab:red" for r in cm])
    axes[2].set(xlabel="wrong config #", ylabel="seconds to the error",
                title=f"config mistakes: {sum(r['names_it'] for r in cm)}/{len(cm)} fail fast\nnaming the key or path")
    axes[2].title.set_fontsize(9)
    inf = report["inference"]
    names = [r["file"] for r in inf["files"]]
    axes[3].barh(range(len(names)), [1] * len(names),
                 color=["tab:green" if r["error"] is None else "tab:orange" for r in inf["files"]])
    short = [(r["error"] or "read").split(":")[0].split(" ")[0] for r in inf["files"]]
    axes[3].set_yticks(range(len(names)), [f"{n}: {e}" for n, e in zip(names, short)], fontsize=8)
    axes[3].set_xticks([])
    axes[3].set_title(f"inference inputs: {inf['read']} read, {inf['failed']} error lines\n(exit status {inf['failed']})",
                      fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.99, wspace=0.45, top=0.85, bottom=0.13)
    fig.savefig(out, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--trials", type=int, default=10)
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    report = {
        "fuzz": fuzz_data_report(os.path.join(args.work, "fuzz"), 1000, 200, 20),
        "kill_resume": kill_resume_trials(os.path.join(args.work, "kill"), args.trials),
        "config_mistakes": config_mistakes_report(os.path.join(args.work, "config")),
        "inference": inference_inputs_report(args.work),
    }
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    draw(report, args.out)
    fz, kr, cm, inf = report["fuzz"], report["kill_resume"], report["config_mistakes"], report["inference"]
    print(f"bad data: {fz['records_tried']} records, {fz['crashes']} crashes, skips {fz['skipped']}")
    print(f"kill/resume: {kr['passed']}/{kr['trials']} identical; steps lost per kill "
          f"{[n for r in kr['results'] for n in r['steps_lost']]}")
    print(f"config mistakes: {sum(r['names_it'] for r in cm)}/{len(cm)} named, max {max(r['seconds'] for r in cm):.2f}s")
    print(f"inference: {inf['read']} read, {inf['failed']} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
