"""The from-nothing run time of reproduce_all.sh: its record and the results section that renders it."""

import json

import pytest

from cgtaylor.experiments.run_time import main, parse_step, run_time_section, write_run_time


def test_step_times_are_recorded_with_their_total_and_rendered_in_minutes(tmp_path):
    path = tmp_path / "run_time_from_nothing.json"
    main([str(path), "default", "1/7 comparison (profile default)=2400", "7/7 notebooks=300.04"])
    record = json.loads(path.read_text())
    assert record["profile"] == "default" and record["total_seconds"] == 2700.0
    assert [s["name"] for s in record["steps"]] == ["1/7 comparison (profile default)", "7/7 notebooks"]
    text = run_time_section(tmp_path)
    assert "| 1/7 comparison (profile default) | 40.0 |" in text and "| all | 45.0 |" in text
    assert "45 minutes in all" in text and record["machine"] in text


def test_a_missing_record_says_which_command_writes_it(tmp_path):
    assert "`results/run_time_from_nothing.json` is missing" in run_time_section(tmp_path)
    assert "reproduce_all.sh --verify` writes it" in run_time_section(tmp_path)


@pytest.mark.parametrize("bad", ["notebooks", "=12", "notebooks=-1", "notebooks=soon"])
def test_a_malformed_step_is_refused_with_the_accepted_form(bad):
    with pytest.raises(ValueError, match="must read 'name=SECONDS'"):
        parse_step(bad)


def test_no_steps_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one step"):
        write_run_time(tmp_path / "x.json", "default", [])
