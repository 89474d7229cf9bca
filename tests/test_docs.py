"""The documentation site: `mkdocs build --strict` passes, every page and the OpenAPI reference are built.

The strict build fails on a broken link, an anchor that does not exist, a page missing from the navigation or
a snippet whose file is gone, so this test is what keeps the docs true to the tree. The README is the door to
them: one screen, the two commands, links that lead somewhere.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 8 * 1024
THE_TWO_COMMANDS = ("```bash\n./init.sh\n```", "```bash\n./scripts/test.sh\n```")
PAGES = [
    "index.html",
    "getting-started/index.html",
    "concepts/money/index.html",
    "concepts/predictions/index.html",
    "api/index.html",
    "api/keys/index.html",
    "api/price-protection/index.html",
    "api/webhooks/index.html",
    "api/python-client/index.html",
    "reference/openapi/index.html",
    "web-ui/index.html",
    "studio/index.html",
    "operating/settings/index.html",
    "operating/monitoring/index.html",
    "operating/recovery/index.html",
    "cluster/install/index.html",
    "cluster/chart/index.html",
    "benchmarks/index.html",
    "development/index.html",
]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
MLMARKET = Path(sys.executable).with_name("mlmarket")
DOCS_API = "API=http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return out


def text_of(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def test_every_page_of_the_navigation_is_built(site: Path) -> None:
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing, f"pages missing from the built site: {missing}"


def test_the_openapi_reference_shows_every_operation_of_the_app(site: Path) -> None:
    document = json.loads((site / "reference" / "openapi.json").read_text())
    assert {"/api/v1/predictions", "/api/v1/wallet/top-ups", "/v2/models/{name}/infer"} <= set(document["paths"])
    headings = {
        html.unescape(re.sub(r"<[^>]+>", "", h)).removesuffix("¶").strip()
        for h in re.findall(r"<h3[^>]*>.*?</h3>", (site / "reference/openapi/index.html").read_text())
    }
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert operations - headings == set(), "operations the rendered reference does not show"


def test_getting_started_gives_the_readme_commands_and_a_first_prediction(site: Path) -> None:
    readme = README.read_text()
    source = (ROOT / "docs" / "getting-started.md").read_text()
    for command in THE_TWO_COMMANDS:
        assert command in readme, f"the README lost the command {command!r}"
        assert command in source, f"Getting started lost the command {command!r}"
    page = text_of((site / "getting-started/index.html").read_text())
    assert "Pay 3 credits and predict" in page
    assert "Prefer: wait=10" in page


def test_the_chart_reference_is_the_charts_own_readme(site: Path) -> None:
    chart_readme = (ROOT / "helm" / "mlmarket" / "README.md").read_text()
    title = chart_readme.splitlines()[0].removeprefix("# ").strip()
    assert title in text_of((site / "cluster/chart/index.html").read_text())


def test_every_setting_is_documented() -> None:
    """Each field of Settings appears as its MLMARKET_* variable in the settings page, so none goes unexplained."""
    from app.core.config import Settings

    page = (ROOT / "docs" / "operating" / "settings.md").read_text()
    missing = [
        f"MLMARKET_{name.upper()}"
        for name in Settings.model_fields
        if not re.search(rf"`MLMARKET_{name.upper()}`", page)
    ]
    assert not missing, f"settings missing from docs/operating/settings.md: {missing}"


def test_the_python_client_page_is_the_clients_own_readme(site: Path) -> None:
    page = text_of((site / "api/python-client/index.html").read_text())
    client_readme = (ROOT / "clients" / "python" / "README.md").read_text()
    assert "pip install ./clients/python" in client_readme
    assert "pip install ./clients/python" in page
    for heading in re.findall(r"^## (.+)$", client_readme, flags=re.MULTILINE):
        assert heading.replace("`", "") in page, f"the client page lost the README section {heading!r}"


def python_blocks(markdown: str, section: str) -> list[str]:
    body = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_the_webhook_verification_snippet_accepts_what_mlmarket_signs_and_nothing_else() -> None:
    from app.services import webhook_signing

    verify_code = python_blocks((ROOT / "docs" / "api" / "webhooks.md").read_text(), "Verifying a signature")[0]
    scope: dict[str, object] = {}
    exec(compile(verify_code, "docs/api/webhooks.md", "exec"), scope)  # noqa: S102 - the documented snippet
    verify = scope["verify"]
    assert callable(verify)
    current, previous = webhook_signing.new_secret(), webhook_signing.new_secret()
    body = b'{"id":"3f0c","status":"succeeded","cost":3,"results":["setosa"]}'
    now = int(time.time())
    headers = webhook_signing.signed_headers([current, previous], "msg_completed_3f0c", now, body)
    assert verify(current, headers, body)
    assert verify(previous, headers, body)  # during a rotation both secrets are accepted
    assert not verify(webhook_signing.new_secret(), headers, body)
    assert not verify(current, headers, body.replace(b"3", b"4"))
    assert not verify(current, {**headers, "webhook-id": "msg_completed_other"}, body)
    assert not verify(current, headers, body, now + 3600)  # a replay an hour later
    assert not verify(current, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)


def test_the_documented_webhook_retry_defaults_are_the_settings() -> None:
    from app.core.config import Settings

    fields = Settings.model_fields
    page = (ROOT / "docs" / "api" / "webhooks.md").read_text()
    for name, shown in [
        ("webhook_retry_base_seconds", "`MLMARKET_WEBHOOK_RETRY_BASE_SECONDS` ({:g} s)"),
        ("webhook_retry_max_seconds", "`MLMARKET_WEBHOOK_RETRY_MAX_SECONDS` ({:g} s)"),
        ("webhook_max_attempts", "`MLMARKET_WEBHOOK_MAX_ATTEMPTS` ({:g})"),
        ("webhook_timeout_seconds", "`MLMARKET_WEBHOOK_TIMEOUT_SECONDS`\n({:g} s by default)"),
    ]:
        expected = shown.format(fields[name].default)
        assert " ".join(expected.split()) in " ".join(page.split()), f"webhooks.md does not say {expected!r}"


def fetches_from_the_network(page: str) -> bool:
    """Whether a browser reading this page would fetch a script, a stylesheet, a font or an image from elsewhere."""
    for tag in re.findall(r"<(?:script|img|iframe|link)\b[^>]*>", page):
        if tag.startswith("<link") and not re.search(r"rel=[\"']?(stylesheet|preload|preconnect)", tag):
            continue  # a plain hyperlink-like <link> (canonical, alternate) fetches nothing
        if re.search(r"(?:src|href)=[\"']?(?:https?:)?//", tag):
            return True
    return False


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    offenders = [
        str(page.relative_to(site)) for page in site.rglob("*.html") if fetches_from_the_network(page.read_text())
    ]
    assert not offenders, f"pages that fetch from the network when read: {offenders}"


def test_the_readme_fits_on_one_screen_and_its_links_lead_to_pages() -> None:
    readme = README.read_text()
    assert len(readme.encode()) < README_MAX_BYTES
    links = re.findall(r"\]\((?!https?:)([^)#]+)(?:#[^)]*)?\)", readme)
    assert links, "the README links into the documentation"
    broken = [link for link in links if not (ROOT / link).exists()]
    assert not broken, f"README links to files that do not exist: {broken}"


def bash_blocks(markdown: str, section: str) -> list[str]:
    """The ```bash blocks of one ``## section`` of a page, as a reader would copy them."""
    body = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """What ./init.sh leaves running, on the embedded default: migrated, demo seeded, served. Yields (url, cwd)."""
    home = tmp_path_factory.mktemp("getting-started")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLMARKET_")}
    env |= {"MLMARKET_DATA_DIR": str(home / "data"), "MLMARKET_PORT": str(port), "MLMARKET_GRPC_PORT": "0"}
    for step in (["migrate"], ["demo-init"]):
        done = subprocess.run([MLMARKET, *step], cwd=home, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"mlmarket {step[0]} failed:\n{done.stdout}\n{done.stderr}"
    server = subprocess.Popen(
        [MLMARKET, "serve"], cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"mlmarket serve exited:\n{server.stderr.read() if server.stderr else ''}"
            try:
                if httpx.get(f"{url}/api/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlmarket serve did not become ready"
            time.sleep(0.2)
        yield url, home
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_first_prediction_with_curl_works_as_written(demo_api: tuple[str, Path]) -> None:
    url, home = demo_api
    blocks = bash_blocks((ROOT / "docs" / "getting-started.md").read_text(), "Your first prediction with curl")
    assert len(blocks) == 2 and blocks[0].startswith(DOCS_API)
    script = "\n".join(blocks).replace(DOCS_API, f"API={url}", 1)
    run = subprocess.run(["bash", "-c", script], cwd=home, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # The demo client starts with 600 credits, pays 3 for one iris-forest row, and 3 again over /v2.
    assert '{"balance":600}' in out
    assert '"status":"succeeded"' in out
    assert '"cost":3' in out
    assert '"results":["setosa"]' in out
    assert '{"balance":597}' in out
    assert '"data":["virginica"]' in out
    password = json.loads((home / "data" / "demo_credentials.json").read_text())["client_password"]
    token = httpx.post(
        f"{url}/api/v1/auth/token", data={"username": "demo-client@example.com", "password": password}
    ).json()["access_token"]
    wallet = httpx.get(f"{url}/api/v1/wallet", headers={"Authorization": f"Bearer {token}"}).json()
    assert wallet == {"balance": 594}
