"""The coordinators: consumer groups (membership, assignment, committed offsets), share-group
state snapshots, and transactions (KIP-98), each a named actor over plain state machines."""
