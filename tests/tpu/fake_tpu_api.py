"""A loopback fake of the Cloud TPU v2 REST API, enough for the real tpu_v2 client.

Serves create/get/delete/list of nodes and of queued resources, and get of operations,
under /v2/projects/P/locations/Z. Every request is recorded as (method, path, body).

What a zone's create does (`zone_errors`, for nodes and queued resources alike):
  ("op", code, message)     the create operation finishes with that error (how a stockout arrives)
  ("http", status, message) the create request itself fails (quota 429, reservation 404, permission 403)
  ("stuck",)                the create operation never finishes; the node sits in CREATING
  ("leaves_node", status, message)  the request fails, but the node was made anyway
How a zone's queued resource moves (`queue_plans`): one state per read of it, the last one
repeating; a state is a name (ACCEPTED, WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE) or
("FAILED", code, message). Reaching ACTIVE makes its node (READY). Default: ACCEPTED, ACTIVE.
Transient faults (`flaky`): call kind -> faults served before the call works again, each an
HTTP status (500, 502, 503, 504, 429) or "reset" (the connection is closed without an answer).
Call kinds: create_node, get_node, list_node, delete_node, create_queued, get_queued,
list_queued, delete_queued, get_operation. Operations finish after `op_polls` reads of them.
"""
from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 502: "UNKNOWN", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
TYPE = "type.googleapis.com/google.cloud.tpu.v2."
RESET = "reset"


def _error(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _call_kind(method: str, path: str) -> str:
    collection = "queued" if "/queuedResources" in path else "node"
    if "/operations/" in path:
        return "get_operation"
    if method == "POST":
        return f"create_{collection}"
    if method == "DELETE":
        return f"delete_{collection}"
    return f"list_{collection}" if path.endswith(("/nodes", "/queuedResources")) else f"get_{collection}"


class FakeTpuApi:
    def __init__(self, zone_errors: dict | None = None, preempt_after_gets: int | None = None, workers: int = 1,
                 queue_plans: dict | None = None, flaky: dict | None = None, op_polls: int = 0):
        self.zone_errors = dict(zone_errors or {})
        self.preempt_after_gets = preempt_after_gets
        self.workers = workers
        self.queue_plans = {zone: list(plan) for zone, plan in (queue_plans or {}).items()}
        self.flaky = {kind: list(faults) for kind, faults in (flaky or {}).items()}
        self.op_polls = op_polls
        self.nodes: dict[str, dict] = {}
        self.queued: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.faults_served: list[tuple[str, object]] = []
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

    def creates(self, collection: str = "nodes") -> list[str]:
        return [re.search(r"locations/([^/]+)", p).group(1) for m, p, _ in self.requests
                if m == "POST" and p.endswith(f"/{collection}")]

    def deletes(self) -> list[str]:
        return [p.split("/v2/")[1] for m, p, _ in self.requests if m == "DELETE"]

    def leftovers(self) -> list[str]:
        """Every node and queued resource that still exists."""
        return sorted([*self.nodes, *self.queued])

    def add_node(self, zone: str, name: str, labels: dict, state: str = "READY", project: str = "p") -> dict:
        """A node made outside the client (e.g. by another run)."""
        path = f"projects/{project}/locations/{zone}/nodes/{name}"
        endpoints = [{"ipAddress": f"10.0.0.{i}"} for i in range(self.workers)]
        self.nodes[path] = {"name": path, "acceleratorType": "v6e-8", "runtimeVersion": "v6e-ubuntu-2404",
                            "labels": dict(labels), "state": state, "networkEndpoints": endpoints, "createTime": _now()}
        return self.nodes[path]

    def _operation(self, zone: str, *, error=None, response=None, done: bool = True) -> dict:
        name = f"projects/p/locations/{zone}/operations/op-{len(self.operations) + 1}"
        op = {"name": name, "done": False, "metadata": {"@type": TYPE + "OperationMetadata"},
              "_result": {"error": {"code": error[0], "message": error[1]}} if error else {"response": response},
              "_polls_left": self.op_polls if done else None}
        self.operations[name] = op
        return self._read_operation(op, count=False)

    def _read_operation(self, op: dict, count: bool = True) -> dict:
        """done once `op_polls` reads have passed (never for a stuck one)."""
        if op["_polls_left"] is not None:
            if op["_polls_left"] <= 0:
                op.update(done=True, **op["_result"])
            elif count:
                op["_polls_left"] -= 1
        return self._public(op)

    def _zone_fault(self, parent: str):
        """(zone, scripted fault, the response it forces at once or None) for a create in `parent`."""
        zone = parent.rsplit("/", 1)[-1]
        kind = self.zone_errors.get(zone, ("ok",))
        if kind[0] == "http":
            return zone, kind, _error(kind[1], kind[2])
        if kind[0] == "op":
            return zone, kind, (200, self._operation(zone, error=(kind[1], kind[2])))
        return zone, kind, None

    def _create_node(self, parent: str, node_id: str, body: dict):
        zone, kind, forced = self._zone_fault(parent)
        if forced is not None:
            return forced
        name = f"{parent}/nodes/{node_id}"
        node = self.add_node(zone, node_id, body.get("labels", {}), "CREATING" if kind[0] == "stuck" else "READY",
                             parent.split("/")[1])
        node.update({k: v for k, v in body.items() if k != "labels"}, name=name)
        if kind[0] == "leaves_node":
            return _error(kind[1], kind[2])
        if kind[0] == "stuck":
            return 200, self._operation(zone, done=False)
        return 200, self._operation(zone, response={"@type": TYPE + "Node", **node})

    def _create_queued(self, parent: str, queued_id: str, body: dict):
        zone, kind, forced = self._zone_fault(parent)
        if forced is not None:
            return forced
        name = f"{parent}/queuedResources/{queued_id}"
        plan = self.queue_plans.get(zone, ["ACCEPTED", "ACTIVE"])
        self.queued[name] = {**body, "name": name, "createTime": _now(), "_plan": list(plan)}
        self._advance(self.queued[name])
        return 200, self._operation(zone, response={"@type": TYPE + "QueuedResource", **self._public(self.queued[name])})

    def _advance(self, resource: dict) -> None:
        """Move to the next planned state (the last one stays); ACTIVE makes the node."""
        plan = resource["_plan"]
        step = plan.pop(0) if len(plan) > 1 else plan[0]
        if isinstance(step, tuple):
            resource["state"] = {"state": step[0], "failedData": {"error": {"code": step[1], "message": step[2]}}}
            return
        resource["state"] = {"state": step}
        spec = resource["tpu"]["nodeSpec"][0]
        if step == "ACTIVE" and f"{spec['parent']}/nodes/{spec['nodeId']}" not in self.nodes:
            zone = spec["parent"].rsplit("/", 1)[-1]
            self.add_node(zone, spec["nodeId"], spec["node"].get("labels", {}), project=spec["parent"].split("/")[1])

    @staticmethod
    def _public(resource: dict) -> dict:
        return {k: v for k, v in resource.items() if not k.startswith("_")}

    def _get(self, path: str):
        if "/operations/" in path:
            return 200, self._read_operation(self.operations[path])
        if "/queuedResources/" in path:
            if path not in self.queued:
                return _error(404, f"{path} not found")
            self._advance(self.queued[path])
            return 200, self._public(self.queued[path])
        node = self.nodes.get(path)
        if node is None:
            return _error(404, f"{path} not found")
        self.node_gets += 1
        if self.preempt_after_gets is not None and self.node_gets > self.preempt_after_gets:
            node["state"] = "PREEMPTED"
        return 200, node

    def _list(self, parent: str, collection: str):
        if collection == "queuedResources":
            found = [self._public(q) for name, q in self.queued.items() if name.startswith(parent + "/")]
            return 200, {"queuedResources": found}
        return 200, {"nodes": [n for name, n in self.nodes.items() if name.startswith(parent + "/")]}

    def _delete(self, path: str, force: bool):
        zone = path.split("/")[3]
        if "/queuedResources/" in path:
            resource = self.queued.get(path)
            if resource is None:
                return _error(404, f"{path} not found")
            spec = resource["tpu"]["nodeSpec"][0]
            node_path = f"{spec['parent']}/nodes/{spec['nodeId']}"
            if node_path in self.nodes and not force:
                return _error(400, f"queued resource {path} has a node; delete with force=true")
            self.nodes.pop(node_path, None)
            del self.queued[path]
        elif self.nodes.pop(path, None) is None:
            return _error(404, f"{path} not found")
        return 200, self._operation(zone, response={"@type": "type.googleapis.com/google.protobuf.Empty"})

    def _fault(self, kind: str):
        faults = self.flaky.get(kind)
        if faults:
            fault = faults.pop(0)
            self.faults_served.append((kind, fault))
            return fault
        return None

    def handle(self, method: str, url: str, body: dict):
        parsed = urlparse(url)
        path, query = parsed.path.removeprefix("/v2/"), parse_qs(parsed.query)
        with self._lock:
            self.requests.append((method, parsed.path, body))
            fault = self._fault(_call_kind(method, path))
            if fault is not None:
                return fault if fault == RESET else _error(fault, f"injected fault {fault}")
            if method == "POST" and path.endswith("/queuedResources"):
                return self._create_queued(path.removesuffix("/queuedResources"), query["queuedResourceId"][0], body)
            if method == "POST":
                return self._create_node(path.removesuffix("/nodes"), query["nodeId"][0], body)
            if method == "DELETE":
                return self._delete(path, query.get("force", ["false"])[0] == "true")
            if path.endswith(("/nodes", "/queuedResources")):
                return self._list(*path.rsplit("/", 1))
            return self._get(path)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                answer = api.handle(method, self.path, body)
                if answer == RESET:
                    self.close_connection = True
                    return
                status, payload = answer
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
