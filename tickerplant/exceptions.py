"""Every error tickerplant raises, under one base class.

::

    TickError
    ├── SchemaError            a schema file is invalid or a change is incompatible
    ├── ProtocolError          bytes on the wire are not a valid frame (connection is dropped)
    │   └── FrameTooLarge      a frame header announces more than the size limit
    ├── RejectedError          the peer refused a request (ERROR frame); carries its code
    │   └── QueryError         a SQL query was refused, stopped or failed; carries its code
    ├── DataError              published data does not fit its table's schema
    ├── LogError               a log file cannot be read
    │   └── CorruptLog         a checksum fails; carries the valid prefix and where it ends
    │       └── CorruptCapture a feed capture file (not a TP log) has a bad block in its middle
    └── ConnectionClosed       the peer went away

Every message names what was wrong and, where there is one, the fix.
"""

from __future__ import annotations


class TickError(Exception):
    """Base class of every tickerplant error."""


class SchemaError(TickError):
    """A schema file is invalid, or a schema change is not a compatible evolution."""


class ProtocolError(TickError):
    """Bytes received are not a valid frame; the connection cannot continue."""


class FrameTooLarge(ProtocolError):
    """A frame header announces a payload larger than the configured maximum."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"frame of {length} bytes exceeds the maximum frame size of {limit} bytes; "
            f"send smaller batches or raise --max-frame on the tickerplant"
        )
        self.length = length
        self.limit = limit


class RejectedError(TickError):
    """The tickerplant answered a request with an ERROR frame."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class QueryError(RejectedError):
    """A SQL query was refused (not a read statement), stopped (timeout, result too large) or failed.

    Codes: ``query_refused``, ``query_timeout``, ``result_too_large``, ``query_failed``.
    Raised where the query runs and, with the same code and reason, by the client.
    """


class DataError(TickError, ValueError):
    """Data handed to a publisher does not fit the table's schema."""


class LogError(TickError):
    """A log file cannot be opened or read."""


class CorruptLog(LogError):
    """A log file has a bad chunk; everything before ``valid_bytes`` is intact."""

    def __init__(self, path: str, valid_bytes: int, valid_messages: int, detail: str) -> None:
        super().__init__(
            f"corrupt log {path}: {detail} at byte offset {valid_bytes} after "
            f"{valid_messages} valid messages. Run `tick log repair {path}` to truncate it to "
            f"{valid_bytes} bytes (the cut bytes are kept in a sidecar file), then restart"
        )
        self.path = path
        self.valid_bytes = valid_bytes
        self.valid_messages = valid_messages
        self.detail = detail


class CorruptCapture(CorruptLog):
    """A capture has a bad block with valid blocks after it; everything before ``valid_bytes`` is intact.

    A :class:`~tickerplant.exceptions.CorruptLog` (``valid_messages`` counts records) with
    advice that fits capture files instead of ``tick log repair``.
    """

    def __init__(self, path: str, valid_bytes: int, valid_records: int, detail: str) -> None:
        LogError.__init__(
            self,
            f"corrupt capture {path}: {detail} at byte offset {valid_bytes} after {valid_records} valid "
            f"records, and valid blocks follow it, so this is damage, not a write cut short. Read around it "
            f"with CaptureReader({path!r}, skip_corrupt=True), or keep the records before it with "
            f"`head -c {valid_bytes} {path} > fixed.cap`",
        )
        self.path = path
        self.valid_bytes = valid_bytes
        self.valid_messages = valid_records
        self.detail = detail


class ConnectionClosed(TickError):
    """The connection to the peer was closed."""
