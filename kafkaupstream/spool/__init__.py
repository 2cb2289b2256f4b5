"""The durable spool: ``delivery: "spool"`` records on local disk, forwarded to Kafka.

``store.py`` is one SQLite file; ``spool.py`` the group commit of one worker slot's file and its
limits; ``forwarder.py`` produces what a file holds, in spool order, and removes a record only
after its delivery report; ``slots.py`` finds, locks and takes over the files of a directory.
"""
