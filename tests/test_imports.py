"""The import contract: layers import downward only (edges → client → actors → storage), the
modules every layer shares are a fixed set, and no module reaches itself through others.

Function-local imports count (they hide circles as well as any); imports only for type
checking do not (they never run).
"""

from __future__ import annotations

import grimp
import pytest

GRAPH = grimp.build_graph("ray_broker", exclude_type_checking_imports=True)
# What every layer may import: errors and value types, settings, Ray's failure mapping, the
# small measuring helpers the actors report through, and the data plane's frames (what client
# and leader say on a direct connection). Nothing here imports a layer.
COMMON = {
    "ray_broker.errors",
    "ray_broker.structs",
    "ray_broker.config",
    "ray_broker._ray",
    "ray_broker.metrics",
    "ray_broker.hops",
    "ray_broker.gc_pause",
    "ray_broker.frames",
    "ray_broker.data_plane_connection",
}
STORAGE = "ray_broker.storage"
ACTORS = "ray_broker.actors"
# The edges: what users and other protocols enter through. They use the client and the
# actors; nothing below them imports one. ``entrypoint`` (``ray_broker.connect``) joins the
# client with the listeners its config names.
EDGES = {
    "ray_broker.kafka",
    "ray_broker.console",
    "ray_broker.cli",
    "ray_broker.service",
    "ray_broker.service_records",
    "ray_broker.demo",
    "ray_broker.entrypoint",
    "ray_broker.__main__",
}


def _modules(package: str) -> set[str]:
    return {package} | GRAPH.find_descendants(package)


def _outside(package: str) -> dict[str, set[str]]:
    """What modules of ``package`` import from the rest of ray_broker, by imported module."""
    found: dict[str, set[str]] = {}
    for module in _modules(package):
        for imported in GRAPH.find_modules_directly_imported_by(module):
            if not imported.startswith(package):
                found.setdefault(imported, set()).add(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    circles = []
    for module in sorted(GRAPH.modules):
        for imported in GRAPH.find_modules_directly_imported_by(module):
            if GRAPH.chain_exists(importer=imported, imported=module):
                chain = GRAPH.find_shortest_chain(importer=imported, imported=module)
                circles.append(" -> ".join((module, *chain)))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_storage_is_a_plain_library_that_imports_only_errors() -> None:
    assert set(_outside(STORAGE)) <= {"ray_broker.errors"}, _outside(STORAGE)


@pytest.mark.parametrize("shared", sorted(COMMON))
def test_the_common_modules_import_no_layer(shared: str) -> None:
    imported = GRAPH.find_modules_directly_imported_by(shared)
    layered = {m for m in imported if m not in COMMON and not m.startswith(STORAGE)}
    assert not layered, f"{shared} imports {sorted(layered)}"


def test_the_broker_actors_import_neither_the_client_nor_the_edges() -> None:
    upward = {
        imported: sorted(importers)
        for imported, importers in _outside(ACTORS).items()
        if imported not in COMMON and not imported.startswith(STORAGE)
    }
    assert not upward, f"actors import upward: {upward}"


def _is_edge(module: str) -> bool:
    return any(module == edge or module.startswith(edge + ".") for edge in EDGES)


def test_the_client_imports_no_edge() -> None:
    below_edges = {
        m
        for m in GRAPH.modules
        if not _is_edge(m) and m != "ray_broker"  # the package facade exports connect
    }
    upward = sorted(
        f"{module} -> {imported}"
        for module in below_edges
        for imported in GRAPH.find_modules_directly_imported_by(module)
        if _is_edge(imported)
    )
    assert not upward, "imports of an edge from below it:\n" + "\n".join(upward)


def test_every_edge_named_exists() -> None:
    assert all(any(m == e or m.startswith(e + ".") for m in GRAPH.modules) for e in EDGES)
