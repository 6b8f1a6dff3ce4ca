"""The real-time database: today's rows in memory, replay-then-live, end of day to the HDB.

``tick rdb`` runs :func:`rdb.server.run`; query it with ``tickerplant.connect``.
"""
