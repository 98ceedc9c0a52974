"""Seeded simulations of transactions (see ``transactions_world.py`` for the invariants).

``pytest tests/sim/test_transactions_sim.py --sim-seed N`` replays one seed.
"""

from __future__ import annotations

from tests.sim.transactions_world import TxnWorld

TXN_SEEDS = 300


def test_transaction_seed_sweep_holds_every_invariant(request) -> None:
    one = request.config.getoption("--sim-seed")
    seeds = [one] if one is not None else range(TXN_SEEDS)
    decided = faults = 0
    for seed in seeds:
        world = TxnWorld(seed).run()  # raises InvariantBroken with the seed and its trace
        decided += len(world.outcome)
        faults += world.trace.count("crash") + world.trace.count("restart_partition")
    if one is None:
        # The sweep exercised what it is about: many decided transactions, many crashes.
        assert decided >= 2 * TXN_SEEDS and faults >= 2 * TXN_SEEDS
