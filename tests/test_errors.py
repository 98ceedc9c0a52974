from __future__ import annotations

import pickle

import pytest

import ray_broker as rb
from ray_broker import errors


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_round_trips_through_pickle_with_its_message(cls):
    original = cls(f"{cls.__name__}: what went wrong and what to do")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.retriable == cls.retriable


@pytest.mark.parametrize(
    "cls", [c for c in errors.all_error_classes() if c.fields], ids=lambda c: c.__name__
)
def test_typed_fields_survive_pickling_and_unknown_ones_are_refused(cls):
    values = {name: f"{name}-value" for name in cls.fields}
    copy = pickle.loads(pickle.dumps(cls("message", **values)))
    assert {name: getattr(copy, name) for name in cls.fields} == values
    assert copy.retriable == cls.retriable
    with pytest.raises(TypeError):
        cls("message", no_such_field=1)


def test_errors_default_to_their_docstring_and_fit_builtin_bases():
    assert "max.message.bytes" in str(errors.RecordTooLarge())
    assert isinstance(errors.BrokerTimeoutError("late"), TimeoutError)
    assert isinstance(errors.OffsetOutOfRange("x"), errors.BrokerError)
    assert errors.NotLeader.retriable and not errors.InvalidConfig.retriable


def test_errors_module_imports_nothing_of_the_project_or_ray():
    with open(errors.__file__) as module:
        source = module.read()
    assert "import ray" not in source and "from ray" not in source


def test_errors_raised_across_ray_keep_their_fields(broker, topic) -> None:
    """What a caller reads instead of parsing messages, from the client and from actors."""
    with pytest.raises(errors.TopicNotFound) as missing:
        broker.consumer("no-such-topic")
    assert missing.value.topic == "no-such-topic"
    producer = broker.producer()
    with pytest.raises(errors.RecordTooLarge) as large:
        producer.send(topic, value=b"x" * 2_000_000)
    assert large.value.size == 2_000_000 and large.value.limit < large.value.size
    producer.close()
    consumer = broker.consumer()
    tp = rb.TopicPartition(topic, 0)
    consumer.assign([tp])
    with pytest.raises(errors.OffsetOutOfRange) as out_of_range:
        consumer.seek(tp, 10**9)
    assert (out_of_range.value.offset, out_of_range.value.log_start) == (10**9, 0)
    assert out_of_range.value.log_end is not None
    consumer.close()
