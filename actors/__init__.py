"""Ray actors: the Controller and the PartitionActor."""
