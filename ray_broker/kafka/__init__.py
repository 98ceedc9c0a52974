"""The Kafka wire protocol in front of the broker's actors: Kafka's own clients and tools
(kafka-python, aiokafka, librdkafka, kcat, Ray Data's ``read_kafka``) talk to ray-broker
unchanged. Requests are decoded with kafka-python's generated protocol classes, records with
aiokafka's compiled RecordBatch codec; the broker's side stays Arrow."""
