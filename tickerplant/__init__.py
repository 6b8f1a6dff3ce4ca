"""tickerplant: a kdb+/q-style market-data tick system.

Feed handlers publish to a tickerplant that logs every update to an append-only file
and fans it out to subscribers. The public API::

    from tickerplant import Publisher, Subscriber          # blocking
    from tickerplant import AsyncPublisher, AsyncSubscriber  # asyncio
    from tickerplant import connect                          # SQL to an RDB or HDB
"""

from tickerplant.exceptions import (
    ConnectionClosed,
    CorruptLog,
    DataError,
    LogError,
    ProtocolError,
    QueryError,
    RejectedError,
    SchemaError,
    TickError,
)
from tickerplant.message import Message
from tickerplant.publisher import AsyncPublisher, Publisher
from tickerplant.query import QueryClient, Result, connect
from tickerplant.subscriber import AsyncSubscriber, EndOfDay, Subscriber

__all__ = [
    "AsyncPublisher",
    "AsyncSubscriber",
    "ConnectionClosed",
    "CorruptLog",
    "DataError",
    "EndOfDay",
    "LogError",
    "Message",
    "ProtocolError",
    "Publisher",
    "QueryClient",
    "QueryError",
    "RejectedError",
    "Result",
    "SchemaError",
    "Subscriber",
    "TickError",
    "connect",
]
