"""The translation between Kafka clients' one transactional epoch and the broker's epoch per
transaction (ray_broker/kafka/txn_epochs.py)."""

from __future__ import annotations

from ray_broker.kafka.txn_epochs import TransactionEpochs

TP = ("t", 0)


def test_the_first_transaction_passes_unchanged_and_later_ones_move_to_the_new_epoch():
    epochs = TransactionEpochs()
    epochs.registered(7, 3)
    assert epochs.broker_ids(7, 3) == (7, 3)
    assert epochs.sequence(7, 3, TP, 0) == 0
    epochs.written(7, 3, TP, 0, 10)
    epochs.ended(7, 3, 7, 4)
    assert epochs.broker_ids(7, 3) == (7, 4)
    assert epochs.sequence(7, 3, TP, 10) == 0  # the new epoch starts at 0
    assert epochs.sequence(7, 3, ("t", 1), 0) == 0  # a partition not written before
    epochs.written(7, 3, TP, 10, 5)
    epochs.ended(7, 3, 9, 0)  # epochs exhausted: a new producer id, as Kafka does
    assert epochs.broker_ids(7, 3) == (9, 0) and epochs.sequence(7, 3, TP, 15) == 0


def test_a_late_write_of_an_ended_transaction_is_refused():
    epochs = TransactionEpochs()
    epochs.registered(1, 0)
    epochs.written(1, 0, TP, 0, 10)
    epochs.ended(1, 0, 1, 1)
    assert epochs.sequence(1, 0, TP, 5) == -1


def test_retried_batches_do_not_move_the_next_sequence_back():
    epochs = TransactionEpochs()
    epochs.registered(1, 0)
    epochs.written(1, 0, TP, 0, 10)
    epochs.written(1, 0, TP, 0, 10)  # a retry answered as a duplicate
    epochs.written(1, 0, TP, 10, 10)
    epochs.written(1, 0, TP, 5, 5)
    epochs.ended(1, 0, 1, 1)
    assert epochs.sequence(1, 0, TP, 20) == 0


def test_unknown_producers_pass_unchanged():
    epochs = TransactionEpochs()
    assert epochs.broker_ids(5, 5) == (5, 5) and epochs.sequence(5, 5, TP, 42) == 42
