"""Real-time engines: subscribers of the TP that publish derived tables back to it.

``rte.windows`` (event-time windows and watermarks), ``rte.indicators`` (streaming
indicators), ``rte.qc`` (feed quality checks), ``rte.engine`` (the runner every engine
shares: replay from the log, publish without duplicates) and ``rte.strategy``.
"""

from rte.strategy import Strategy

__all__ = ["Strategy"]
