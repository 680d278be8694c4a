"""The public-only import contract (tools/import_contracts.py) on small import graphs built by hand."""

from __future__ import annotations

import grimp

from tools.import_contracts import PublicOnlyContract


def _graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for module in [
        "apps",
        "apps.shop",
        "apps.shop.public",
        "apps.shop.models",
        "apps.shop.services",
        "apps.bank",
        "apps.bank.public",
        "apps.bank.ledger",
        "wiring",
        "wiring.bus",
    ]:
        graph.add_module(module)
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="import")
    return graph


def _contract(**options: object) -> PublicOnlyContract:
    return PublicOnlyContract(
        name="public only", session_options={}, contract_options={"containers": ["apps"], **options}
    )


def test_imports_through_public_modules_and_inside_an_app_are_kept() -> None:
    graph = _graph(
        ("apps.bank.ledger", "apps.shop.public"),
        ("wiring.bus", "apps.bank.public"),
        ("apps.shop.services", "apps.shop.models"),
        ("apps.shop.public", "apps.shop.services"),
    )
    assert _contract().check(graph, verbose=False).kept


def test_a_private_module_of_another_app_breaks_it_whoever_imports() -> None:
    graph = _graph(("apps.bank.ledger", "apps.shop.models"), ("wiring.bus", "apps.bank.ledger"))
    check = _contract().check(graph, verbose=False)
    assert not check.kept
    assert [(link["importer"], link["imported"]) for link in check.metadata["illegal"]] == [
        ("wiring.bus", "apps.bank.ledger"),
        ("apps.bank.ledger", "apps.shop.models"),
    ]


def test_an_ignored_import_is_left_out_and_a_stale_one_is_reported() -> None:
    graph = _graph(("apps.bank.ledger", "apps.shop.models"))
    assert _contract(ignore_imports=["apps.bank.ledger -> apps.shop.models"]).check(graph, verbose=False).kept
    stale = _contract(
        ignore_imports=["apps.bank.ledger -> apps.shop.services"],
        unmatched_ignore_imports_alerting="warn",
    ).check(_graph(), verbose=False)
    assert stale.kept
    assert stale.warnings and "apps.shop.services" in stale.warnings[0]
