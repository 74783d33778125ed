"""The benchmark's outputs: the JSON, the table (facenet_ray next to each peer, with the ratio)
and a PNG plot (matplotlib, from the `bench` extra; without it the plot is skipped)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

Row = tuple[str, str, str, str, str, str]  # part, measure, facenet_ray, peer, peer value, vs


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(results, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def show_progress(prefix: str, data: dict) -> None:
    """One line of a part's scalar results, as it finishes."""
    shown = []
    for key, value in data.items():
        if isinstance(value, float):
            shown.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str)) and not isinstance(value, bool) and len(str(value)) < 60:
            shown.append(f"{key}={value}")
        elif key == "score":
            shown.append("score=" + ", ".join(f"{k}={_pct(v) if isinstance(v, float) else v}"
                                              for k, v in value.items()))
    print(prefix + " ".join(shown), flush=True)


# -- ratios -----------------------------------------------------------------------------------


def _div(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def index_ratios(index: dict) -> dict:
    ours = index.get("facenet_ray", {})
    one = index.get("face_recognition_1_process", {})
    pool = index.get("face_recognition_pool", {})
    n = ours.get("ray_cpus") or 1
    out = {
        "facenet_ray_vs_1_process": _div(ours.get("photos_per_s"), one.get("photos_per_s")),
        "facenet_ray_vs_pool": _div(ours.get("photos_per_s"), pool.get("photos_per_s")),
        "facenet_ray_per_core_efficiency": _div(
            ours.get("photos_per_s"), (one.get("photos_per_s") or 0) * n),
    }
    if pool:
        out["pool_per_core_efficiency"] = _div(
            pool.get("photos_per_s"), (one.get("photos_per_s") or 0) * pool["processes"])
    return out


def search_ratios(search: dict) -> dict:
    """How many times less time facenet_ray took than each peer for the same probes."""
    ours = search.get("facenet_ray", {})
    cli = search.get("face_recognition_cli", {})
    df = search.get("deepface", {})
    t = ours.get("sequential_seconds")
    return {
        "cli_repeated_vs_facenet_ray": _div(cli.get("repeated_seconds_extrapolated"), t),
        "cli_batch_vs_facenet_ray": _div(cli.get("batch_seconds"), t),
        "deepface_total_vs_facenet_ray": _div(df.get("total_seconds"), t),
        "deepface_steady_vs_facenet_ray": _div(
            df.get("per_probe_seconds_after_first"),
            (ours.get("latency_p50_ms") or 0) / 1000 or None),
    }


def accuracy_pair(full: dict) -> dict:
    """The product's default rule and plain face_recognition at 0.6 from bench.accuracy."""
    rules = full.get("rules", {})
    baseline = next((k for k in rules if "plain" in k and "0.6" in k), None)
    product = next((k for k in rules if "default" in k), None)
    pick = ("rank1", "false_accept", "wrong", "no_face", "enrolled", "held_out")
    out: dict = {}
    if product:
        out["facenet_ray"] = {"rule": product, **{k: rules[product].get(k) for k in pick}}
    if baseline:
        out["face_recognition_0.6"] = {"rule": baseline,
                                       **{k: rules[baseline].get(k) for k in pick}}
    return out


# -- the table ----------------------------------------------------------------------------------


def _num(value, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}g}"
    return f"{text} {unit}".strip()


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _pp(ours, peer) -> str:
    if ours is None or peer is None:
        return "–"
    return f"{100 * (ours - peer):+.1f} pp"


def rows(results: dict) -> list[Row]:
    out: list[Row] = []
    for part in ("index", "search", "accuracy", "scale", "encode"):
        data = results.get(part)
        if not data:
            continue
        if "skipped" in data:
            out.append((part, "skipped", data["skipped"], "", "", ""))
            continue
        out.extend(globals()[f"_{part}_rows"](data, results))
    return out


def _index_rows(data: dict, results: dict) -> list[Row]:
    ours, one = data.get("facenet_ray", {}), data.get("face_recognition_1_process", {})
    pool, ratios = data.get("face_recognition_pool"), data.get("ratios", {})
    n = ours.get("ray_cpus")
    photos = ours.get("photos") or one.get("photos")
    label = f"{photos} gallery photos, photos/s (service: load + copy + encode)"
    out = [("index", label, _num(ours.get("photos_per_s"), f"({n} CPUs)"),
            "face_recognition loop, 1 process", _num(one.get("photos_per_s")),
            _x(ratios.get("facenet_ray_vs_1_process")))]
    if pool:
        out.append(("index", label, _num(ours.get("photos_per_s")),
                    f"same loop, pool of {pool['processes']} (warm)",
                    _num(pool.get("photos_per_s")), _x(ratios.get("facenet_ray_vs_pool"))))
        out.append(("index", "scaling efficiency per core (vs 1 process)",
                    _pct(ratios.get("facenet_ray_per_core_efficiency")),
                    f"pool of {pool['processes']}", _pct(ratios.get("pool_per_core_efficiency")),
                    ""))
    else:
        out.append(("index", "scaling efficiency per core (vs 1 process)",
                    _pct(ratios.get("facenet_ray_per_core_efficiency")), "", "", ""))
    return out


def _search_rows(data: dict, results: dict) -> list[Row]:
    ours, ratios = data.get("facenet_ray", {}), data.get("ratios", {})
    cli, df = data.get("face_recognition_cli", {}), data.get("deepface", {})
    n = ours.get("probes")
    t = _num(ours.get("sequential_seconds"), "s")
    label = f"{n} probes, one request at a time (HTTP)"
    out: list[Row] = []
    if "error" in cli:
        out.append(("search", label, t, "face_recognition CLI", "error: " + cli["error"], ""))
    elif cli:
        runs = len(cli.get("single_run_seconds", []))
        out.append(("search", label, t,
                    f"face_recognition CLI, 1 run per probe (×{n} from {runs} runs)",
                    _num(cli.get("repeated_seconds_extrapolated"), "s"),
                    _x(ratios.get("cli_repeated_vs_facenet_ray"))))
        out.append(("search", label, t,
                    f"face_recognition CLI, 1 run, all probes (--cpus {cli.get('batch_cpus')})",
                    _num(cli.get("batch_seconds"), "s"),
                    _x(ratios.get("cli_batch_vs_facenet_ray"))))
    if "error" in df:
        out.append(("search", label, t, "DeepFace.find (Dlib)", "error: " + df["error"], ""))
    elif df:
        out.append(("search", label, t, "DeepFace.find Dlib, incl. first call's build",
                    _num(df.get("total_seconds"), "s"),
                    _x(ratios.get("deepface_total_vs_facenet_ray"))))
        out.append(("search", "per probe, steady state (p50 HTTP round trip)",
                    _num(ours.get("latency_p50_ms"), "ms"), "DeepFace.find after the first",
                    _num(1000 * (df.get("per_probe_seconds_after_first") or 0), "ms"),
                    _x(ratios.get("deepface_steady_vs_facenet_ray"))))
    inside = f"{_num(ours.get('encode_p50_ms'))} / {_num(ours.get('shard_search_p50_ms'), 'ms')}"
    out.append(("search", "inside facenet_ray per probe: encode / shard search (p50)", inside,
                "", "", ""))
    out.append(("search", f"{n} probes submitted at once", _num(ours.get("concurrent_seconds"),
                "s"), "", "", ""))
    sc = ours.get("score", {})
    for name, peer in (("face_recognition CLI 0.6, 1 photo/person", cli),
                       ("DeepFace.find Dlib", df)):
        psc = peer.get("score") if isinstance(peer, dict) else None
        if psc:
            out.append(("search", f"these probes: rank-1 of {sc.get('enrolled')} enrolled",
                        _pct(sc.get("rank1")), name, _pct(psc.get("rank1")),
                        _pp(sc.get("rank1"), psc.get("rank1"))))
            out.append(("search", f"these probes: false accepts of {sc.get('held_out')} held out",
                        _pct(sc.get("false_accept")), name, _pct(psc.get("false_accept")),
                        _pp(sc.get("false_accept"), psc.get("false_accept"))))
    if not any(isinstance(p, dict) and p.get("score") for p in (cli, df)) and sc:
        out.append(("search", "these probes: rank-1 / false accepts",
                    f"{_pct(sc.get('rank1'))} / {_pct(sc.get('false_accept'))}", "", "", ""))
    return out


def _accuracy_rows(data: dict, results: dict) -> list[Row]:
    ours, base = data.get("facenet_ray"), data.get("face_recognition_0.6")
    if not ours or not base:
        return [("accuracy", "rules", "not found in bench.accuracy's output", "", "", "")]
    peer = "plain face_recognition, tolerance 0.6"
    n_seeds = len(data.get("full", {}).get("seeds", [])) or 1
    return [
        ("accuracy", f"rank-1, enrolled probes ({ours['enrolled']} over {n_seeds} seeds)",
         _pct(ours["rank1"]), peer, _pct(base["rank1"]), _pp(ours["rank1"], base["rank1"])),
        ("accuracy", f"false accepts, held-out probes ({ours['held_out']})",
         _pct(ours["false_accept"]), peer, _pct(base["false_accept"]),
         _pp(ours["false_accept"], base["false_accept"])),
        ("accuracy", "wrong person, enrolled probes", _pct(ours["wrong"]), peer,
         _pct(base["wrong"]), _pp(ours["wrong"], base["wrong"])),
        ("accuracy", "probes without a face", _pct(ours["no_face"]), peer,
         _pct(base["no_face"]), _pp(ours["no_face"], base["no_face"])),
    ]


def _scale_rows(data: dict, results: dict) -> list[Row]:
    out: list[Row] = []
    p = data.get("placement")
    if p:
        out.append(("scale", f"folders moved when a 3rd server joins ({p['folders']:,})",
                    f"{p['moved_fraction']:.3f}", "ideal", f"{p['ideal_fraction']:.3f}",
                    f"{p['ratio_to_ideal']:.2f} of ideal"))
    for r in data.get("search", []):
        out.append(("scale", f"search p50, {r['faces']:,} faces / {r['shards']} shard(s)",
                    _num(r["p50_ms"], "ms"), "numpy scan, 1 process",
                    _num(r["peer_numpy_scan_p50_ms"], "ms"), _x(r["speedup_vs_peer"])))
    if data.get("search"):
        r = data["search"][-1]
        out.append(("scale", "index memory per face", _num(r["index_bytes_per_face"], "B"),
                    "raw float32 vector", "512 B", ""))
    d = data.get("distribution")
    if d:
        out.append(("scale", f"distribution, {d['files']:,} files / {d['folders']:,} folders",
                    _num(d["files_per_s"], "files/s"), "shutil.copytree",
                    _num(d["peer_copytree_files_per_s"], "files/s"),
                    _x(_div(d["files_per_s"], d["peer_copytree_files_per_s"]))))
        out.append(("scale", "getLag during distribution, p50 / p99",
                    f"{_num(d['getLag_p50_ms'])} / {_num(d['getLag_p99_ms'], 'ms')}",
                    "target p99", "< 50 ms", ""))
    return out


def _encode_rows(data: dict, results: dict) -> list[Row]:
    if data.get("error"):
        return [("encode", "encode_bench", "error", str(data["error"]), "", "")]
    return [("encode", f"large photos ({data.get('photos')}, {data.get('sizes')}), photos/s",
             _num(data.get("facenet_ray_photos_per_s")), "face_recognition defaults",
             _num(data.get("face_recognition_photos_per_s")), _x(data.get("speedup")))]


def markdown_table(table: list[Row], results: dict) -> str:
    m = results.get("meta", {})
    head = ["part", "measure", "facenet_ray", "peer (same run)", "peer", "facenet_ray vs peer"]
    lines = [
        f"Command: `{m.get('command')}` · commit {m.get('commit')} · {m.get('machine')} · "
        f"load average {_load(m)} · {_num(m.get('seconds'), 's')} in all",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in table:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    lines.append("")
    lines.append("Ratios: times faster (× > 1 is facenet_ray ahead); pp: percentage points, "
                 "facenet_ray minus peer.")
    return "\n".join(lines)


def _load(m: dict) -> str:
    start, end = m.get("loadavg_start"), m.get("loadavg_end")
    if not start:
        return "–"
    return f"{start[0]:.1f} → {end[0]:.1f}" if end else f"{start[0]:.1f}"


# -- the plot -----------------------------------------------------------------------------------


def plot(results: dict, path: Path) -> Path | str:
    """Four panels: indexing, repeated search, accuracy, scale. Returns the path, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); pip install -e '.[bench]'"
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _plot_index(axes[0][0], results.get("index") or {})
    _plot_search(axes[0][1], results.get("search") or {})
    _plot_accuracy(axes[1][0], results.get("accuracy") or {})
    _plot_scale(axes[1][1], results.get("scale") or {})
    m = results.get("meta", {})
    fig.suptitle(f"facenet_ray vs peers · {m.get('machine', '')} · {m.get('started', '')}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _empty(ax, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _bars(ax, labels, values, colors, fmt) -> None:
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(fmt(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)


OURS, PEER = "#2b7bba", "#999999"


def _plot_index(ax, data: dict) -> None:
    title = "Indexing a gallery (photos/s, higher is better)"
    if "facenet_ray" not in data:
        return _empty(ax, title, data.get("skipped", "not run"))
    labels, values, colors = [], [], []
    one = data.get("face_recognition_1_process")
    if one:
        labels.append("face_recognition\n1 process")
        values.append(one["photos_per_s"])
        colors.append(PEER)
    pool = data.get("face_recognition_pool")
    if pool:
        labels.append(f"face_recognition\npool of {pool['processes']}")
        values.append(pool["photos_per_s"])
        colors.append(PEER)
    ours = data["facenet_ray"]
    labels.append(f"facenet_ray\n{ours['ray_cpus']} CPUs")
    values.append(ours["photos_per_s"])
    colors.append(OURS)
    _bars(ax, labels, values, colors, lambda v: f"{v:.1f}")
    ax.set_title(title)
    ax.set_ylabel("photos/s")


def _plot_search(ax, data: dict) -> None:
    ours = data.get("facenet_ray")
    title = "Repeated search: time for the probes (s, log; lower is better)"
    if not ours:
        return _empty(ax, title, data.get("skipped", "not run"))
    labels = ["facenet_ray\none at a time", "facenet_ray\nall at once"]
    values = [ours["sequential_seconds"], ours["concurrent_seconds"]]
    colors = [OURS, OURS]
    cli = data.get("face_recognition_cli", {})
    if "batch_seconds" in cli:
        labels += ["CLI\n1 run/probe", "CLI\n1 batch run"]
        values += [cli["repeated_seconds_extrapolated"], cli["batch_seconds"]]
        colors += [PEER, PEER]
    df = data.get("deepface", {})
    if "total_seconds" in df:
        labels.append("DeepFace.find\nDlib")
        values.append(df["total_seconds"])
        colors.append(PEER)
    _bars(ax, labels, values, colors, lambda v: f"{v:.3g}")
    ax.set_yscale("log")
    ax.set_title(title + f"\n{ours['probes']} probes")
    ax.set_ylabel("seconds")


def _plot_accuracy(ax, data: dict) -> None:
    title = "Open-set accuracy (bench.accuracy)"
    ours, base = data.get("facenet_ray"), data.get("face_recognition_0.6")
    if not ours or not base:
        return _empty(ax, title, data.get("skipped", "no results"))
    metrics = [("rank1", "rank-1\n(enrolled)"), ("false_accept", "false accepts\n(held out)"),
               ("wrong", "wrong person\n(enrolled)"), ("no_face", "no face")]
    width = 0.38
    for i, (who, color, label) in enumerate(((base, PEER, "face_recognition 0.6"),
                                             (ours, OURS, "facenet_ray default rule"))):
        xs = [j + (i - 0.5) * width for j in range(len(metrics))]
        vals = [100 * (who.get(k) or 0) for k, _ in metrics]
        bars = ax.bar(xs, vals, width, color=color, label=label)
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(metrics)), [m[1] for m in metrics], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8)
    ax.set_title(title)


def _plot_scale(ax, data: dict) -> None:
    title = "Search latency vs gallery faces (fake encoder)"
    runs = data.get("search") or []
    if not runs:
        return _empty(ax, title, data.get("skipped", "not run"))
    for shards in sorted({r["shards"] for r in runs}):
        pts = sorted((r["faces"], r["p50_ms"]) for r in runs if r["shards"] == shards)
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"facenet_ray, {shards} shard(s)")
    peer = {}
    for r in runs:
        peer.setdefault(r["faces"], r["peer_numpy_scan_p50_ms"])
    pts = sorted(peer.items())
    ax.plot(*zip(*pts, strict=True), marker="s", color=PEER, linestyle="--",
            label="numpy scan, 1 process")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("faces in the gallery")
    ax.set_ylabel("p50 ms per probe (beyond encoding)")
    ax.legend(fontsize=8)
    ax.set_title(title)


def main(argv: list[str] | None = None) -> None:
    """Draw the table (.md) and the plot (.png) again from a results JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    table = markdown_table(rows(results), results)
    args.results.with_suffix(".md").write_text(table + "\n")
    print(table)
    drawn = plot(results, args.results.with_suffix(".png"))
    print(f"\nplot: {drawn}")


if __name__ == "__main__":
    main()
