"""TLS (DESIGN §7, issue 13 item 4): rediss:// lock nodes verified against
--redis-ca, and the API and dashboard served over HTTPS with --tls-cert and
--tls-key.

The certificates are made at test time with the openssl CLI: a throwaway CA,
a server certificate for localhost and 127.0.0.1 signed by it, one signed by
it for another name only, and a second CA that signed nothing here (the
wrong one). The lock nodes are real
redis-server processes serving TLS only, with a password; the HTTPS client
is curl."""

import socket
import ssl
import subprocess

import pytest

from conftest import SLOW, Instance, http, job_body, ms, wait_for
from redisnode import TlsFiles, start_nodes

PASSWORD = "lock-node-password-0123"
# The database the instances use on the nodes: SELECT must work over TLS too.
DB = 3


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """TlsFiles of a server certificate for localhost/127.0.0.1, the path of a
    CA that did not sign it, and TlsFiles of a certificate for another name."""
    workdir = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=cronfence test {ca}",
                cwd=workdir)
    for server, names in (("server", "DNS:localhost,IP:127.0.0.1"),
                          ("elsewhere", "DNS:elsewhere.example")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{server}.key", "-out",
                f"{server}.csr", "-subj", f"/CN={names.split(',')[0][4:]}", cwd=workdir)
        (workdir / f"{server}.cnf").write_text(f"subjectAltName={names}\n")
        openssl("x509", "-req", "-in", f"{server}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{server}.crt", "-days", "2", "-extfile",
                f"{server}.cnf", cwd=workdir)
    files = TlsFiles(cert=workdir / "server.crt", key=workdir / "server.key",
                     ca=workdir / "ca.crt")
    elsewhere = TlsFiles(cert=workdir / "elsewhere.crt", key=workdir / "elsewhere.key",
                         ca=workdir / "ca.crt")
    return files, workdir / "other-ca.crt", elsewhere


@pytest.fixture
def tls_nodes(tmp_path, pki):
    """Three redis-server nodes serving TLS only, with a password; kill -9'd afterwards."""
    nodes = start_nodes(tmp_path, 3, tls=pki[0], password=PASSWORD)
    yield nodes
    for node in nodes:
        node.kill9()


def redis_urls(nodes):
    return ",".join(f"{node.url}/{DB}" for node in nodes)


def cluster_view(instance):
    reply = instance.api("GET", "/api/v1/cluster")
    assert reply.status == 200, reply
    return reply.json


def start(processes, tmp_path, name, args):
    instance = Instance(tmp_path, name=name, args=args)
    processes.append(instance)
    return instance.start()


# --------------------------------------------------------------------------
# rediss:// lock nodes
# --------------------------------------------------------------------------

def test_rediss_cluster_fires_every_slot_once(tmp_path, processes, pki, tls_nodes, receiver):
    files = pki[0]
    instances = [start(processes, tmp_path, f"cf{i}",
                       ["--redis", redis_urls(tls_nodes), "--redis-ca", str(files.ca),
                        "--instance-id", f"cf{i}"]) for i in range(2)]

    def settled(instance):
        view = cluster_view(instance)
        return (len(view["members"]) == 2 and view["quorum"]["healthy"]
                and view["quorum"]["trusted"] == 3 and all(n["up"] for n in view["nodes"]))
    for instance in instances:
        wait_for(lambda: settled(instance), timeout=20, what=f"{instance.name} settled")
        assert http("GET", instance.url + "/readyz").status == 200

    reply = instances[0].api("POST", "/api/v1/jobs", job_body("tls-tick", receiver.hook()))
    assert reply.status == 201, reply
    # The peer learns of the job within a second or two; from then on every slot counts.
    first = -(-(ms(reply.json["created_at"]) + 2000) // 1000) * 1000
    slots = [first + 1000 * i for i in range(5)]
    wait_for(lambda: {ms(d["scheduled_at"]) for d in receiver.deliveries("tls-tick")}
             >= set(slots), timeout=30, what="five consecutive slots delivered")

    deliveries = receiver.deliveries("tls-tick")
    keys = [d["idempotency_key"] for d in deliveries]
    assert len(keys) == len(set(keys)), f"a slot delivered twice: {sorted(keys)}"
    in_window = sorted((d for d in deliveries if ms(d["scheduled_at"]) in slots),
                       key=lambda d: ms(d["scheduled_at"]))
    tokens = [d["token"] for d in in_window]
    assert tokens == sorted(set(tokens)), f"tokens not increasing: {tokens}"
    assert {d["instance"] for d in deliveries} <= {"cf0", "cf1"}
    # A catalog entry of many TLS records each way: written by cf0, read back by cf1.
    body = {"blob": "".join(f"{i:07d}," for i in range(40000))}
    reply = instances[0].api("POST", "/api/v1/jobs",
                             job_body("tls-big", receiver.hook(), schedule="0 0 1 1 *",
                                      webhook={"body": body}))
    assert reply.status == 201, reply

    def peer_has_it():
        seen = instances[1].api("GET", "/api/v1/jobs/tls-big")
        return seen.status == 200 and seen.json["webhook"]["body"] == body
    wait_for(peer_has_it, timeout=20, what="cf1 reads the 320 KB job written by cf0")

    # A node restarted (kill -9, then from its AOF) is reconnected over TLS by both.
    tls_nodes[0].restart()
    up_again = f"redis node up node={tls_nodes[0].address}"
    for instance in instances:
        wait_for(lambda: instance.stderr().count(up_again) >= 2, timeout=20,
                 what=f"{instance.name} reconnected")
        wait_for(lambda: settled(instance), timeout=20, what=f"{instance.name} settled again")
    before = len(receiver.deliveries("tls-tick"))
    wait_for(lambda: len(receiver.deliveries("tls-tick")) >= before + 2, timeout=20,
             what="deliveries after the restart")

    # The locks and fences are on the database the URLs select, reached over TLS with AUTH.
    for node in tls_nodes:
        assert int(node.cli("-n", DB, "DBSIZE")) > 0, node.name
        assert int(node.cli("-n", 0, "DBSIZE")) == 0, node.name


def test_rediss_with_a_wrong_ca_is_refused(tmp_path, processes, pki, tls_nodes, receiver):
    other_ca = pki[1]
    instance = start(processes, tmp_path, "cf-wrong-ca",
                     ["--redis", redis_urls(tls_nodes), "--redis-ca", str(other_ca)])

    wait_for(lambda: "tls certificate refused" in instance.stderr(), timeout=15,
             what="the refused certificate logged")
    view = cluster_view(instance)
    assert not any(node["up"] for node in view["nodes"]), view["nodes"]
    assert view["quorum"]["healthy"] is False, view["quorum"]
    assert http("GET", instance.url + "/readyz").status == 503
    # Nothing reaches the nodes: no job can be stored, nothing fires.
    reply = instance.api("POST", "/api/v1/jobs", job_body("never", receiver.hook()))
    assert reply.status != 201, reply
    for node in tls_nodes:
        assert int(node.cli("-n", DB, "DBSIZE")) == 0, node.name
    assert receiver.deliveries() == []


def test_rediss_without_redis_ca_verifies_against_the_system_cas(tmp_path, processes,
                                                                 tls_nodes):
    # The system's CAs do not know the throwaway CA: the nodes are refused.
    instance = start(processes, tmp_path, "cf-system-ca", ["--redis", redis_urls(tls_nodes)])
    wait_for(lambda: "tls certificate refused" in instance.stderr(), timeout=15,
             what="the refused certificate logged")
    assert http("GET", instance.url + "/readyz").status == 503


def test_rediss_node_whose_certificate_names_another_host_is_refused(tmp_path, processes, pki):
    # Signed by the trusted CA, but for elsewhere.example, not 127.0.0.1.
    nodes = start_nodes(tmp_path, 1, tls=pki[2], password=PASSWORD)
    try:
        instance = start(processes, tmp_path, "cf-wrong-name",
                         ["--redis", redis_urls(nodes), "--redis-ca", str(pki[2].ca)])
        wait_for(lambda: "tls certificate refused: IP address mismatch" in instance.stderr(),
                 timeout=15, what="the refused certificate logged")
        assert http("GET", instance.url + "/readyz").status == 503
        assert int(nodes[0].cli("-n", DB, "DBSIZE")) == 0
    finally:
        nodes[0].kill9()


@pytest.mark.parametrize("args, message", [
    (["--redis", "redis://127.0.0.1:1", "--redis-ca", "{ca}"], "no lock node is rediss://"),
    (["--redis", "rediss://127.0.0.1:1", "--redis-ca", "{missing}"], "cannot read --redis-ca"),
    (["--redis-ca", "{ca}"], "--redis-ca is given without --redis"),
    (["--tls-cert", "{cert}"], "--tls-key is missing"),
    (["--tls-key", "{key}"], "--tls-cert is missing"),
    (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot read --tls-cert"),
    (["--tls-cert", "{cert}", "--tls-key", "{ca}"], "holds no unencrypted PEM private key"),
    (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "is not the key of the certificate"),
])
def test_bad_tls_flags_refuse_to_start(tmp_path, pki, args, message):
    files, other_ca = pki[0], pki[1]
    paths = {"ca": files.ca, "cert": files.cert, "key": files.key,
             "other_key": other_ca.with_suffix(".key"), "missing": tmp_path / "missing.pem"}
    # Not in `processes`: its exit is the point, and a refused start exits non-zero.
    instance = Instance(tmp_path, name="refused", args=[a.format(**paths) for a in args])
    instance.start(expect_ready=False)
    assert instance.wait_exit(timeout=15) != 0
    assert message in instance.stderr(), instance.stderr()
    assert not any(line.startswith("listening on") for line in instance.stdout_lines)
    instance.check_clean()


# --------------------------------------------------------------------------
# HTTPS
# --------------------------------------------------------------------------

def curl(*args):
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", str(20 * SLOW),
                           *args], capture_output=True, text=True, timeout=60 * SLOW)


def test_https_api_and_dashboard(tmp_path, processes, pki):
    files, other_ca = pki[0], pki[1]
    instance = start(processes, tmp_path, "cf-https",
                     ["--tls-cert", str(files.cert), "--tls-key", str(files.key)])
    base = f"https://127.0.0.1:{instance.port}"
    auth = ["-H", f"Authorization: Bearer {instance.token}"]

    out = curl("--cacert", str(files.ca), *auth, "-w", "\n%{http_code}",
               base + "/api/v1/cluster")
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout
    # --advertise defaults to https:// when serving HTTPS.
    assert f'"url":"{base}"' in body.replace(" ", ""), body

    # The host name of the certificate verifies too, and the dashboard is served.
    out = curl("--cacert", str(files.ca), "-w", "\n%{http_code}",
               f"https://localhost:{instance.port}/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n200") and "<html" in out.stdout.lower(), out.stdout[:300]

    # Not trusted without the CA, or with another one.
    assert curl(base + "/healthz").returncode == 60
    assert curl("--cacert", str(other_ca), base + "/healthz").returncode == 60

    # Plain HTTP to the TLS port gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", instance.port), timeout=10 * SLOW) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        try:
            while len(answer) < 64:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert not answer.startswith(b"HTTP/"), answer

    # Python's own TLS stack agrees (a second, independent client).
    context = ssl.create_default_context(cafile=str(files.ca))
    with socket.create_connection(("127.0.0.1", instance.port), timeout=10 * SLOW) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
