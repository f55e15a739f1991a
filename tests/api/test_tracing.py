"""Distributed tracing across a cluster's processes: a front, a coordinator and a worker,
each exporting spans over OTLP/HTTP (protobuf, the default protocol) to a stand-in
collector in this test. One chat request must be one trace with spans from all three
processes, joined parent to child, and an incoming `traceparent` must be honoured."""
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import MODEL_ID, poll


class Collector:
    """An OTLP/HTTP trace receiver: decodes every export into (service, span) pairs."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces", self.path
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    for rs in request.resource_spans:
                        service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                        for ss in rs.scope_spans:
                            collector.spans.extend((service, s) for s in ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id):
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id.hex() == trace_id]

    def close(self):
        self.server.shutdown()


def traced_cluster(cluster, collector):
    cluster.env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    cluster.coordinator("coord1")
    cluster.worker("w1")
    url = cluster.front("front1")
    cluster.wait_workers(url, 1)
    return url


def chat(url, key, headers=None):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=120)
    assert r.status_code == 200, r.text
    return r


def whole_trace(collector, trace_id):
    """The trace once every span we expect has arrived."""
    expected = {"POST /v1/chat/completions", "billing.hold", "coordinator.queue", "coordinator.place", "worker.job", "prefill", "decode", "billing.settle"}
    return poll(lambda: (lambda t: t if expected <= {s.name for _, s in t} else None)(collector.trace(trace_id)), f"the spans of trace {trace_id}", timeout=30)


def test_one_request_is_one_trace_across_front_coordinator_and_worker(cluster):
    collector = Collector()
    try:
        url = traced_cluster(cluster, collector)
        _, key = cluster.account()

        # The caller's own span: the request's trace continues it.
        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        chat(url, key, {"traceparent": f"00-{trace_id}-{caller_span}-01"})
        trace = whole_trace(collector, trace_id)
        by_service = {}
        for svc, s in trace:
            by_service.setdefault(svc, set()).add(s.name)
        assert by_service["supernet-front"] >= {"POST /v1/chat/completions", "billing.hold", "billing.settle"}, by_service
        assert by_service["supernet-coordinator"] >= {"coordinator.queue", "coordinator.place"}, by_service
        assert by_service["supernet-worker"] >= {"worker.job", "prefill", "decode"}, by_service

        # Joined: the request's span is the caller's child, and every other span's parent is
        # in the trace; the worker's job hangs under the coordinator's placement.
        spans = {s.span_id.hex(): s for _, s in trace}
        root = next(s for _, s in trace if s.name == "POST /v1/chat/completions")
        assert root.parent_span_id.hex() == caller_span
        for s in spans.values():
            if s is not root:
                assert s.parent_span_id.hex() in spans, f"{s.name}'s parent is not in the trace"
        name_of_parent = {s.name: spans[s.parent_span_id.hex()].name for s in spans.values() if s is not root}
        assert name_of_parent["coordinator.queue"] == "POST /v1/chat/completions"
        assert name_of_parent["coordinator.place"] == "coordinator.queue"
        assert name_of_parent["worker.job"] == "coordinator.place"
        assert name_of_parent["prefill"] == name_of_parent["decode"] == "worker.job"
        assert root.kind == root.SPAN_KIND_SERVER

        # Without a traceparent the front starts the trace, and it still spans all three.
        before = {s.trace_id.hex() for _, s in collector.spans}
        chat(url, key)
        new = poll(lambda: {s.trace_id.hex() for _, s in collector.spans if s.name == "POST /v1/chat/completions"} - before, "a new trace")
        assert len(new) == 1
        services = {svc for svc, _ in whole_trace(collector, new.pop())}
        assert services == {"supernet-front", "supernet-coordinator", "supernet-worker"}
    finally:
        collector.close()
