"""ray-broker: a Kafka-class message broker on Ray."""
