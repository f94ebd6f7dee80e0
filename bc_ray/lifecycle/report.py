"""The demo's report: a table per version on the terminal, JSON and a PNG chart in the store."""

from __future__ import annotations

import io
import time

import orjson

from bc_ray.render import table
from bc_ray.store.store import Store


def text(report: dict) -> str:
    rows = []
    for row in report["rows"]:
        stages = ", ".join(f"{k.split(' (')[0]} {v:.0f}s" for k, v in row["seconds"].items())
        rows.append([row["t"], row["batch"], row["batch_edges"], row["new_users"],
                     row["new_items"], row["version"], row["status"], row["dim"],
                     row["recall_at_50"],
                     row["auc_true_ver0"], row["auc_transformed"],
                     row["auc_transformed"] - row["auc_true_ver0"],
                     row.get("auc_raw_current"), row["align_error"],
                     row["rows_refreshed"], stages])
    header = ["t", "batch", "edges", "new users", "new items", "version", "status", "dim",
              "Recall@50", "consumer AUC (true ver-0)",
              "consumer AUC (served as ver-0)", "AUC change", "AUC without bc_ray",
              "align error", "rows",
              "stage times"]
    serve = report["serve"]
    return "\n".join([
        f"bc_ray demo: {report['dataset']}, model {report['config'].get('model', 'graphsage')}, "
        f"method {report['config']['method']}, store "
        f"{report['store']}",
        table(rows, header),
        f"Ray Serve at {serve['url']} serves version {serve['served_version']}; consumers fed "
        f"its ver-0 embeddings over HTTP: mean AUC {serve['auc_from_http']:.4f}",
        f"(version 0's AUCs are on the consumers' own training period) total "
        f"{report['seconds']:.0f}s"])


def chart(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    steps = [r["t"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, [r["auc_true_ver0"] for r in rows], marker="o", label="true ver-0 (Keep-All)")
    left.plot(steps, [r["auc_transformed"] for r in rows], marker="s",
              label=f"served as ver-0 ({report['config']['method']})")
    if all("auc_raw_current" in r for r in rows):
        left.plot(steps, [r["auc_raw_current"] for r in rows], marker="x", linestyle="--",
                  label="without bc_ray (current version fed raw)")
    left.set_title("consumer ROC-AUC (mean of 5 tasks)")
    left.set_xlabel("time t")
    left.legend()
    right.plot(steps, [r["align_error"] for r in rows], marker="o", color="tab:red")
    right.set_title("alignment error ||z~_0 - z_0||")
    right.set_xlabel("time t")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def save(report: dict, store: Store) -> dict[str, str]:
    """reports/demo-<time>/{report.json, report.png} in the store (outside the versioned data)."""
    prefix = f"reports/demo-{time.strftime('%Y%m%dT%H%M%S')}"
    store.put(f"{prefix}/report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2
                                                     | orjson.OPT_NON_STR_KEYS))
    store.put(f"{prefix}/report.png", chart(report))
    return {"json": store.io.uri_of(f"{prefix}/report.json"),
            "png": store.io.uri_of(f"{prefix}/report.png")}
