"""The dashboard's files: built in, or from a folder with --web-dir, never
from outside it."""

import os
import socket

from conftest import Instance, http


def raw_get(instance, path):
    """Status of GET path sent as is (no client-side normalisation of '..')."""
    with socket.create_connection(("127.0.0.1", instance.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        head = sock.recv(64).decode(errors="replace")
    return int(head.split()[1])


def test_built_in_dashboard_is_served_under_the_csp(instance):
    page = http("GET", instance.url + "/")
    assert page.status == 200 and '<script type="module" src="/js/app.js">' in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert http("GET", instance.url + "/js/app.js").headers["Content-Type"].startswith(
        "text/javascript")


def test_web_dir_serves_the_folder_and_nothing_outside_it(tmp_path, start_instance):
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<p>from the folder</p>")
    (web / "js" / "app.js").write_text("export {};")
    (web / ".hidden").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", web / "escape.txt")
    os.mkfifo(web / "pipe.js")
    instance = start_instance(args=["--web-dir", str(web)])

    page = http("GET", instance.url + "/")
    assert page.status == 200 and page.body == "<p>from the folder</p>"
    assert "Content-Security-Policy" in page.headers
    # Edits show without a restart.
    (web / "index.html").write_text("<p>edited</p>")
    assert http("GET", instance.url + "/").body == "<p>edited</p>"
    assert http("GET", instance.url + "/js/app.js").body == "export {};"

    assert raw_get(instance, "/../outside.txt") == 404
    assert raw_get(instance, "/js/../../outside.txt") == 404
    assert http("GET", instance.url + "/escape.txt").status == 404  # a link leading out
    assert http("GET", instance.url + "/.hidden").status == 404
    assert http("GET", instance.url + "/pipe.js", timeout=5).status == 404  # never blocks
    assert http("GET", instance.url + "/js").status == 404  # a folder is not a file
    # The API is untouched by the folder.
    assert instance.api("GET", "/api/v1/jobs").status == 200


def test_web_dir_must_be_a_folder(tmp_path):
    # Not in `processes`: its exit is the point, and a refused start exits non-zero.
    refused = Instance(tmp_path, name="refused", args=["--web-dir", str(tmp_path / "missing")])
    refused.start(expect_ready=False)
    code = refused.wait_exit()
    assert code != 0
    assert "--web-dir" in refused.stderr() and "is not a folder" in refused.stderr()
