import math

import pytest

from replib.params import (
    ParameterError,
    check_choice,
    check_float,
    check_int,
    check_int_list,
)


def test_check_choice_accepts_and_returns_allowed_value():
    assert check_choice("dataset", "digits", ("mnist", "digits")) == "digits"


def test_check_choice_unknown_value_names_parameter_and_choices():
    with pytest.raises(ParameterError) as err:
        check_choice("dataset", "cifar", ("mnist", "digits"))
    msg = str(err.value)
    assert "dataset" in msg and "'cifar'" in msg
    assert "'mnist'" in msg and "'digits'" in msg


def test_parameter_error_is_a_value_error():
    assert issubclass(ParameterError, ValueError)


@pytest.mark.parametrize("value", [1, 7, 100, 3.0])
def test_check_int_accepts_integers_in_range(value):
    out = check_int("N", value, 1, 100)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -3])
def test_check_int_rejects_non_positive(value):
    with pytest.raises(ParameterError) as err:
        check_int("N_TRAIN", value, 1)
    msg = str(err.value)
    assert "N_TRAIN" in msg and ">= 1" in msg


def test_check_int_rejects_above_maximum_and_states_range():
    with pytest.raises(ParameterError) as err:
        check_int("n", 11, 1, 10)
    msg = str(err.value)
    assert "n=11" in msg and ">= 1" in msg and "<= 10" in msg


@pytest.mark.parametrize("value", [True, False, 2.5, "3", None, math.nan, math.inf])
def test_check_int_rejects_bool_fraction_string_nan(value):
    with pytest.raises(ParameterError) as err:
        check_int("WIDTH", value, 0)
    assert "WIDTH" in str(err.value) and ">= 0" in str(err.value)


@pytest.mark.parametrize("value", [0.0, 0.2, 1, 5.5])
def test_check_float_accepts(value):
    out = check_float("SIGMA", value, 0.0)
    assert out == float(value) and type(out) is float


def test_check_float_rejects_negative_sigma():
    with pytest.raises(ParameterError) as err:
        check_float("SIGMA", -0.1, 0.0)
    msg = str(err.value)
    assert "SIGMA" in msg and ">= 0.0" in msg


@pytest.mark.parametrize("value", [math.nan, True, "0.2", None])
def test_check_float_rejects_nan_bool_and_non_numbers(value):
    with pytest.raises(ParameterError) as err:
        check_float("SIGMA", value, 0.0)
    assert "SIGMA" in str(err.value) and ">= 0.0" in str(err.value)


def test_check_float_strict_and_maximum():
    with pytest.raises(ParameterError) as err:
        check_float("LR", 0.0, 0.0, strict=True)
    assert "LR" in str(err.value) and "> 0.0" in str(err.value)
    assert check_float("LR", 1e-9, 0.0, strict=True) == 1e-9
    with pytest.raises(ParameterError) as err:
        check_float("P", 1.5, 0.0, maximum=1.0)
    assert "P" in str(err.value) and "<= 1.0" in str(err.value)
    assert check_float("P", 1.0, 0.0, maximum=1.0) == 1.0


def test_check_int_list_accepts_and_converts():
    assert check_int_list("N_SWEEP", [5, 20, 100.0]) == [5, 20, 100]
    assert check_int_list("N_SWEEP", (1, 2), min_length=2) == [1, 2]


def test_check_int_list_too_short():
    with pytest.raises(ParameterError) as err:
        check_int_list("N_SWEEP", [5], min_length=2)
    msg = str(err.value)
    assert "N_SWEEP" in msg and "at least 2" in msg and ">= 1" in msg


@pytest.mark.parametrize("values", ["12", 5, None])
def test_check_int_list_rejects_non_lists(values):
    with pytest.raises(ParameterError) as err:
        check_int_list("N_SWEEP", values)
    assert "N_SWEEP" in str(err.value)


def test_check_int_list_bad_element_names_its_position():
    with pytest.raises(ParameterError) as err:
        check_int_list("N_SWEEP", [5, 0, 7])
    msg = str(err.value)
    assert "N_SWEEP[1]" in msg and ">= 1" in msg
    with pytest.raises(ParameterError) as err:
        check_int_list("N_SWEEP", [5, True])
    assert "N_SWEEP[1]" in str(err.value)


def test_int_list_maximum_and_order():
    assert check_int_list("N_LIST", [8, 512], 2, 2, maximum=1000, increasing=True) == [8, 512]
    with pytest.raises(ParameterError, match="N_LIST.*<= 1000"):
        check_int_list("N_LIST", [8, 5000], 2, 2, maximum=1000)
    with pytest.raises(ParameterError, match="N_LIST.*increasing"):
        check_int_list("N_LIST", [512, 8], 2, 2, increasing=True)
