"""draft_service.servicer with a feature drafter (ModelInfo.feature_size > 0): malformed features are
INVALID_ARGUMENT, each with a message saying what to send instead."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from draft_service.servicer import DraftServicer
from specdec.runtime.errors import InvalidArgument
from specdec.runtime.hosted_model import HostedModel, ModelOptions
from specdec.runtime.serving import Draining
from specdec.v1 import common_pb2, draft_pb2

WIDTH = 4
TOKENS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def servicer(tiny_draft) -> DraftServicer:
    """The tiny draft LM, reporting itself as a feature drafter: validation runs before any drafting."""
    model = HostedModel.load(str(tiny_draft), ModelOptions(cache_mb=16))
    info = common_pb2.ModelInfo()
    info.CopyFrom(model.info)
    info.feature_size = WIDTH
    return DraftServicer(dataclasses.replace(model, info=info), Draining())


def rows(offset: int, num_rows: int, width: int = WIDTH, data_bytes: int | None = None) -> common_pb2.Features:
    size = num_rows * width * 2 if data_bytes is None else data_bytes
    return common_pb2.Features(offset=offset, num_rows=num_rows, width=width, data=b"\0" * size)


@pytest.mark.parametrize("features, words", [
    (rows(0, 4, width=3), "features are 3 wide; this draft model drafts from 4-wide features"),
    (rows(0, 4, data_bytes=31), "31 bytes of data for float16 \\[4, 4\\]"),
    (rows(1, 4), "must end at position 3, the one before the last of the 5 tokens"),
    (rows(0, 3), "must end at position 3"),
    (rows(-1, 5), "features offset -1 is negative"),
    (rows(0, 300), "300 feature rows; this service takes 0..256"),
])
def test_malformed_features_are_invalid_argument(servicer, features, words):
    request = draft_pb2.ProposeRequest(session_id="s", token_ids=TOKENS, num_tokens=2, features=features,
                                       method=draft_pb2.DRAFT_METHOD_MODEL)
    with pytest.raises(InvalidArgument, match=words):
        asyncio.run(servicer.Propose(request, None))
