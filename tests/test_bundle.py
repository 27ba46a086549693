"""The trace bundle a finished %%reason cell holds: packed, read back whole, labels kept."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from kernel_bridge.bundle import live_bundle, pack_trace, unpack_trace
from kernel_bridge.trace import TraceFormatError
from tests.test_trace import realistic_trace


def test_a_packed_trace_reads_back_as_the_trace_line():
    trace = realistic_trace(labels={"rating": "good"})
    bundle = pack_trace(trace)
    assert bundle["id"] == trace.id and bundle["encoding"] == "gzip+base64"
    assert unpack_trace(bundle).to_json() == trace.to_json()
    assert pack_trace(trace) == bundle  # the same trace, the same bytes in the notebook


def test_a_long_run_packs_to_a_fraction_of_its_trace():
    answer = "".join(
        f"The sum of the first {i} squares is {i * (i + 1) * (2 * i + 1) // 6}.\n"
        for i in range(3000)
    )
    trace = realistic_trace(answer=answer)
    assert len(json.dumps(pack_trace(trace))) < len(trace.to_json()) / 3


def test_labels_written_beside_the_packed_trace_win():
    trace = realistic_trace(labels={"rating": "bad"})
    bundle = {**pack_trace(trace), "labels": {"rating": "good", "note": "checked"}}
    assert unpack_trace(bundle).labels == {"rating": "good", "note": "checked"}


def test_a_plain_bundle_from_an_older_notebook_is_read_as_it_is():
    trace = realistic_trace()
    assert unpack_trace(trace.to_dict()).to_dict() == trace.to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoding": "brotli"}, "unknown encoding 'brotli'"),
        ({"trace": "not base64!"}, "cannot be read"),
        ({"trace": base64.b64encode(b"plain bytes").decode()}, "cannot be read"),
        ({"trace": base64.b64encode(gzip.compress(b"{oops")).decode()}, "not JSON"),
    ],
)
def test_a_damaged_bundle_is_one_clear_error(change, message):
    bundle = {**pack_trace(realistic_trace()), **change}
    with pytest.raises(TraceFormatError, match=message):
        unpack_trace(bundle)


def test_a_running_cells_live_bundle_names_its_run_and_holds_no_trace():
    bundle = live_bundle("f00d")
    assert bundle == {"id": "f00d", "live": True}
    with pytest.raises(TraceFormatError, match="live bundle holds no trace"):
        unpack_trace(bundle)
