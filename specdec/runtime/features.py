"""The target's features: its final hidden states (the LM head's input), which an EAGLE-style draft head
drafts from. They travel as packed little-endian float16 rows (common.proto Features), never `repeated float`.

Exactness never depends on them: a feature drafter still returns the q it sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from specdec.v1 import common_pb2

_ROW_DTYPE = "<f2"  # float16 on the wire
_BYTES_PER_VALUE = 2


@dataclass(frozen=True)
class FeatureRows:
    """Features at consecutive positions: rows[j] is the hidden state computed at position offset + j."""

    offset: int  # sequence position of rows[0]
    rows: torch.Tensor  # [n, width] float16

    @property
    def end(self) -> int:
        """The position after the last row."""
        return self.offset + self.rows.shape[0]


class MissingFeatures(Exception):
    """Raised by a feature drafter that needs the features from `from_position` on."""

    def __init__(self, from_position: int) -> None:
        super().__init__(f"the drafter needs the session's features from position {from_position} on")
        self.from_position = from_position


def encode_features(features: FeatureRows) -> common_pb2.Features:
    rows = features.rows.detach().to("cpu", torch.float16).contiguous()
    num_rows, width = rows.shape
    data = np.ascontiguousarray(rows.numpy(), dtype=_ROW_DTYPE).tobytes()
    return common_pb2.Features(offset=features.offset, num_rows=num_rows, width=width, data=data)


def decode_features(message: common_pb2.Features) -> FeatureRows:
    """Features -> FeatureRows; a malformed message raises ValueError saying what is wrong with it."""
    if message.offset < 0 or message.num_rows < 0 or message.width < 0:
        raise ValueError(
            f"malformed Features: offset {message.offset}, shape [{message.num_rows}, {message.width}] "
            "(none may be negative)"
        )
    expected = message.num_rows * message.width * _BYTES_PER_VALUE
    if len(message.data) != expected:
        raise ValueError(
            f"malformed Features: {len(message.data)} bytes of data for float16 "
            f"[{message.num_rows}, {message.width}] ({expected} bytes)"
        )
    values = np.frombuffer(message.data, dtype=_ROW_DTYPE).reshape(message.num_rows, message.width)
    return FeatureRows(message.offset, torch.from_numpy(values.copy()))  # a copy: the bytes are read-only


def feature_size_of(lm: Any, returns_features: bool) -> int:
    """ModelInfo.feature_size: a feature drafter's (`needs_features`) input width; for a model that returns
    its features (a target), their width, the text config's hidden_size; else 0 (an LM drafting from tokens)."""
    if getattr(lm, "needs_features", False):
        return int(lm.feature_size)
    return int(lm.model.config.get_text_config().hidden_size) if returns_features else 0


class FeatureTap:
    """The decoder's last hidden state (after the final norm) of the model's latest forward pass.

    A forward hook on the decoder reads it as the model computes it, so the LM head still runs on only the
    rows whose logits are wanted (`logits_to_keep`), and no layer's other hidden states are kept. The hook
    sits on the decoder module, which precision.apply keeps (it swaps only the nn.Linear inside it) and
    torch.compile traces through (hooks registered before compiling are part of the graph).
    """

    def __init__(self, decoder: nn.Module) -> None:
        self._last: torch.Tensor | None = None
        decoder.register_forward_hook(self._record)

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        self._last = output[0]  # last_hidden_state, of a ModelOutput or a tuple: [B, S, H]

    def take(self) -> torch.Tensor:
        """[B, S, H]: the latest pass's last hidden state; each pass's is taken once."""
        last, self._last = self._last, None
        if last is None:
            raise RuntimeError("the model's decoder ran no forward pass since the features were last taken")
        return last


def feature_tap(model: nn.Module) -> FeatureTap:
    """The model's one FeatureTap (every LM over the model shares it: one hook, however many wrap it)."""
    tap = getattr(model, "_specdec_feature_tap", None)
    if tap is None:
        tap = FeatureTap(model.get_decoder())
        model._specdec_feature_tap = tap
    return tap
