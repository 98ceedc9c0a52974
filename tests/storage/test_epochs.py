from __future__ import annotations

from ray_broker.storage.epochs import LeaderEpochCache


def test_end_offset_for_a_follower_epoch_is_where_the_next_epoch_starts(tmp_path):
    cache = LeaderEpochCache(tmp_path)
    cache.assign(1, 0)
    cache.assign(3, 100)
    cache.assign(4, 250)
    assert cache.end_offset_for(1, 400) == 100
    assert cache.end_offset_for(2, 400) == 100  # unknown epoch: where the newer one starts
    assert cache.end_offset_for(3, 400) == 250
    assert cache.end_offset_for(4, 400) == 400  # the latest epoch ends at the log end
    assert LeaderEpochCache(tmp_path).entries == [(1, 0), (3, 100), (4, 250)]  # persisted


def test_truncation_forgets_epochs_that_started_after_the_cut(tmp_path):
    cache = LeaderEpochCache(tmp_path)
    cache.assign(1, 0)
    cache.assign(2, 50)
    cache.truncate_from(40)
    assert cache.entries == [(1, 0)]
    cache.assign(5, 40)
    assert cache.latest_epoch == 5
