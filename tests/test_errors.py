from __future__ import annotations

import pickle

import pytest

from ray_broker import errors


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_round_trips_through_pickle_with_its_message(cls):
    original = cls(f"{cls.__name__}: what went wrong and what to do")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.retriable == cls.retriable


def test_errors_default_to_their_docstring_and_fit_builtin_bases():
    assert "max.message.bytes" in str(errors.RecordTooLarge())
    assert isinstance(errors.BrokerTimeoutError("late"), TimeoutError)
    assert isinstance(errors.OffsetOutOfRange("x"), errors.BrokerError)
    assert errors.NotLeader.retriable and not errors.InvalidConfig.retriable


def test_errors_module_imports_nothing_of_the_project_or_ray():
    with open(errors.__file__) as module:
        source = module.read()
    assert "import ray" not in source and "from ray" not in source
