import json
import math

import pytest

from urbanfusion.pipeline import strict_json


def test_nan_and_infinity_are_written_as_null_at_any_depth():
    text = strict_json.dumps({"f1": math.nan, "per_class": [1.0, math.inf, {"x": -math.inf}]})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"f1": None, "per_class": [1.0, None, {"x": None}]}


def test_a_nan_hidden_where_it_cannot_be_replaced_is_refused_not_written():
    class Odd:
        pass

    with pytest.raises(ValueError):
        strict_json.dumps({"x": Odd()}, default=lambda o: math.nan)
