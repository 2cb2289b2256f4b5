"""The HTTP gateway playing APISIX for real HTTP clients, in front of the real runner process.

The runner serves its built-in "stop" plugin (``--test-plugins``), so no broker is needed: what is
under test is the gateway's routing, HTTP/1.1 handling and APISIX's own answers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.gateway import DEFAULT_SERVER_VERSION, GatewayThread
from harness.http11 import MAX_BODY_BYTES
from harness.routes import RouteConfigError, config_from_admin_json, load_config
from harness.runner_process import RunnerProcess

NOT_FOUND = b'{"error_msg":"404 Route Not Found"}\n'


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    with RunnerProcess(args=["--test-plugins"]) as proc:
        yield proc


def stop_plugin(phase: str = "ext-plugin-pre-req", **conf: Any) -> dict[str, Any]:
    return {phase: {"conf": [{"name": "stop", "value": json.dumps(conf)}]}}


def route(rid: str, uri: str, **fields: Any) -> dict[str, Any]:
    """A route whose pre-req Stop answers with body ``rid`` unless ``plugins`` is given."""
    fields.setdefault("plugins", stop_plugin(body=rid))
    return {"id": rid, "uri": uri, **fields}


def write_json(tmp_path: Path, data: object, name: str = "routes.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while read_until_close:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def upstream() -> Iterator[str]:
    """A plain HTTP server answering ``upstream saw <METHOD> <path>`` (stands for the backend)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = f"upstream saw {self.command} {self.path} {self.rfile.read(length)!r}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- routing ------------------------------------------------------------------------------------


def test_exact_uri_beats_prefix_and_longer_prefix_beats_shorter(runner, tmp_path):
    routes = [route("short", "/api/*"), route("long", "/api/v1/*"), route("exact", "/api/v1/items")]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:
        assert requests.get(gw.url + "/api/v1/items").text == "exact"
        assert requests.get(gw.url + "/api/v1/other").text == "long"
        assert requests.get(gw.url + "/api/v2").text == "short"
        assert requests.get(gw.url + "/api").content == NOT_FOUND  # "/api/*" needs "/api/"


def test_methods_filter_routes_and_fall_through_to_the_next_candidate(runner, tmp_path):
    routes = [route("post-only", "/m", methods=["POST"]), route("catch-all", "/*")]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:
        assert requests.post(gw.url + "/m").text == "post-only"
        assert requests.get(gw.url + "/m").text == "catch-all"


def test_method_not_listed_anywhere_is_404_not_405(runner, tmp_path):
    with GatewayThread(
        write_json(tmp_path, [route("g", "/g", methods=["GET"])]), runner.socket_path
    ) as gw:
        answer = requests.delete(gw.url + "/g")
    assert answer.status_code == 404
    assert answer.content == NOT_FOUND


def test_host_routes_win_over_wildcard_hosts_and_hostless_routes(runner, tmp_path):
    routes = [
        route("any-host", "/h"),
        route("wildcard", "/h", hosts=["*.example.com"]),
        route("exact-host", "/h", host="api.example.com"),
    ]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:

        def via(host: str) -> str:
            return requests.get(gw.url + "/h", headers={"Host": host}).text

        assert via("api.example.com:9080") == "exact-host"
        assert via("www.example.com") == "wildcard"
        assert via("example.org") == "any-host"


def test_higher_priority_wins_among_equal_uris(runner, tmp_path):
    routes = [route("low", "/p"), route("high", "/p", priority=10)]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:
        assert requests.get(gw.url + "/p").text == "high"


def test_no_route_is_apisix_404_with_its_json_body(runner, tmp_path):
    with GatewayThread(write_json(tmp_path, [route("x", "/x")]), runner.socket_path) as gw:
        answer = requests.get(gw.url + "/nowhere")
    assert answer.status_code == 404
    assert answer.content == NOT_FOUND
    assert answer.headers["Server"].startswith("APISIX/3.")


def test_path_is_normalised_before_matching(runner, tmp_path):
    with GatewayThread(write_json(tmp_path, [route("n", "/a/b")]), runner.socket_path) as gw:
        reply = raw_exchange(
            gw.port, b"GET //a/./x/../%62 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"\r\n\r\nn")


# --- the Stop answer ----------------------------------------------------------------------------


def test_stop_answer_reaches_the_client_unchanged_with_duplicate_headers(runner, tmp_path):
    plugins = stop_plugin(
        status=405,
        body="cat",
        headers={"X-Same": "one", "x-same": "two", "Content-Type": "text/x-cat"},
    )
    with GatewayThread(
        write_json(tmp_path, [route("s", "/s", plugins=plugins)]), runner.socket_path
    ) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("POST", "/s", body=b"ignored")
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
    assert (answer.status, body) == (405, b"cat")
    headers = answer.getheaders()
    assert [(n, v) for n, v in headers if n.lower() == "x-same"] == [
        ("X-Same", "one"),
        ("x-same", "two"),
    ]
    assert answer.getheader("Content-Type") == "text/x-cat"
    assert [v for n, v in headers if n == "Server"] == [f"APISIX/{DEFAULT_SERVER_VERSION}"]


def test_stop_without_body_and_error_status_gets_nginx_error_page(runner, tmp_path):
    plugins = stop_plugin(status=403, headers={"X-Why": "runner"})
    with GatewayThread(
        write_json(tmp_path, [route("f", "/f", plugins=plugins)]), runner.socket_path
    ) as gw:
        answer = requests.get(gw.url + "/f")
    assert answer.status_code == 403
    assert answer.headers["X-Why"] == "runner"
    assert answer.headers["Content-Type"].startswith("text/html")
    assert b"<title>403 Forbidden</title>" in answer.content


def test_runner_sees_nginx_vars_through_extra_info(runner, tmp_path):
    plugins = stop_plugin(
        echo_vars=[
            "remote_addr",
            "request_method",
            "uri",
            "request_uri",
            "host",
            "http_x_trace",
            "arg_a",
            "route_id",
            "route_name",
            "content_type",
            "nosuch",
        ]
    )
    routes = [route("v", "/v*", name="vars-route", plugins=plugins)]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:
        answer = requests.post(
            gw.url + "/v%5E?a=1%202&b",
            data="x",
            headers={"X-Trace": "t1", "Host": "Example.COM:81", "Content-Type": "text/plain"},
        )
    got = {k[len("X-Var-") :]: v for k, v in answer.headers.items() if k.startswith("X-Var-")}
    assert got == {
        "remote_addr": "127.0.0.1",
        "request_method": "POST",
        "uri": "/v^",
        "request_uri": "/v%5E?a=1%202&b",
        "host": "example.com",
        "http_x_trace": "t1",
        "arg_a": "1%202",
        "route_id": "v",
        "route_name": "vars-route",
        "content_type": "text/plain",
        "nosuch": "<nil>",
    }


# --- failures and pass-through ------------------------------------------------------------------


def test_runner_unreachable_is_503_with_nginx_html_page(tmp_path):
    missing = str(tmp_path / "nobody-listens.sock")
    with GatewayThread(write_json(tmp_path, [route("d", "/d")]), f"unix:{missing}") as gw:
        answer = requests.post(gw.url + "/d", data="{}")
    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("text/html")
    assert b"<center><h1>503 Service Temporarily Unavailable</h1></center>" in answer.content
    assert answer.headers["Server"] == f"APISIX/{DEFAULT_SERVER_VERSION}"


def test_allow_degradation_passes_through_to_the_upstream_when_runner_is_down(tmp_path, upstream):
    plugins = {
        "ext-plugin-pre-req": {"conf": [{"name": "stop", "value": "{}"}], "allow_degradation": True}
    }
    routes = [
        route(
            "deg", "/deg", plugins=plugins, upstream={"type": "roundrobin", "nodes": {upstream: 1}}
        )
    ]
    with GatewayThread(write_json(tmp_path, routes), f"unix:{tmp_path}/none.sock") as gw:
        answer = requests.post(gw.url + "/deg?q=1", data=b"payload")
    assert answer.status_code == 200
    assert answer.text == "upstream saw POST /deg?q=1 b'payload'"
    assert answer.headers["Server"] == f"APISIX/{DEFAULT_SERVER_VERSION}"


def test_plugin_that_lets_the_request_through_without_upstream_is_503(runner, tmp_path):
    # An unknown plugin name is skipped by the runner: the RPC answers "continue".
    plugins = {"ext-plugin-pre-req": {"conf": [{"name": "nosuch", "value": "{}"}]}}
    with GatewayThread(
        write_json(tmp_path, [route("c", "/c", plugins=plugins)]), runner.socket_path
    ) as gw:
        answer = requests.get(gw.url + "/c")
    assert answer.status_code == 503
    assert b"503 Service Temporarily Unavailable" in answer.content


def test_plugin_that_lets_the_request_through_reaches_the_upstream(runner, tmp_path, upstream):
    plugins = {"ext-plugin-pre-req": {"conf": [{"name": "nosuch", "value": "{}"}]}}
    routes = [
        route(
            "c",
            "/c",
            plugins=plugins,
            upstream={
                "nodes": [
                    {"host": "127.0.0.1", "port": int(upstream.rsplit(":", 1)[1]), "weight": 1}
                ]
            },
        )
    ]
    with GatewayThread(write_json(tmp_path, routes), runner.socket_path) as gw:
        answer = requests.get(gw.url + "/c")
    assert answer.text == "upstream saw GET /c b''"


# --- loading APISIX's formats -------------------------------------------------------------------


def test_admin_api_answer_json_gives_route_id_and_version(tmp_path):
    answer = {
        "key": "/apisix/routes/r7",
        "modifiedIndex": 42,
        "createdIndex": 40,
        "value": {"uri": "/k", "plugins": stop_plugin()},
    }
    config = config_from_admin_json({"total": 1, "list": [answer]})
    assert [(r.id, r.version, r.uris) for r in config.routes] == [("r7", 42, ("/k",))]
    assert config.routes[0].pre_req is not None
    assert config.routes[0].pre_req.conf == (("stop", "{}"),)


def test_admin_api_body_without_id_takes_the_file_name(runner, tmp_path):
    path = write_json(
        tmp_path,
        {"uri": "/named", "plugins": stop_plugin(echo_vars=["route_id"])},
        name="my-route.json",
    )
    with GatewayThread(path, runner.socket_path) as gw:
        assert requests.get(gw.url + "/named").headers["X-Var-route_id"] == "my-route"


def test_apisix_yaml_routes_and_consumers_are_served(runner, tmp_path):
    path = tmp_path / "apisix.yaml"
    path.write_text(
        "routes:\n"
        "  - uri: /yaml\n"
        "    plugins:\n"
        "      ext-plugin-pre-req:\n"
        "        conf:\n"
        "          - name: stop\n"
        '            value: \'{"status": 201, "echo_vars": ["route_id"]}\'\n'
        "consumers:\n"
        "  - username: demo\n"
        "    plugins:\n"
        "      key-auth:\n"
        "        key: k1\n"
        "#END\n"
    )
    config = load_config(path)
    assert config.routes[0].version == int(path.stat().st_ctime)
    assert config.consumer_for_key("k1") is not None
    with GatewayThread(path, runner.socket_path) as gw:
        answer = requests.get(gw.url + "/yaml")
    assert answer.status_code == 201
    assert answer.headers["X-Var-route_id"] == "routes#1"  # standalone mode's default id


def test_apisix_yaml_without_end_marker_is_refused(tmp_path):
    path = tmp_path / "apisix.yaml"
    path.write_text("routes:\n  - uri: /x\n")
    with pytest.raises(RouteConfigError, match="#END"):
        load_config(path)


def test_conf_value_that_is_an_object_not_a_string_is_refused():
    bad = {
        "uri": "/x",
        "plugins": {
            "ext-plugin-pre-req": {"conf": [{"name": "kafkaupstream", "value": {"topic": "t"}}]}
        },
    }
    with pytest.raises(RouteConfigError, match="must be a string"):
        config_from_admin_json(bad)


def test_plugins_the_gateway_does_not_emulate_are_refused():
    with pytest.raises(RouteConfigError, match="proxy-rewrite"):
        config_from_admin_json({"uri": "/x", "plugins": {"proxy-rewrite": {"uri": "/y"}}})


# --- HTTP/1.1 -----------------------------------------------------------------------------------


@pytest.fixture
def echo_gateway(runner, tmp_path) -> Iterator[GatewayThread]:
    plugins = stop_plugin(echo_body=True, headers={"Content-Type": "application/octet-stream"})
    with GatewayThread(
        write_json(tmp_path, [route("e", "/echo", plugins=plugins)]), runner.socket_path
    ) as gw:
        yield gw


def test_chunked_request_body_is_reassembled(echo_gateway):
    request = (
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    reply = raw_exchange(echo_gateway.port, request)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nhello world!")


def test_chunked_body_from_a_generator_through_requests(echo_gateway):
    parts = [b"a" * 70000, b"b" * 3, b"c" * 100000]
    answer = requests.post(echo_gateway.url + "/echo", data=iter(parts))
    assert answer.content == b"".join(parts)


def test_keep_alive_serves_several_requests_on_one_connection(echo_gateway):
    conn = http.client.HTTPConnection("127.0.0.1", echo_gateway.port, timeout=10)
    bodies = []
    for i in range(3):
        conn.request("POST", "/echo", body=f"request {i}".encode())
        if i == 0:
            first_socket = conn.sock
        answer = conn.getresponse()
        assert answer.getheader("Connection") == "keep-alive"
        bodies.append(answer.read())
        assert conn.sock is first_socket
    conn.close()
    assert bodies == [b"request 0", b"request 1", b"request 2"]


def test_pipelined_requests_are_answered_in_order(echo_gateway):
    request = b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n%s\r\n%s"
    data = request % (3, b"", b"one") + request % (3, b"Connection: close\r\n", b"two")
    reply = raw_exchange(echo_gateway.port, data)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert reply.index(b"\r\n\r\none") < reply.index(b"\r\n\r\ntwo")


def test_expect_100_continue_is_answered_before_the_body_is_sent(echo_gateway):
    with socket.create_connection(("127.0.0.1", echo_gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"\r\n\r\nbody")


def test_head_gets_the_headers_and_no_body(runner, tmp_path):
    plugins = stop_plugin(body="twelve bytes")
    with GatewayThread(
        write_json(tmp_path, [route("hd", "/hd", plugins=plugins)]), runner.socket_path
    ) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("HEAD", "/hd")
        answer = conn.getresponse()
        assert answer.read() == b""
        assert answer.getheader("Content-Length") == "12"
        conn.request("HEAD", "/hd")  # the connection is still usable: no stray body bytes
        assert conn.getresponse().status == 200
        conn.close()


def test_large_body_is_read_whole(echo_gateway):
    body = os.urandom(4 * 1024 * 1024)
    answer = requests.post(echo_gateway.url + "/echo", data=body)
    assert answer.status_code == 200
    assert answer.content == body


def test_content_length_over_16_mib_is_413_without_reading_the_body(echo_gateway):
    reply = raw_exchange(
        echo_gateway.port,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
    )
    assert reply.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"Connection: close" in reply


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /echo HTTP/1.1\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n",
    ],
    ids=["request-line", "content-length", "te-and-cl", "chunk-size", "no-host", "header-name"],
)
def test_malformed_request_is_400_and_the_connection_closes(echo_gateway, request_bytes):
    reply = raw_exchange(echo_gateway.port, request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in reply
    assert b"<title>400 Bad Request</title>" in reply


# --- key-auth ordering --------------------------------------------------------------------------


@pytest.fixture
def auth_gateway(runner, tmp_path) -> Iterator[GatewayThread]:
    consumer = {"username": "demo", "plugins": {"key-auth": {"key": "secret-key"}}}
    produced = {"status": 200, "body": "produced", "echo_vars": ["consumer_name"]}
    routes = [
        route("pre", "/pre", plugins={"key-auth": {}, **stop_plugin(**produced)}),
        route(
            "post",
            "/post",
            plugins={"key-auth": {}, **stop_plugin("ext-plugin-post-req", **produced)},
        ),
    ]
    paths = [write_json(tmp_path, routes), write_json(tmp_path, consumer, "consumer.json")]
    with GatewayThread(paths, runner.socket_path) as gw:
        yield gw


def test_pre_req_stop_answers_before_key_auth_even_without_a_key(auth_gateway):
    answer = requests.post(auth_gateway.url + "/pre", data="{}")
    assert (answer.status_code, answer.text) == (200, "produced")  # the documented hole
    assert answer.headers["X-Var-consumer_name"] == "<nil>"


def test_post_req_route_rejects_a_request_without_key(auth_gateway):
    answer = requests.post(auth_gateway.url + "/post", data="{}")
    assert answer.status_code == 401
    assert answer.content == b'{"message":"Missing API key found in request"}\n'


def test_post_req_route_rejects_a_wrong_key(auth_gateway):
    answer = requests.post(auth_gateway.url + "/post", data="{}", headers={"apikey": "nope"})
    assert answer.status_code == 401
    assert answer.content == b'{"message":"Invalid API key in request"}\n'


def test_post_req_route_runs_the_plugin_for_an_authenticated_consumer(auth_gateway):
    answer = requests.post(auth_gateway.url + "/post", data="{}", headers={"apikey": "secret-key"})
    assert (answer.status_code, answer.text) == (200, "produced")
    assert answer.headers["X-Var-consumer_name"] == "demo"
    by_query = requests.post(auth_gateway.url + "/post?apikey=secret-key", data="{}")
    assert by_query.status_code == 200


# --- recording hook and CLI ---------------------------------------------------------------------


def test_exchange_hook_sees_request_answer_and_timing(runner, tmp_path):
    seen = []
    with GatewayThread(
        write_json(tmp_path, [route("r", "/r")]),
        runner.socket_path,
        on_exchange=lambda req, ans, timing: seen.append((req, ans, timing)),
    ) as gw:
        requests.post(gw.url + "/r", data=b"abc", headers={"X-A": "1"})
        requests.get(gw.url + "/missing")
    (req1, ans1, t1), (req2, ans2, _) = seen
    assert (req1.method, req1.target, req1.body, req1.header("x-a")) == ("POST", "/r", b"abc", "1")
    assert (ans1.status, ans1.body, ans1.source, ans1.route_id) == (200, b"r", "runner", "r")
    assert 0 < t1.runner_ms <= t1.total_ms
    assert (req2.target, ans2.status, ans2.route_id) == ("/missing", 404, None)


def test_cli_help_names_its_options():
    out = subprocess.run(
        [sys.executable, "-m", "harness.gateway", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--routes", "--runner", "--listen"):
        assert option in out


def test_cli_serves_routes_and_logs_one_line_per_request(runner, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.gateway",
            "--routes",
            str(write_json(tmp_path, [route("cli", "/cli")])),
            "--runner",
            f"unix:{runner.socket_path}",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/cli", data="{}", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "gateway not up"
                time.sleep(0.05)
        assert answer.text == "cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "method=POST path=/cli status=200" in err


def test_body_of_16_mib_is_accepted_but_cannot_fit_one_frame_so_apisix_answers_503(echo_gateway):
    # APISIX reads it too, then fails to put it in one ExtraInfo frame (apache/apisix#8768).
    answer = requests.post(echo_gateway.url + "/echo", data=b"x" * MAX_BODY_BYTES)
    assert answer.status_code == 503
