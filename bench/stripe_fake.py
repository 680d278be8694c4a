"""The local Stripe of the webhook load (`bench/run.py --webhooks-per-s`): tests/fakes/stripe_server.py's
FakeStripe, served on loopback in a process of its own, so that its CPU is not the load generator's.

The stack's Stripe client creates the escrows' PaymentIntents here and re-reads each one when its
`payment_intent.succeeded` webhook arrives. One route is the bench's own: `POST /bench/paid` with a JSON
list of PaymentIntent ids makes each one's buyer pay (a succeeded charge), as the card network would,
and answers the PaymentIntents as the webhooks about them carry them.

    .venv/bin/python bench/stripe_fake.py --port 8765
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_httpserver import HTTPServer  # noqa: E402 - after the path is set
from werkzeug import Request, Response  # noqa: E402

from tests.fakes.stripe_server import FakeStripe  # noqa: E402


def serve(port: int) -> None:
    server = HTTPServer(host="127.0.0.1", port=port, threaded=True)
    fake = FakeStripe(server)

    def paid(request: Request) -> Response:
        with fake._lock:
            intents = [fake.buyer_pays(intent_id) for intent_id in json.loads(request.get_data())]
        return Response(json.dumps(intents), content_type="application/json")

    server.expect_request("/bench/paid", method="POST").respond_with_handler(paid)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(f"fake Stripe on {fake.api_base}", flush=True)
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
