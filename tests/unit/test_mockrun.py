"""basisit.cloud.mockrun's speed-ups change nothing: its replacements return what the SDK's own
functions return, and the SDK's functions are back in place after a run."""

from __future__ import annotations

import gc

import pulumi
import pytest
from pulumi.runtime import resource as presource
from pulumi.runtime import rpc as prpc
from pulumi.runtime.sync_await import _ensure_event_loop

from basisit.cloud import mockrun

UNKNOWN = pulumi.output.UNKNOWN


def _cyclic() -> dict:
    d: dict = {"a": [1, 2]}
    d["self"] = d
    return d


CASES = {
    "none": None,
    "int": 1,
    "str": "x",
    "unknown": UNKNOWN,
    "flat-list": [1, "a", None],
    "unknown-deep-in-lists": [1, [2, [UNKNOWN]]],
    "unknown-deep-in-dicts": {"a": {"b": [1, {"c": UNKNOWN}]}},
    "known-deep": {"a": {"b": [1, {"c": 2}]}},
    "cyclic-dict": _cyclic(),
    "tuple-not-walked": ({"k": UNKNOWN},),
    "set-not-walked": {"s": {UNKNOWN}},
}


@pytest.mark.parametrize("val", list(CASES.values()), ids=list(CASES))
def test_contains_unknowns_is_the_sdks(val):
    assert mockrun.contains_unknowns(val) is prpc.contains_unknowns(val)


class _Resource:  # the SDK's call shape: Resource.__init__ <- CustomResource.__init__ <- concrete __init__
    def __init__(self, fn):
        self.trace = fn()


class _Custom(_Resource):
    def __init__(self, fn):
        super().__init__(fn)


class _Concrete(_Custom):
    def __init__(self, fn):
        super().__init__(fn)


def _user_code(fn):
    return _Concrete(fn).trace


def test_stack_trace_is_the_sdks():
    ours, theirs = _user_code(mockrun.stack_trace), _user_code(presource._get_stack_trace)
    assert len(theirs.frames) > 3
    assert ours == theirs
    assert theirs.frames[0].pc.uri.endswith("/tests/unit/test_mockrun.py")
    # and a second time, from the memo
    assert _user_code(mockrun.stack_trace) == _user_code(presource._get_stack_trace)


def test_stack_trace_without_three_inits_is_empty_like_the_sdks():
    assert mockrun.stack_trace() == presource._get_stack_trace() == presource._get_stack_trace().__class__()


def test_a_run_restores_the_sdk_and_the_collector():
    def program() -> dict:
        pulumi.CustomResource("test:index:Thing", "thing")
        return {"x": 1}

    loop = _ensure_event_loop()
    before = prpc.contains_unknowns, presource._get_stack_trace
    executor = getattr(loop, "_default_executor", None)
    assert mockrun.run_program(program, "p", "s", {}).outputs == {"x": 1}
    assert (prpc.contains_unknowns, presource._get_stack_trace) == before
    assert getattr(loop, "_default_executor", None) is executor
    assert gc.isenabled()
    with pytest.raises(RuntimeError), mockrun.fast_runtime():
        assert prpc.contains_unknowns is mockrun.contains_unknowns
        assert isinstance(loop._default_executor, mockrun.InlineExecutor)
        assert not gc.isenabled()
        raise RuntimeError("a program that fails")
    assert (prpc.contains_unknowns, presource._get_stack_trace) == before
    assert getattr(loop, "_default_executor", None) is executor
    assert gc.isenabled()


def test_the_inline_executor_hands_back_results_and_errors_like_a_worker():
    ex = mockrun.InlineExecutor()
    assert ex.submit(lambda a, b=0: a + b, 1, b=2).result() == 3
    with pytest.raises(KeyError):
        ex.submit({}.__getitem__, "x").result()
    assert not ex._threads  # no thread was started
