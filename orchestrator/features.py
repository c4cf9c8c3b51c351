"""A request's features for a feature drafter (an EAGLE-style head), kept by the orchestrator.

The target returns the features of the positions each Score commits; the ledger keeps all of them (as
the float16 bytes they came in, bounded by the context), so a draft replica that never had or lost the
session's can catch up from any position without asking the target again. Each Propose carries the rows
the draft has not been sent yet.
"""

from __future__ import annotations

from specdec.v1 import common_pb2

_BYTES_PER_VALUE = 2  # float16


class FeatureLedger:
    def __init__(self, width: int) -> None:
        self.width = width
        self._data = bytearray()  # the float16 rows of positions 0..end-1, row after row
        self._sent = 0  # rows [0, _sent) went to the draft on a Propose it answered

    @property
    def end(self) -> int:
        """The first position whose features the ledger lacks: what the next Score asks from."""
        return len(self._data) // self._row_bytes

    def ready(self, num_committed: int) -> bool:
        """Whether the ledger has every committed position's features but the last one's (not known until
        the next Score), as a Propose for `num_committed` tokens must carry."""
        return self.end == num_committed - 1

    def add(self, message: common_pb2.Features) -> None:
        """A Score reply's rows, replacing any from their offset on; ValueError if they do not fit."""
        if message.num_rows == 0:
            return
        if message.width != self.width or not 0 <= message.offset <= self.end:
            raise ValueError(
                f"the target's features (width {message.width}, from position {message.offset}) do not extend "
                f"the {self.width}-wide rows of positions 0..{self.end - 1}"
            )
        if len(message.data) != message.num_rows * self._row_bytes:
            raise ValueError(f"the target's features hold {len(message.data)} bytes for {message.num_rows} rows")
        del self._data[message.offset * self._row_bytes:]
        self._data += message.data

    def unsent(self) -> common_pb2.Features | None:
        """The rows the draft has not been sent (None: none)."""
        return self.rows_from(self._sent) if self._sent < self.end else None

    def rows_from(self, position: int) -> common_pb2.Features:
        """The rows of positions `position`..end-1; ValueError outside 0..end."""
        if not 0 <= position <= self.end:
            raise ValueError(
                f"features from position {position} asked for; the request has positions 0..{self.end - 1}"
            )
        return common_pb2.Features(
            offset=position, num_rows=self.end - position, width=self.width,
            data=bytes(self._data[position * self._row_bytes:]),
        )

    def sent(self) -> None:
        """The draft answered a Propose carrying every row the ledger has."""
        self._sent = self.end

    @property
    def _row_bytes(self) -> int:
        return self.width * _BYTES_PER_VALUE
