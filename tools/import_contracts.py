"""Import-linter contract types of our own (registered in pyproject.toml, run by `make lint`)."""

from __future__ import annotations

from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.application import contract_utils


class PublicOnlyContract(Contract):
    """Each package directly inside a container (an app inside `apps`) is imported from outside itself
    only through its public module (`apps.escrow.public`, or `from apps.escrow import public`).

    Options:
        - containers:      the packages whose children are the apps (e.g. `apps`).
        - public_module:   the name of the public module inside each app (default `public`).
        - ignore_imports:  imports to leave out of the check (the burn-down list), as in the built-in
                           contract types.
    """

    type_name = "public_only"

    containers = fields.ListField(subfield=fields.StringField())
    public_module = fields.StringField(required=False, default="public")
    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)
    unmatched_ignore_imports_alerting = fields.EnumField(
        contract_utils.AlertLevel, default=contract_utils.AlertLevel.ERROR
    )

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[arg-type]
            unmatched_alerting=self.unmatched_ignore_imports_alerting,  # type: ignore[arg-type]
        )
        illegal: list[dict[str, Any]] = []
        for container in self.containers:  # type: ignore[attr-defined]
            for app in sorted(graph.find_children(container)):
                allowed = {app, f"{app}.{self.public_module}"}
                inside = {app} | graph.find_descendants(app)
                for imported in sorted(inside - allowed):
                    for importer in sorted(graph.find_modules_that_directly_import(imported) - inside):
                        details = graph.get_import_details(importer=importer, imported=imported)
                        illegal.append(
                            {
                                "importer": importer,
                                "imported": imported,
                                "line_numbers": tuple(detail["line_number"] for detail in details),
                            }
                        )
        return ContractCheck(
            kept=not illegal,
            warnings=list(removal.warnings),
            metadata={"illegal": illegal},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Imports of another app's private modules (import its public module instead):", bold=False)
        output.new_line()
        for link in check.metadata["illegal"]:
            lines = ", ".join(str(n) for n in link["line_numbers"])
            output.print_error(f"- {link['importer']} -> {link['imported']} (l.{lines})", bold=False)
        output.new_line()
