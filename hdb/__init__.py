"""The historical database: date-partitioned Parquet, and SQL over it (and over an RDB's memory).

- :mod:`hdb.partition` writes one (table, date) partition atomically and repairs after a crash;
- :mod:`hdb.load` backfills a day from Parquet or CSV, validated against the schema;
- :mod:`hdb.catalog` lists the partitions and groups their files by schema version;
- :mod:`hdb.engine` runs read-only DuckDB SQL over memory and partitions, with its safety rules;
- :mod:`hdb.service` serves the engine over the frame protocol (``tick hdb``, ``tick rdb``).
"""
