"""The agile loop on ESC-10: search from a few examples, label the hits, train a head, test on fold 3.

    python -m bench.agile_esc10 [--shared ../shared] [--work /tmp/agile_esc10] [--examples 5]
                                [--top_k 10] [--seeds 0,1,2]

1. Tag folds 1-2 (the pool) and fold 3 (held out) of ESC-10 with ``models/yamnet-approx``, as two runs
   of one output.
2. Per class, ``--examples`` clips of the pool (seeded) are the queries of one ``beam_jobs.search`` over
   the pool's run only (``--top_k`` hits per query, one per file).
3. Every hit is labelled with its file's known label, as a person marking the page would: rows
   ``uri,start_s,end_s,label`` for the hit's window (its fold too).  Fold 3 keeps its whole-file labels
   for testing.
4. ``build_training_set`` (train folds 1-2, 10 % of their labelled clips by URI hash for early stopping,
   test fold 3) and ``train_head`` per seed, without export.
5. The same with every clip of folds 1-2 labelled (``bench.esc10_head``'s protocol): the head trained
   on all labels.

Prints clip accuracy on fold 3 for both, with the labelling budget, and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.esc10_head import build, esc10_setup, read_truth, train  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/agile_esc10")
    parser.add_argument("--examples", type=int, default=5, help="query clips per class")
    parser.add_argument("--top_k", type=int, default=10, help="hits per query (one per file)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--seed", type=int, default=0, help="picks the query clips")
    return parser.parse_args(argv)


def tag_runs(esc10: Path, model: Path, truth: dict, out: Path) -> dict[str, str]:
    """Folds 1-2 and fold 3 as two runs of ``out``; returns {'pool': run id, 'held_out': run id}."""
    from beam_jobs import tag_audio

    runs = {}
    for name, folds in (("pool", ("1", "2")), ("held_out", ("3",))):
        manifest = out.parent / f"{name}.txt"
        manifest.write_text("".join(f"{esc10 / 'audio' / clip}\n" for clip, (_, fold) in sorted(truth.items())
                                    if fold in folds))
        runs[name] = f"{name}-{'-'.join(folds)}"
        if tag_audio.run(["--input_manifest", str(manifest), "--output", str(out), "--model_path", str(model),
                          "--run_id", runs[name], "--progress_s", "0"]) != 0:
            raise RuntimeError("tag_audio failed")
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = esc10_setup(args)
    if setup is None:
        return 2
    esc10, model, work, seeds = setup
    from beam_jobs import search

    truth = read_truth(esc10 / "labels.csv")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "tagged"
    runs = tag_runs(esc10, model, truth, out)

    rng = np.random.default_rng(args.seed)
    classes = sorted({label for label, _ in truth.values()})
    queries = {}
    for label in classes:
        pool = sorted(clip for clip, (lab, fold) in truth.items() if lab == label and fold in ("1", "2"))
        queries[label] = [str(esc10 / "audio" / c) for c in rng.choice(pool, args.examples, replace=False)]
    command = ["--frames", str(out), "--runs", runs["pool"], "--output", str(work / "search"),
               "--top_k", str(args.top_k), "--max_per_file", "1", "--no_thumbnails"]
    for label in classes:
        for query in queries[label]:
            command += ["--query", query]
    if search.run(command) != 0:
        raise RuntimeError("search failed")

    import pyarrow.parquet as pq

    hits = pq.read_table(work / "search" / "hits.parquet").to_pylist()
    query_class = {q: label for label, qs in queries.items() for q in qs}
    rows = {}
    for hit in hits:  # the person marks each hit with what it is
        clip = Path(hit["uri"]).name
        label, fold = truth[clip]
        rows[(hit["uri"], round(hit["start_s"], 3), round(hit["end_s"], 3))] = (label, fold)
    labels_csv = work / "hit_labels.csv"
    with open(labels_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "start_s", "end_s", "label", "fold"])
        for (uri, start, end), (label, fold) in sorted(rows.items()):
            writer.writerow([uri, start, end, label, fold])
        for clip, (label, fold) in sorted(truth.items()):
            if fold == "3":
                writer.writerow([str(esc10 / "audio" / clip), "", "", label, fold])
    labelled_files = {uri for uri, _, _ in rows}
    purity = float(np.mean([truth[Path(h["uri"]).name][0] == query_class[h["query"]] for h in hits]))
    per_class_files = {label: len({u for u in labelled_files if truth[Path(u).name][0] == label})
                       for label in classes}

    pool_files = sum(fold in ("1", "2") for _, fold in truth.values())
    results = {"examples_per_class": args.examples, "top_k": args.top_k, "seeds": seeds, "hits": len(hits),
               "labelled_spans": len(rows), "labelled_files": len(labelled_files), "pool_files": pool_files,
               "hit_precision": purity, "labelled_files_per_class": per_class_files, "heads": {}}
    for name, labels in (("from search hits", labels_csv), ("all labels of folds 1-2", esc10 / "labels.csv")):
        ds_dir = work / f"ds_{'hits' if labels == labels_csv else 'all'}"
        build(out, labels, ds_dir, "3")
        accuracy = []
        for seed in seeds:
            metrics = train(ds_dir, work / f"head_{ds_dir.name}_{seed}", seed, False)
            accuracy.append(metrics["splits"]["test"]["clip_accuracy"])
        report = json.loads((ds_dir / "report.json").read_text())
        results["heads"][name] = {"test_clip_accuracy": accuracy, "mean": float(np.mean(accuracy)),
                                  "train_frames": report["splits"]["train"]["frames"],
                                  "train_clips": report["splits"]["train"]["clips"]}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{args.examples} query clips per class, top {args.top_k} files per query: {len(hits)} hits, "
          f"{results['labelled_files']} of {results['pool_files']} pool clips labelled "
          f"({purity:.1%} of hits are of the query's class)")
    print("| head trained on | train frames | fold-3 clip accuracy (mean over seeds) | per seed |")
    print("|---|---:|---:|---|")
    for name, row in results["heads"].items():
        print(f"| {name} | {row['train_frames']} | **{row['mean']:.1%}** | "
              f"{', '.join(f'{a:.1%}' for a in row['test_clip_accuracy'])} |")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
