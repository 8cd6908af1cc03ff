"""Triton's wording and codes for the errors clients match on (core's model
lookup, version parsing, the load API), with vigil's explanation after them."""

import numpy as np

from vigil_testlib import error_of


def add_sub_inputs(proto):
    a = np.ones((1, 16), np.float32)
    return [proto.input("INPUT0", a), proto.input("INPUT1", a)]


def test_unknown_model(proto):
    err = error_of(proto.infer, "no_such_model", add_sub_inputs(proto))
    assert err.message().startswith("Request for unknown model: 'no_such_model' is not found"), err.message()
    assert str(err.status()) == proto.status("not_found")
    err = error_of(proto.client.get_model_metadata, "no_such_model")
    assert err.message().startswith("Request for unknown model: 'no_such_model' is not found"), err.message()


def test_unknown_version(proto):
    err = error_of(proto.infer, "add_sub", add_sub_inputs(proto), model_version="9")
    assert err.message().startswith("Request for unknown model: 'add_sub' version 9 is not found"), err.message()
    assert str(err.status()) == proto.status("not_found")


def test_version_string_not_an_integer(proto):
    err = error_of(proto.client.get_model_metadata, "add_sub", "latest")
    assert "failed to get model version from specified version string 'latest'" in err.message()
    assert str(err.status()) == proto.status("invalid")
