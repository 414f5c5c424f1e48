import numpy as np
import pytest

from urbanfusion.ingest.urfc import N_DAYS, parse_visits, read_visits
from urbanfusion.pipeline.errors import InputFormatError


def test_visits_add_one_per_user_date_and_hour(tmp_path):
    path = tmp_path / "000123_004.txt"
    path.write_text(
        "aff296a485010219\t20190129&21|22,20190218&19|20|21\n"
        "b0c1\t20190129&21,20181001&00|00\n"  # the same hour twice counts once
        "\n"
        "c2d3\t20190401&10,2019xx01&10,20181002&25\n"  # out of range, junk, bad hour
    )
    v = read_visits(path)
    day = lambda s: (np.datetime64(s) - np.datetime64("2018-10-01")).astype(int)  # noqa: E731
    assert v.counts[day("2019-01-29"), 21] == 2 and v.counts[day("2019-01-29"), 22] == 1
    assert v.counts[day("2019-02-18"), [19, 20, 21]].tolist() == [1, 1, 1]
    assert v.counts[0, 0] == 1
    assert v.counts.sum() == 5 + 2 and v.users == 3 and v.bad_entries == 3 and v.lines == 3


def test_the_weekly_tensor_is_weekday_by_week_by_hour():
    v = parse_visits("u\t20181001&08,20181008&09,20181007&23\n")
    t = v.weekly_tensor()
    assert t.shape == (7, 26, 24) and v.counts.shape == (N_DAYS, 24)
    assert t[0, 0, 8] == 1 and t[0, 1, 9] == 1 and t[6, 0, 23] == 1  # Mondays, then a Sunday


def test_a_line_without_a_tab_is_an_error_with_its_number():
    with pytest.raises(InputFormatError, match="line 2"):
        parse_visits("u\t20181001&08\nnot-visits 20181001&08\n", "area.txt")
