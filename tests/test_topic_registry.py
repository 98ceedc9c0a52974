"""Topic rules enforced by the Controller's registry (no Ray)."""

from __future__ import annotations

import pytest

from ray_broker.actors.controller.topic_registry import TopicRegistry
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.errors import InvalidConfig, InvalidReplicationFactor


@pytest.fixture
def registry(tmp_path):
    return TopicRegistry(MetadataStore(tmp_path))


def test_replicated_compacted_topics_are_refused_until_followers_copy_gaps(registry):
    with pytest.raises(InvalidConfig, match="compact is not supported with replication_factor"):
        registry.create("x", 1, 3, {"cleanup.policy": "compact"}, live_nodes=3)
    registry.create("y", 1, 3, None, live_nodes=3)
    with pytest.raises(InvalidConfig, match="compact"):
        registry.alter_config("y", {"cleanup.policy": "compact"})
    assert registry.get("y").config.cleanup_policy == "delete"
    assert registry.create("z", 1, 1, {"cleanup.policy": "compact"}, 3).config.compacts


def test_replication_factor_cannot_exceed_live_nodes(registry):
    with pytest.raises(InvalidReplicationFactor, match="exceeds the 2 live"):
        registry.create("x", 1, 3, None, live_nodes=2)


def test_topics_survive_reopening_the_store(tmp_path):
    first = TopicRegistry(MetadataStore(tmp_path))
    first.create("kept", 4, 1, {"retention.ms": 1000}, 1)
    first.close()
    again = TopicRegistry(MetadataStore(tmp_path))
    assert again.get("kept").partitions == 4
    assert again.get("kept").config.retention_ms == 1000
