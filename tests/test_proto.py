"""The protobuf contracts: the committed betterproto2 modules are exactly what the documented command
generates from the .proto sources, and every message of DESIGN.md's topic catalog travels on its topic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apps.outbox import messages
from proto.common import v1 as common_v1

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"

# DESIGN.md, "Topic catalog" (the "..." rows are checked below: every other message has a topic too).
CATALOG = {
    "escrow.commands.v1": [
        "CreateEscrow",
        "AcceptEscrow",
        "DeclineEscrow",
        "MarkDelivered",
        "ReleaseFunds",
        "CancelEscrow",
        "OpenDispute",
        "ResolveDispute",
    ],
    "escrow.events.v1": [
        "EscrowCreated",
        "EscrowAccepted",
        "EscrowDeclined",
        "EscrowFundsHeld",
        "EscrowDelivered",
        "EscrowReleaseRequested",
        "EscrowReleased",
        "EscrowCancelled",
        "EscrowRefundRequested",
        "EscrowRefunded",
        "EscrowDisputed",
        "EscrowDisputeResolved",
        "EscrowComplianceHold",
    ],
    "payments.commands.v1": ["CreatePaymentIntent", "TransferToSeller", "InitiateRefund"],
    "payments.events.v1": [
        "PaymentSucceeded",
        "PaymentFailed",
        "TransferSucceeded",
        "TransferFailed",
        "RefundSucceeded",
        "RefundFailed",
        "WalletScreened",
        "ChargebackOpened",
    ],
}
PACKAGE_OF_TOPIC = {
    "escrow.commands.v1": "escrow.v1",
    "escrow.events.v1": "escrow.v1",
    "payments.commands.v1": "payments.v1",
    "payments.events.v1": "payments.v1",
}


def generated_files(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): path.read_text()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }


def test_committed_modules_match_a_fresh_generation(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    if shutil.which("protoc-gen-python_betterproto2", path=str(bin_dir)) is None:
        pytest.fail(f"protoc-gen-python_betterproto2 is not in {bin_dir}: install requirements-dev.txt")
    out = tmp_path / "proto"
    out.mkdir()
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTO.rglob("*.proto"))
    # The command of proto/generate.sh, run from the repo root (the plugin formats its output with ruff,
    # which reads this repo's ruff settings), writing into a temporary directory instead of proto/.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", f"--python_betterproto2_out={out}", *sources],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        check=True,
        capture_output=True,
    )
    fresh = generated_files(out)
    committed = generated_files(PROTO)

    assert fresh, "the generator produced nothing"
    assert sorted(fresh) == sorted(committed), "generated files differ from the committed ones: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated modules (run `make proto`): {stale}"


@pytest.mark.parametrize(("topic", "name"), [(t, n) for t, names in CATALOG.items() for n in names])
def test_catalog_message_exists_and_maps_to_its_topic(topic: str, name: str) -> None:
    cls = messages.message_class(f"{PACKAGE_OF_TOPIC[topic]}.{name}")
    assert messages.topic_for(cls()) == topic
    assert messages.type_name(cls) == f"{PACKAGE_OF_TOPIC[topic]}.{name}"


def test_every_domain_message_has_a_topic() -> None:
    """The catalog's "..." rows: any further escrow/payments/webhook message is routed, never unknown."""
    routed = 0
    for name in messages._TYPES:
        package = name.rpartition(".")[0]
        if package not in ("escrow.v1", "payments.v1", "webhook.v1"):
            continue
        topic = messages.topic_for(messages.message_class(name)())
        assert topic in messages.TOPICS, name
        if package == "webhook.v1":
            assert topic == "webhook.events.v1"
        routed += 1
    assert routed >= sum(len(names) for names in CATALOG.values()) + 1


def test_shared_types_are_not_routed() -> None:
    with pytest.raises(messages.UnknownMessageType):
        messages.topic_for(common_v1.Money(amount_minor=1, currency="USD"))


def test_messages_round_trip_through_the_wire_format() -> None:
    from proto.escrow import v1 as escrow_v1  # noqa: PLC0415

    original = escrow_v1.ResolveDispute(
        escrow_id="e",
        actor=common_v1.Actor(kind=common_v1.ActorKind.STAFF, user_id=7),
        outcome=escrow_v1.DisputeOutcome.SPLIT,
        seller_amount=common_v1.Money(amount_minor=500, currency="USD"),
    )
    decoded = messages.decode(messages.type_name(original), bytes(original))
    assert decoded == original
