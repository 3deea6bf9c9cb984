"""Bad values and misuse from Python end in a clear error and change nothing.

A NaN in one input element, a host layer that produces a NaN or never writes its output,
and a layer name with a NUL character: each is refused, naming the stage, layer and
micro-batch (or the argument), and no weight changes.
"""
from __future__ import annotations

import numpy as np
import pytest

import vpipe
from test_external import config as external_config, data
from test_plan import four_layer_request
from test_session import config, hand_plan, mlp_batch, mlp_layers


def all_parameters(s: vpipe.Session, layers: int):
    return [t.copy() for layer in range(layers) for t in s.parameters(layer)]


def test_nan_in_one_input_is_refused_and_changes_no_weight() -> None:
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        s.step(x, y)
        before = all_parameters(s, 4)
        bad = x.copy()
        bad[0, 0] = np.nan
        with pytest.raises(vpipe.TrainingError) as info:
            s.step(bad, y)
        for needle in ("stage 0 layer 0", "micro-batch 0", "input row 0 column 0 is nan"):
            assert needle in info.value.message, f"expected {needle!r} in {info.value.message!r}"
        after = all_parameters(s, 4)
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), "a refused step changed weights"
        assert np.isfinite(s.step(x, y))


def test_a_python_layer_producing_nan_is_named() -> None:
    def forward(x, out):
        out[...] = x
        out[1, 3] = np.nan

    vpipe.register_layer("py.nan", forward, lambda x, y, dy, dx: np.copyto(dx, dy))
    with vpipe.Session(external_config("py.nan", 2, [0, 2])) as s:
        before = all_parameters(s, 4)
        with pytest.raises(vpipe.TrainingError) as info:
            s.step(*data(0))
        assert "stage 0 layer 1 (\"act\") micro-batch 0: output row 1 column 3 is nan" in info.value.message, info.value.message
        assert all(np.array_equal(a, b) for a, b in zip(before, all_parameters(s, 4)))


def test_a_python_layer_that_writes_nothing_is_named() -> None:
    vpipe.register_layer("py.lazy", lambda x, out: None, lambda x, y, dy, dx: np.copyto(dx, dy))
    with vpipe.Session(external_config("py.lazy", 1, [0])) as s:
        with pytest.raises(vpipe.TrainingError) as info:
            s.step(*data(0))
        assert "layer 1" in info.value.message and "did not write its output" in info.value.message, info.value.message


@pytest.mark.parametrize("name", ["a\0b", "\0", ""])
def test_layer_names_with_nul_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no NUL character"):
        vpipe.register_layer(name, lambda x, y: None, lambda x, y, dy, dx: None)


def test_layer_name_must_be_text() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        vpipe.register_layer(b"bytes", lambda x, y: None, lambda x, y, dy, dx: None)


@pytest.mark.parametrize("layer, field", [("act", "external.callback"), ("fc2", "name")])
def test_a_nul_inside_a_protobuf_name_is_refused_naming_the_field(layer: str, field: str) -> None:
    # protobuf-c keeps a string as a C string, so "py.tanh\0x" would silently become "py.tanh"
    # (a registered callback): the library refuses it on the wire instead.
    vpipe.register_layer("py.tanh", lambda x, y: np.tanh(x, out=y), lambda x, y, dy, dx: np.multiply(dy, 1 - y * y, out=dx))
    c = external_config("py.tanh", 2, [0, 2])
    index = [l.name for l in c.model.layers].index(layer)
    if field == "name":
        c.model.layers[index].name = "fc2\0hidden"
    else:
        c.model.layers[index].external.callback = "py.tanh\0hidden"
    with pytest.raises(vpipe.InvalidRequestError) as info:
        vpipe.Session(c)
    expected = f"model.layers[{index}].{field}"
    assert expected in info.value.message and "NUL" in info.value.message, f"expected {expected} and NUL in {info.value.message!r}"
    # The same string without the NUL opens: the refusal is about the NUL, not the name.
    c.model.layers[index].name = "fc2" if field == "name" else c.model.layers[index].name
    if field != "name":
        c.model.layers[index].external.callback = "py.tanh"
    vpipe.Session(c).close()


def test_a_nul_inside_a_plan_request_name_is_refused() -> None:
    r = four_layer_request()
    r.model.layers[3].name = "l3\0"
    with pytest.raises(vpipe.InvalidRequestError, match=r"model\.layers\[3\]\.name.*NUL"):
        vpipe.plan(r)
    r.model.layers[3].name = "l3"
    vpipe.plan(r)
