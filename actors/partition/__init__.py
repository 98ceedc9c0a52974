"""One partition replica: the ``PartitionActor`` shell and the plain pieces it drives — the log
core, the replica's decisions, the replication sender, transactions, idempotence, share groups
and message traces."""
