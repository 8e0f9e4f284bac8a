"""The README's "Try it" block, run exactly as written, so the README cannot drift from the code.

The block is read from README.md, its two ports swapped for free ones, and run
by bash in a copy of the project whose ``.venv`` is the runtime virtualenv
(CI's ``.venv-runtime``, built as the image installs; else this interpreter's).
It must end with the sample registered, its state complete and the manifest
published: valid IIIF, its canvases the stand-in DLCS's images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.iiif import assert_valid_iiif
from tests.servers import free_port
from webhook.devdlcs import Asset, image_service_id

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PORT, DLCS_PORT = "8000", "8001"
RUNTIME_VENV = Path(os.environ.get("WEBHOOK_TEST_RUNTIME_VENV") or sys.prefix)
_COPY_IGNORES = shutil.ignore_patterns(".git", ".venv*", "var", "__pycache__", ".pytest_cache",
                                       ".hypothesis", "*.log")


def try_it_block() -> str:
    """The first ```sh block of the README's "Try it" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Try it"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no ```sh block in the README's Try it section"
    return match.group(1)


def with_ports(block: str, service: int, dlcs: int) -> str:
    """Swap the README's ports for free ones (the only change made to the block)."""
    assert re.findall(r"\b8000\b", block) and re.findall(r"\b8001\b", block)
    return re.sub(r"\b8001\b", str(dlcs), re.sub(r"\b8000\b", str(service), block))


def test_the_block_uses_the_documented_commands():
    block = try_it_block()
    for command in ("flask --app wsgi secret", "gunicorn -c gunicorn.conf.py wsgi:app",
                    "flask --app wsgi dev-dlcs", "samples/letters.json", "/status"):
        assert command in block


def test_try_it_goes_from_clone_to_a_published_manifest(tmp_path):
    project = tmp_path / "dlcs-webhook"
    shutil.copytree(ROOT, project, ignore=_COPY_IGNORES)
    (project / ".venv").symlink_to(RUNTIME_VENV)
    service, dlcs = free_port(), free_port()
    script = project / "try-it.sh"
    script.write_text(with_ports(try_it_block(), service, dlcs))
    # Only what a fresh shell has: none of the service's variables.
    env = {"PATH": f"{RUNTIME_VENV}/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "LANG": "C.UTF-8"}

    process = subprocess.Popen(["bash", "-e", str(script)], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        output, errors = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, errors = process.communicate()
        pytest.fail(f"the block did not finish in 120 s:\n{output[-3000:]}\n{errors[-3000:]}\n"
                    + _logs(project))
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the block left running
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{output[-3000:]}\n{errors[-3000:]}\n{_logs(project)}"

    # readyz, the PUT's answer, the complete status, then the headers and the manifest.
    lines = output.splitlines()
    ready = json.loads(lines[0])
    assert ready["status"] == "ok" and ready["disabled"] == {"sns": "SNS_TOPIC_ARNS"}
    registered = json.loads(lines[1])
    assert registered["state"] == "ingesting" and len(registered["batches"]) == 1
    complete = json.loads(lines[2])
    assert complete["state"] == "complete" and complete["batches"][0]["completed"] == 2
    head, _, body = output.partition("\n\n")
    assert "HTTP/1.1 200 OK" in head and "\nETag: " in head
    manifest = json.loads(body)
    assert_valid_iiif(manifest)
    assert manifest["id"] == f"http://127.0.0.1:{service}/2/manifests/letters"
    services = [svc["id"] for canvas in manifest["items"]
                for svc in canvas["items"][0]["items"][0]["body"]["service"] if "id" in svc]
    assert services == [image_service_id(2, Asset(5, "foo")), image_service_id(2, Asset(5, "bar"))]

    # Every line the service logged is JSON; the rebuild happened once.
    logged = [json.loads(line) for line in (project / "service.log").read_text().splitlines()]
    assert [line["outcome"] for line in logged if line["message"] == "rebuild"] == [
        "published"]
    assert (project / "var" / "webhook.db").is_file()


def _logs(project: Path) -> str:
    return "\n".join(f"--- {name}:\n{(project / name).read_text()[-5000:]}"
                     for name in ("service.log", "dev-dlcs.log") if (project / name).exists())
