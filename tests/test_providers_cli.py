"""`kullbatch process examples/shoot.json --provider P` against a fake that speaks P's wire format.

Each provider's fake (tests/fake_*_server.py) checks every request the way the real API does and
runs on 127.0.0.1 in its own thread (tests/app_thread.py), because the CLI calls `asyncio.run`
itself. A middleware counts what reached the server, so "one request, then the job stopped" is
measured on the wire, not inferred from the job's counters. The key-leak test makes the fakes
echo the API key in their error bodies and then looks for it everywhere kullbatch writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.providers import PROVIDERS
from kullbatch.providers.groq import MAX_BASE64_REQUEST_BYTES
from kullbatch.rubrics.loader import load_rubric
from kullbatch.service.paths import admin_log_path
from tests import fake_anthropic_server, fake_gemini_server, fake_openai_server
from tests.app_thread import AppThread
from tests.fake_openai_server import XAI_INVALID, FakeChatServer, openai_error, xai_error

SHOOT = Path(__file__).parent.parent / "examples" / "shoot.json"
IMAGE_IDS = [image["id"] for image in json.loads(SHOOT.read_text())["images"]]
KEY = "sk-test-key-for-the-fake-0001"
WRONG_KEY = "sk-wrong-key-0000"
LEAK = "sk-LEAKCHECK-0123456789abcdef"
# a server hint: these retries wait no longer than the schedules' first steps (1 s, 2 s)
QUICK_RETRY = {"retry-after-ms": "50"}
RATING_FIELDS = ("starRating", "colorLabel", "title", "description", "tags", "issues", "score")
runner = CliRunner()


# --- the fakes, behind one small interface ---------------------------------------------------


class Traffic:
    """Every request the app received, and the order in which handlers started and ended."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.events: list[tuple[str, int]] = []

    def arrived(self, path: str) -> int:
        self.paths.append(path)
        self.events.append(("in", len(self.paths) - 1))
        return len(self.paths) - 1

    def answered(self, number: int) -> None:
        self.events.append(("out", number))

    def probe_went_alone(self) -> bool:
        """The first request was answered before the second one arrived."""
        return self.events[:2] == [("in", 0), ("out", 0)]


class Fake:
    """A provider's fake API: its app, what it refused, what it will answer next."""

    rating: dict[str, Any]

    def __init__(self, roomy_limits: dict[str, str] | None = None) -> None:
        self.traffic = Traffic()
        # The fakes' own limit headers describe a small account (Anthropic 50 RPM and 40k TPM,
        # Groq 30k TPM), whose pace rightly stretches 15 requests over half a minute; these tests
        # are about the wire format, so answers carry a roomy paid account's limits instead.
        self.roomy_limits = roomy_limits or {}

    def app(self) -> web.Application:
        application = self._app()
        application.middlewares.append(self._middleware)
        return application

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        number = self.traffic.arrived(request.path)
        try:
            response = await handler(request)
            for name, value in self.roomy_limits.items():
                if name in response.headers:
                    response.headers[name] = value
            return response
        finally:
            self.traffic.answered(number)

    def _app(self) -> web.Application:
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Requests the fake found wrong by its own checks (the real API would refuse them)."""
        raise NotImplementedError

    def models(self) -> list[str]:
        """The model each checked request asked for."""
        raise NotImplementedError

    def bodies(self) -> list[Any]:
        """Every request body the fake received, parsed."""
        raise NotImplementedError

    def queue(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """The next request that passes the checks gets this JSON answer."""
        raise NotImplementedError


class ChatFake(Fake):
    """OpenAI, xAI, Groq and OpenAI-compatible servers: FakeChatServer in one flavour."""

    rating = fake_openai_server.RATING

    def __init__(
        self,
        key: str | None,
        *,
        flavour: str,
        prefix: str,
        roomy_limits: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(roomy_limits)
        self.server = FakeChatServer(prefix=prefix, api_key=key, flavour=flavour, **options)

    def _app(self) -> web.Application:
        # FakeChatServer.start() needs pytest-aiohttp's fixture; build the same app here
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_post(f"{self.server.prefix}/chat/completions", self.server._chat)
        application.router.add_get("/images/{name}", self.server._image)
        return application

    def problems(self) -> list[str]:
        return self.server.problems

    def models(self) -> list[str]:
        return [received.json["model"] for received in self.server.requests]

    def bodies(self) -> list[Any]:
        return [received.json for received in self.server.requests]

    def queue(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.server.queue(status, body, headers)


ANTHROPIC_ROOMY_LIMITS = {
    f"anthropic-ratelimit-{name}-limit": value
    for name, value in (("requests", "4000"), ("tokens", "4000000"), ("input-tokens", "4000000"))
}


class AnthropicFake(Fake):
    rating = fake_anthropic_server.GOOD_RATING

    def __init__(self, key: str | None) -> None:
        super().__init__(ANTHROPIC_ROOMY_LIMITS)
        self.fake = fake_anthropic_server.FakeAnthropic(key=key or "")

    def _app(self) -> web.Application:
        return self.fake.app()

    def problems(self) -> list[str]:
        return self.fake.rejections

    def models(self) -> list[str]:
        return [recorded.body["model"] for recorded in self.fake.requests]

    def bodies(self) -> list[Any]:
        return [recorded.body for recorded in self.fake.requests]

    def queue(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        reply = fake_anthropic_server.Reply(status, json.dumps(body).encode(), headers or {})
        self.fake.queue(reply)


class GeminiFake(Fake):
    rating = fake_gemini_server.RATING

    def __init__(self, key: str | None, model: str = fake_gemini_server.MODEL) -> None:
        super().__init__()
        self.fake = fake_gemini_server.FakeGemini(key=key or "", model=model)

    def _app(self) -> web.Application:
        return self.fake.app()

    def problems(self) -> list[str]:
        return self.fake.problems

    def models(self) -> list[str]:  # the model is in the path: /v1beta/models/{model}:...
        return [path.split("/models/", 1)[1].split(":", 1)[0] for path in self.traffic.paths]

    def bodies(self) -> list[Any]:
        return list(self.fake.requests)

    def queue(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.fake.reply(status, body, headers)


@dataclass(frozen=True)
class Wire:
    """How kullbatch finds one provider's server, and that provider's fake."""

    provider: str
    key_var: str
    url_var: str
    url_path: str  # what the base URL variable carries beyond the host
    endpoint: str  # the path every rating request goes to
    fake: Callable[[str | None], Fake]
    bad_key_says: str  # what the fake answers a wrong key with


WIRES = {
    wire.provider: wire
    for wire in (
        Wire(
            "openai",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "/v1",
            "/v1/chat/completions",
            lambda key: ChatFake(key, flavour="openai", prefix="/v1"),
            "Incorrect API key provided",
        ),
        Wire(
            "anthropic",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "",
            "/v1/messages",
            AnthropicFake,
            "invalid x-api-key",
        ),
        Wire(
            "gemini",
            "GEMINI_API_KEY",
            "GOOGLE_GEMINI_BASE_URL",
            "",
            f"/v1beta/models/{fake_gemini_server.MODEL}:generateContent",
            GeminiFake,
            "API key not valid",
        ),
        Wire(
            "grok",
            "XAI_API_KEY",
            "XAI_BASE_URL",
            "/v1",
            "/v1/chat/completions",
            lambda key: ChatFake(key, flavour="xai", prefix="/v1"),
            "Incorrect API key provided",  # with HTTP 400, not 401
        ),
        Wire(
            "groq",
            "GROQ_API_KEY",
            "GROQ_BASE_URL",
            "",
            "/openai/v1/chat/completions",
            lambda key: ChatFake(
                key,
                flavour="groq",
                prefix="/openai/v1",
                max_base64_request=MAX_BASE64_REQUEST_BYTES,
                roomy_limits={"x-ratelimit-limit-tokens": "3000000"},
            ),
            "Incorrect API key provided",
        ),
        Wire(
            "openai-compatible",
            "OPENAI_COMPATIBLE_API_KEY",
            "OPENAI_COMPATIBLE_BASE_URL",
            "/v1",
            "/v1/chat/completions",
            lambda key: ChatFake(key, flavour="ollama", prefix="/v1"),
            "Incorrect API key provided",
        ),
    )
}
ALL_PROVIDERS = list(WIRES)

# Every variable that could point kullbatch at a real provider from the developer's shell.
PROVIDER_VARS = sorted(
    {var for spec in PROVIDERS.values() for var in (*spec.key_vars, *spec.base_url_vars)}
    | {"KULLBATCH_PROVIDER", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"}
)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private database; no provider key or URL from the shell; the admin log let go after."""
    for var in PROVIDER_VARS:
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "k.db"
    monkeypatch.setenv("KULLBATCH_DB", str(path))
    yield path
    admin = logging.getLogger("kullbatch.admin")
    for handler in list(admin.handlers):  # the CLI leaves its file (and -v stderr) handler on
        admin.removeHandler(handler)
        handler.close()


Serve = Callable[..., Fake]


@pytest.fixture
def serve(db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """Start a provider's fake in a thread and point kullbatch's environment at it."""
    with contextlib.ExitStack() as servers:

        def start(provider: str, *, fake_key: str | None = KEY, env_key: str | None = KEY) -> Fake:
            wire = WIRES[provider]
            fake = wire.fake(fake_key)
            server = servers.enter_context(AppThread(fake.app()))
            monkeypatch.setenv(wire.url_var, server.url + wire.url_path)
            if env_key is not None:
                monkeypatch.setenv(wire.key_var, env_key)
            return fake

        yield start


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def process(*args: str) -> tuple[int, dict[str, Any]]:
    """`process examples/shoot.json ARGS --json --quiet` -> (exit code, status object)."""
    result = invoke("process", str(SHOOT), *args, "--max-retry-time", "3s", "--json", "--quiet")
    job_id, document = result.stdout.split("\n", 1)
    status = json.loads(document)
    assert status["jobId"] == job_id.strip(), result.stderr
    return result.exit_code, status


def exported(job_id: str) -> list[dict[str, Any]]:
    result = invoke("results", job_id, "--format", "json")
    assert result.exit_code == 0, result.stderr
    results: list[dict[str, Any]] = json.loads(result.stdout)["results"]
    return results


# --- every provider, end to end --------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_every_provider_rates_the_whole_example_shoot_through_its_wire_format(serve, provider):
    """19 photos: a probe then 18 at once, every request passes the fake's checks, exit 0."""
    keyless = provider == "openai-compatible"  # Ollama's case: no key, no Authorization header
    fake = serve(provider, fake_key=None if keyless else KEY, env_key=None if keyless else KEY)

    code, status = process("--provider", provider)

    assert code == 0, status
    assert status["status"] == "completed" and status["providerId"] == provider
    assert status["processedImages"] == status["totalImages"] == len(IMAGE_IDS) == 19
    assert status["failedImages"] == 0 and status["error"] is None
    assert fake.traffic.paths == [WIRES[provider].endpoint] * 19
    assert fake.traffic.probe_went_alone()
    assert fake.problems() == []
    assert set(fake.models()) == {PROVIDERS[provider].default_model}
    results = exported(status["jobId"])
    assert [r["imageId"] for r in results] == IMAGE_IDS
    assert all({f: r[f] for f in RATING_FIELDS} == fake.rating for r in results)


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_a_rubric_prompt_and_the_issues_schema_reach_every_provider(serve, provider):
    """`--rubric wedding`: each request carries the wedding scale and asks for `issues`."""
    keyless = provider == "openai-compatible"
    fake = serve(provider, fake_key=None if keyless else KEY, env_key=None if keyless else KEY)

    code, status = process("--provider", provider, "--rubric", "wedding")

    assert code == 0, status
    assert fake.problems() == []
    wedding = json.dumps(load_rubric("wedding", {}).prompt())[1:-1]  # as escaped in a body
    bodies = [json.dumps(body) for body in fake.bodies()]
    assert len(bodies) == 19
    assert all(wedding in body and '"eyes-closed"' in body for body in bodies)
    assert {tuple(r["issues"]) for r in exported(status["jobId"])} == {tuple(fake.rating["issues"])}


@pytest.mark.parametrize(
    ("provider_id", "provider", "model"),
    [
        ("openai-gpt-5", "openai", "gpt-5"),
        ("anthropic-claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("google-gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("xai-grok-4", "grok", "grok-4"),
    ],
)
def test_a_spec_style_provider_id_reaches_the_provider_with_its_model(
    serve, provider_id, provider, model
):
    """`--provider openai-gpt-5` is openai with model gpt-5, on the wire and in the job."""
    fake = serve(provider)

    code, status = process("--provider", provider_id)

    assert code == 0 and status["providerId"] == provider
    assert fake.models() == [model] * 19 and fake.problems() == []


# --- a fatal first answer costs one request --------------------------------------------------


@dataclass(frozen=True)
class FatalCase:
    provider: str
    says: str  # in the job's error
    answer: tuple[int, dict[str, Any]] | None = None  # queued; None = the env key is wrong

    def __str__(self) -> str:
        return f"{self.provider}-{'wrong-key' if self.answer is None else self.answer[0]}"


FATAL_CASES = [
    *(FatalCase(provider, WIRES[provider].bad_key_says) for provider in ALL_PROVIDERS),
    FatalCase(
        "openai",
        "You exceeded your current quota",
        (
            429,
            openai_error(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
        ),
    ),
    FatalCase(
        "anthropic",
        "credit balance is too low",
        (
            400,
            json.loads(fake_anthropic_server.real_errors()["credit"].body),
        ),
    ),
    FatalCase(
        "gemini",
        "limit: 0",
        (429, fake_gemini_server.quota_exceeded(quota_value="0")),
    ),
    FatalCase(
        "grok",
        "has no credits",
        (
            403,
            xai_error(
                "The caller does not have permission to execute the specified operation",
                "Your newly created team doesn't have any credits yet. "
                "Your team has no credits or licenses.",
            ),
        ),
    ),
    FatalCase(
        "groq",
        "does not exist",
        (
            404,
            openai_error(
                "The model `meta-llama/llama-4-scout-17b-16e-instruct` does not exist or you "
                "do not have access to it.",
                code="model_not_found",
            ),
        ),
    ),
    FatalCase(
        "openai-compatible",
        "try pulling it first",
        (404, openai_error('model "qwen3-vl:8b" not found, try pulling it first', "api_error")),
    ),
]


@pytest.mark.parametrize("case", FATAL_CASES, ids=str)
def test_a_fatal_first_answer_stops_the_job_after_one_request(serve, case):
    """Bad key, no credit, unknown model: exit 3, only the probe was sent, the error says why."""
    if case.answer is None:
        fake = serve(case.provider, env_key=WRONG_KEY)
    else:
        fake = serve(case.provider)
        fake.queue(*case.answer)

    code, status = process("--provider", case.provider)

    assert code == 3, status
    assert status["status"] == "failed" and status["processedImages"] == 0
    assert len(fake.traffic.paths) == 1
    assert status["error"].startswith(f"{case.provider} HTTP ")
    assert case.says in status["error"]
    assert WRONG_KEY not in status["error"]


BASE_URL_VARS = [(spec.name, var) for spec in PROVIDERS.values() for var in spec.base_url_vars]
UNUSABLE_URLS = ["127.0.0.1:9/v1", "user:hunter2@localhost:11434/v1", "ftp://files.test/v1"]


@pytest.mark.parametrize(("provider", "var"), BASE_URL_VARS)
@pytest.mark.parametrize("url", UNUSABLE_URLS)
def test_a_base_url_that_cannot_work_stops_the_job_at_once_naming_the_variable(
    db, monkeypatch, provider, var, url
):
    """No http(s) scheme or no host: exit 3 before any request, the password left out."""
    monkeypatch.setenv(PROVIDERS[provider].key_vars[0], KEY)
    monkeypatch.setenv(var, url)

    code, status = process("--provider", provider)

    assert code == 3, status
    assert status["status"] == "failed" and status["processedImages"] == 0
    assert var in status["error"] and "hunter2" not in status["error"]
    assert url.split("@")[-1] in status["error"]


# --- the API key never leaks -----------------------------------------------------------------


def leaky_answers(provider: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Error bodies in each provider's shape that quote the caller's key back to it."""
    if provider == "anthropic":

        def body(kind: str, message: str) -> dict[str, Any]:
            return {"type": "error", "error": {"type": kind, "message": message}}

        return {
            "rate_limited": (429, body("rate_limit_error", f"Rate limit exceeded for {LEAK}")),
            "server_error": (500, body("api_error", f"Internal server error ({LEAK})")),
            "bad_image": (400, body("invalid_request_error", f"Could not process image: {LEAK}")),
            "fatal": (401, body("authentication_error", f"invalid x-api-key: {LEAK}")),
        }
    if provider == "gemini":
        error = fake_gemini_server.google_error
        return {
            "rate_limited": (429, error(429, "RESOURCE_EXHAUSTED", f"Quota exceeded for {LEAK}")),
            "server_error": (500, error(500, "INTERNAL", f"Internal error for {LEAK}")),
            "bad_image": (
                400,
                error(400, "INVALID_ARGUMENT", f"Unable to process input image {LEAK}"),
            ),
            "fatal": (403, fake_gemini_server.consumer_suspended(LEAK)),
        }
    if provider == "grok":
        return {
            "rate_limited": (429, xai_error("Too many requests", f"Rate limit for {LEAK}")),
            "server_error": (500, xai_error("Internal error", f"Internal error for {LEAK}")),
            "bad_image": (400, xai_error(XAI_INVALID, f"Unsupported image sent with {LEAK}")),
            "fatal": (400, xai_error(XAI_INVALID, f"Incorrect API key provided: {LEAK}.")),
        }
    return {
        "rate_limited": (
            429,
            openai_error(f"Rate limit reached for {LEAK}", "requests", "rate_limit_exceeded"),
        ),
        "server_error": (500, openai_error(f"The server had an error ({LEAK})", "server_error")),
        "bad_image": (400, openai_error(f"Invalid image sent with {LEAK}", code="invalid_image")),
        "fatal": (
            401,
            openai_error(f"Incorrect API key provided: {LEAK}.", code="invalid_api_key"),
        ),
    }


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_the_api_key_never_reaches_the_db_the_logs_the_exports_or_the_screen(
    serve, db, tmp_path, provider
):
    """Error bodies that echo the key (429, 500, bad image, fatal): it is scrubbed everywhere."""
    fake = serve(provider, fake_key=LEAK, env_key=LEAK)
    answers = leaky_answers(provider)
    fake.queue(*answers["rate_limited"], QUICK_RETRY)
    fake.queue(*answers["server_error"], QUICK_RETRY)
    fake.queue(*answers["bad_image"])
    shown: list[str] = []

    def run(*args: str) -> Any:
        result = invoke(*args)
        shown.extend((result.stdout, result.stderr))
        return result

    first = run(
        "process", str(SHOOT), "--provider", provider, "-v", "--json", "--max-retry-time", "3s"
    )
    assert first.exit_code == 1, first.stderr
    retried = json.loads(first.stdout)
    assert retried["processedImages"] == len(IMAGE_IDS) - 1 and retried["failedImages"] == 1
    assert len(fake.traffic.paths) == 21  # 19, the 429's retry, the 500's retry
    fake.queue(*answers["fatal"])
    second = run(
        "process", str(SHOOT), "--provider", provider, "-v", "--json", "--max-retry-time", "3s"
    )
    assert second.exit_code == 3, second.stderr
    stopped = json.loads(second.stdout)
    assert stopped["status"] == "failed" and len(fake.traffic.paths) == 22

    for job in (retried["jobId"], stopped["jobId"]):
        for fmt in ("json", "jsonl", "csv"):
            assert run("results", job, "--format", fmt).exit_code == 0
        run("status", job)
        run("status", job, "--json")
    run("results", retried["jobId"], "--format", "xmp", "--output", str(tmp_path / "xmp"))
    run("jobs")
    run("jobs", "--json")

    # the key is nowhere: not on screen, not in any file kullbatch wrote
    assert [text for text in shown if LEAK in text] == []
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert db in written and admin_log_path(db) in written
    assert [path.name for path in written if LEAK.encode() in path.read_bytes()] == []
    # ... although the messages that quoted it did travel there, scrubbed
    log = admin_log_path(db).read_text(encoding="utf-8")
    assert log.count("[redacted]") >= 4  # 429 retry, 500 retry, the bad image, the fatal stop
    assert "[redacted]" in first.stderr and "[redacted]" in second.stderr
    assert "[redacted]" in stopped["error"]
    failed = [r for r in exported(retried["jobId"]) if "error" in r]
    assert len(failed) == 1 and "[redacted]" in failed[0]["error"]
