"""A loopback fake of the Cloud TPU v2 REST API, enough for the real tpu_v2 client.

Serves create/get/delete/list nodes and get operations under /v2/projects/P/locations/Z.
`zone_errors` maps a zone to what its create does: ("op", code, message) = the create
operation finishes with that error (how a stockout arrives); ("http", status, message) =
the create request itself fails with that HTTP status (quota 429, reservation 404,
permission 403). Every request is recorded as (method, path, body).
"""
from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
NODE_TYPE = "type.googleapis.com/google.cloud.tpu.v2.Node"
META_TYPE = "type.googleapis.com/google.cloud.tpu.v2.OperationMetadata"


class FakeTpuApi:
    def __init__(self, zone_errors: dict | None = None, preempt_after_gets: int | None = None, workers: int = 1):
        self.zone_errors = dict(zone_errors or {})
        self.preempt_after_gets = preempt_after_gets
        self.workers = workers
        self.nodes: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.node_gets = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def creates(self) -> list[str]:
        return [re.search(r"locations/([^/]+)", p).group(1) for m, p, _ in self.requests if m == "POST"]

    def deletes(self) -> list[str]:
        return [p.split("/v2/")[1] for m, p, _ in self.requests if m == "DELETE"]

    def _operation(self, zone: str, *, error=None, response=None) -> dict:
        name = f"projects/p/locations/{zone}/operations/op-{len(self.operations) + 1}"
        op = {"name": name, "done": True, "metadata": {"@type": META_TYPE}}
        op.update({"error": {"code": error[0], "message": error[1]}} if error else {"response": response})
        self.operations[name] = op
        return op

    def create(self, parent: str, node_id: str, body: dict):
        zone = parent.rsplit("/", 1)[-1]
        kind = self.zone_errors.get(zone)
        if kind and kind[0] == "http":
            return kind[1], {"error": {"code": kind[1], "message": kind[2], "status": _STATUS.get(kind[1], "UNKNOWN")}}
        if kind:
            return 200, self._operation(zone, error=(kind[1], kind[2]))
        name = f"{parent}/nodes/{node_id}"
        endpoints = [{"ipAddress": f"10.0.0.{i}"} for i in range(self.workers)]
        node = {**body, "name": name, "state": "READY", "networkEndpoints": endpoints,
                "createTime": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
        self.nodes[name] = node
        return 200, self._operation(zone, response={"@type": NODE_TYPE, **node})

    def get(self, path: str):
        if "/operations/" in path:
            return 200, self.operations[path]
        node = self.nodes.get(path)
        if node is None:
            return 404, {"error": {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}}
        self.node_gets += 1
        if self.preempt_after_gets is not None and self.node_gets > self.preempt_after_gets:
            node["state"] = "PREEMPTED"
        return 200, node

    def list(self, parent: str):
        return 200, {"nodes": [n for name, n in self.nodes.items() if name.startswith(parent + "/")]}

    def delete(self, path: str):
        if self.nodes.pop(path, None) is None:
            return 404, {"error": {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}}
        return 200, self._operation(path.split("/")[3], response={"@type": "type.googleapis.com/google.protobuf.Empty"})

    def handle(self, method: str, url: str, body: dict):
        parsed = urlparse(url)
        path = parsed.path.removeprefix("/v2/")
        with self._lock:
            self.requests.append((method, parsed.path, body))
            if method == "POST":
                return self.create(path.removesuffix("/nodes"), parse_qs(parsed.query)["nodeId"][0], body)
            if method == "DELETE":
                return self.delete(path)
            return self.list(path.removesuffix("/nodes")) if path.endswith("/nodes") else self.get(path)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                status, payload = api.handle(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

            def log_message(self, *args):
                pass

        return Handler


def historical_zone_errors() -> dict:
    """The sequence seen by hand: 3 stockouts, 3 zone quotas of 0, 3 missing reservations."""
    capacity = ("op", 8, "There is no more capacity in the zone \"{z}\"; you can try in another zone.")
    quota = ("http", 429, "Quota limit 'TPUV6EPreemptiblePodPerProjectPerZoneForTPUAPI' has been exceeded. "
                          "Limit: 0 in zone {z}.")
    reservation = ("http", 404, "Reservation not found: projects/p/zones/{z}/reservations/default.")
    plan = {"us-east1-d": capacity, "us-central1-b": capacity, "us-east5-b": capacity,
            "us-central2-b": quota, "us-east5-c": quota, "us-east4-a": quota,
            "us-east5-a": reservation, "us-central1-c": reservation, "us-west1-c": reservation}
    return {z: (k, c, m.format(z=z)) for z, (k, c, m) in plan.items()}


HISTORICAL_ZONES = ("us-east1-d", "us-central1-b", "us-east5-b", "us-central2-b", "us-east5-c", "us-east4-a",
                    "us-east5-a", "us-central1-c", "us-west1-c", "europe-west4-a")
