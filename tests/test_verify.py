"""The reviewer's check: recomputed numbers against committed ones, with the stated tolerances."""

from __future__ import annotations

import pandas as pd

from cgtaylor.experiments.verify import compare_results


def _write(folder, name, frame):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_flops_exact_psnr_within_margin_and_timing_only_listed(tmp_path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    base = pd.DataFrame({"method": ["x", "y"], "flops": [100, 200], "psnr": [40.0, 30.0], "wall_speedup": [2.0, 3.0],
                         "ssim": [0.9, 0.8], "machine": ["one", "one"], "calibration_s": [10.0, 8.0]})
    _write(committed, "tables/t.csv", base)
    _write(fresh, "tables/t.csv", base.assign(psnr=[40.3, 30.0], wall_speedup=[2.5, 3.0], machine=["two", "two"],
                                              calibration_s=[12.0, 8.0]))
    differences = compare_results(committed, fresh)
    assert [d.kind for d in differences] == ["timing", "timing"] and not any(d.fails for d in differences)

    _write(fresh, "tables/t.csv", base.assign(flops=[101, 200], psnr=[41.0, 30.0], method=["x", "z"]))
    kinds = sorted(d.kind for d in compare_results(committed, fresh))
    assert kinds == ["exact", "psnr", "text"]


def test_missing_files_and_shapes_fail(tmp_path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    _write(committed, "x.csv", pd.DataFrame({"flops": [1, 2]}))
    _write(committed, "y.csv", pd.DataFrame({"flops": [1]}))
    _write(fresh, "y.csv", pd.DataFrame({"flops": [1, 2]}))
    assert sorted(d.kind for d in compare_results(committed, fresh)) == ["missing", "shape"]


def test_files_of_benches_outside_reproduce_all_are_listed_as_not_rebuilt_and_do_not_fail(tmp_path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    fresh.mkdir()
    for name in ("real_scale.csv", "real_scale_dit_repeat.csv", "compile_probe.csv"):
        _write(committed, name, pd.DataFrame({"flops": [1]}))
    differences = compare_results(committed, fresh)
    assert [d.kind for d in differences] == ["other bench"] * 3 and not any(d.fails for d in differences)


def test_json_cells_are_compared_value_by_value_with_each_numbers_rule(tmp_path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    setting = '{{"threshold": 0.04, "warmup_steps": 6, "selection_psnr": {psnr}}}'
    base = pd.DataFrame({"params": [setting.format(psnr=48.72507)], "test_psnr_per_sample": ["[48.5189, 37.3917]"]})
    _write(committed, "comparison/c.csv", base)
    # rounding in the last digit of a per-sample PSNR or of a setting's score is within the PSNR margin
    _write(fresh, "comparison/c.csv", base.assign(params=[setting.format(psnr=48.72506)],
                                                   test_psnr_per_sample=["[48.519, 37.3917]"]))
    assert compare_results(committed, fresh) == []

    _write(fresh, "comparison/c.csv", base.assign(params=[setting.replace("6", "5").format(psnr=48.72507)],
                                                   test_psnr_per_sample=["[48.5189, 36.0]"]))
    assert sorted(d.column for d in compare_results(committed, fresh)) == ["params", "test_psnr_per_sample"]


def test_the_same_columns_in_another_order_are_compared_by_name(tmp_path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    base = pd.DataFrame({"model": ["m"], "psnr": [40.0], "ssim": [0.9]})
    _write(committed, "calibration.csv", base)
    _write(fresh, "calibration.csv", base[["ssim", "model", "psnr"]])
    assert compare_results(committed, fresh) == []
    _write(fresh, "calibration.csv", base[["ssim", "model", "psnr"]].assign(psnr=[39.0]))
    assert [d.column for d in compare_results(committed, fresh)] == ["psnr"]
