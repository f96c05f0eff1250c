"""``bench_epoch.summarise``: which runs each verdict compares, and no verdict when the host's speed moved."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_epoch  # noqa: E402

SAMPLES = 120_000


def epoch(train_s: float, threads: int = 2, steps: int = 100) -> dict:
    return {"train_s": train_s, "train_samples_per_s": SAMPLES / train_s, "threads": {"count": threads},
            "steps": steps, "minor_faults": 1000, "steps_by_threads": {str(threads): steps}}


def micro(step_s: float) -> dict:
    return {"samples_per_s": SAMPLES / 100 / step_s, "minor_faults_per_step": 10.0}


def test_a_steady_host_gives_verdicts_from_the_neighbouring_runs():
    runs = {"micro": micro(0.30), "alone": epoch(31.0), "busy": epoch(43.0), "alone_again": epoch(30.0),
            "micro_again": micro(0.30), "busy_1_thread": epoch(44.0, threads=1), "alone_after": epoch(32.0)}
    assert not bench_epoch.needs_retry(runs)
    s = bench_epoch.summarise(runs, cores=2)
    assert s["stable"] and s["epoch_vs_micro_pairs"] == pytest.approx([30 / 31, 1.0])
    assert s["epoch_vs_micro"] == pytest.approx((30 / 31 + 1.0) / 2)
    assert s["busy"]["vs"] == ["alone", "alone_again"] and s["busy"]["slowdown"] == pytest.approx(43 / 30.5)
    assert s["busy"]["drift"] == pytest.approx(31 / 30 - 1) and s["busy"]["proportional"] == pytest.approx(1.5)
    assert s["cpu_share"] == {"run": "busy", "stable": True, "met": True}
    # the 1-thread run is compared with the epochs alone just around it, against the fair share of 1 thread
    assert s["busy_1_thread"]["vs"] == ["alone_again", "alone_after"]
    assert s["busy_1_thread"]["slowdown"] == pytest.approx(44 / 31) and s["busy_1_thread"]["proportional"] == 2.0


def test_a_slowdown_beyond_the_fair_share_is_not_met():
    runs = {"micro": micro(0.30), "alone": epoch(30.0), "busy": epoch(50.0), "alone_again": epoch(30.0),
            "micro_again": micro(0.30)}
    assert bench_epoch.summarise(runs, cores=2)["cpu_share"] == {"run": "busy", "stable": True, "met": False}


def test_a_drifting_host_is_retried_and_the_steadier_bracket_decides():
    # the second epoch alone ran slow (the host, not the loop): no verdict from the first bracket
    runs = {"micro": micro(0.30), "alone": epoch(30.0), "busy": epoch(44.0), "alone_again": epoch(45.0),
            "micro_again": micro(0.30)}
    assert bench_epoch.needs_retry(runs)
    first = bench_epoch.summarise(runs, cores=2)
    assert not first["stable"] and first["cpu_share"]["stable"] is False
    runs |= {"alone_retry": epoch(30.5), "micro_retry": micro(0.30), "busy_retry": epoch(44.0),
             "alone_retry2": epoch(30.0)}
    s = bench_epoch.summarise(runs, cores=2)
    # two of the three pairs agree: the median is theirs
    assert s["stable"] and s["epoch_vs_micro"] == pytest.approx(30 / 30.5)
    assert s["busy_retry"]["vs"] == ["alone_retry", "alone_retry2"]
    assert s["cpu_share"] == {"run": "busy_retry", "stable": True, "met": True}


def test_a_pair_that_disagrees_with_a_steady_epoch_triggers_the_retry():
    runs = {"micro": micro(0.30), "alone": epoch(30.0), "alone_again": epoch(30.0), "micro_again": micro(0.40)}
    assert bench_epoch.needs_retry(runs) and not bench_epoch.summarise(runs, cores=2)["stable"]
    assert "cpu_share" not in bench_epoch.summarise(runs, cores=2)  # --no-competitor


def test_one_pair_compares_the_one_epoch_with_each_step_run():
    runs = {"micro": micro(0.30), "alone": epoch(32.0), "micro_again": micro(0.31)}
    s = bench_epoch.summarise(runs, cores=2)
    assert [p[:2] for p in s["pairs"]] == [["alone", "micro"], ["alone", "micro_again"]]
    assert s["stable"] and s["epoch_vs_micro"] == pytest.approx((30 / 32 + 31 / 32) / 2)


def test_appended_runs_are_pooled_pair_by_pair():
    def one(epoch_s, before, after, load):
        runs = {"micro": micro(before), "alone": epoch(epoch_s), "micro_again": micro(after)}
        env = {"data": "p.parquet", "load_at_start": load, "load_at_end": load + 1}
        return {"env": env, "runs": runs, "summary": bench_epoch.summarise(runs, cores=2)}

    first, second, third = one(33.0, 0.30, 0.31, 0.1), one(34.0, 0.30, 0.30, 0.2), one(32.0, 0.32, 0.30, 0.3)
    pooled = bench_epoch.append_runs(bench_epoch.append_runs(first, second, 2), third, 2)
    assert set(pooled["runs"]) == {"micro", "alone", "micro_again", "micro_2", "alone_2", "micro_again_2",
                                   "micro_3", "alone_3", "micro_again_3"}
    assert pooled["env"]["load_at_start_3"] == 0.3 and pooled["env"]["load_at_start"] == 0.1
    s = pooled["summary"]
    assert [p[:2] for p in s["pairs"]] == [["alone", "micro"], ["alone", "micro_again"], ["alone_2", "micro_2"],
                                           ["alone_2", "micro_again_2"], ["alone_3", "micro_3"],
                                           ["alone_3", "micro_again_3"]]
    shares = [30 / 33, 31 / 33, 30 / 34, 30 / 34, 32 / 32, 30 / 32]
    assert s["epoch_vs_micro_pairs"] == pytest.approx(shares)
    assert s["epoch_vs_micro"] == pytest.approx(sorted(shares)[2] / 2 + sorted(shares)[3] / 2)
    assert s["runs_pooled"] == 3 and s["stable"]
    # a run set is found by its suffix only: names with other underscores stay in their run
    assert set(bench_epoch.run_sets({"busy_1_thread": {}, "alone_retry2": {}, "busy_1_thread_4": {}})) == {1, 4}


def test_latest_md_says_no_verdict_for_runs_the_host_moved_under():
    import run_all

    def yes(ok):
        return "met" if ok else "not met"

    steady = {"micro": micro(0.30), "alone": epoch(31.0), "busy": epoch(43.0), "alone_again": epoch(30.0),
              "micro_again": micro(0.30)}
    s = bench_epoch.summarise(steady, cores=2)
    assert run_all.no_stall_verdict(s, yes) == "met" and run_all.cpu_share_verdict(s, yes) == "met"
    drifting = steady | {"alone_again": epoch(45.0)}
    s = bench_epoch.summarise(drifting, cores=2)
    assert run_all.no_stall_verdict(s, yes).startswith("**no verdict**")
    assert run_all.cpu_share_verdict(s, yes).startswith("**no verdict**: the epochs alone around it disagree by 45%")
    slow_pair = steady | {"alone": epoch(32.0), "micro_again": micro(0.264)}  # 94% and 88%: within the limit
    assert run_all.no_stall_verdict(bench_epoch.summarise(slow_pair, cores=2), yes) == "met, not in every pair"
    lines = "\n".join(run_all.epoch_section({"env": {"data": "p.parquet", "hidden": 32, "batch": 1024,
                                                     "load_at_start": 1.0, "load_at_end": 2.0, "cpu_share": 2,
                                                     "cpu_share_source": "affinity", "os_cpu_count": 2},
                                             "runs": {k: {**v, "threads": {"count": 2, "source": "affinity"},
                                                          "val_s": 1.0, "val_scoring_s": 1.0, "test_scoring_s": 1.0,
                                                          "seconds": 3.0, "steps": 10}
                                                      for k, v in drifting.items()},
                                             "summary": s}))
    assert "| beside a busy process | 2 fixed |" in lines and "| 1.13x | 1.50x | 1.50x | 45% |" in lines
