"""The Controller: topic metadata, partition placement, the cluster watch and leader elections."""
