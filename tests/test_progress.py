"""The terminal progress display: live bar, plain lines off a terminal, the final summary."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from kullbatch.cli import progress
from kullbatch.cli.progress import ProgressDisplay, format_duration
from kullbatch.cli.tables import render_jobs
from kullbatch.models import EventKind, JobState, JobStatus, ProgressEvent, TokenUsage
from kullbatch.run.events import eta_seconds

JOB = "batch_1700000000000_abc123"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(
    kind: EventKind, rated: int = 0, failed: int = 0, retrying: int = 0, **extra: object
) -> ProgressEvent:
    return ProgressEvent(kind, JOB, 100, rated, failed, retrying, **extra)  # type: ignore[arg-type]


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=True), out


def plain(out: io.StringIO) -> str:
    return ANSI.sub("", out.getvalue())


def frame(display: ProgressDisplay, width: int = 120) -> str:
    """The display's current frame as plain text."""
    console = Console(file=io.StringIO(), width=width, force_terminal=True)
    console.print(display.render())
    assert isinstance(console.file, io.StringIO)
    return ANSI.sub("", console.file.getvalue())


def status(
    state: JobState = JobState.COMPLETED, rated: int = 98, failed: int = 2, error: str | None = None
) -> JobStatus:
    return JobStatus(
        jobId=JOB,
        shootId="shoot-1",
        providerId="openai",
        mode="fast",
        status=state,
        totalImages=100,
        processedImages=rated,
        failedImages=failed,
        progress=(rated + failed) / 100,
        eta=None,
        providerJobId=None,
        error=error,
        createdAt="2025-01-01T00:00:00Z",
        startedAt="2025-01-01T00:00:01Z",
        completedAt=None,
    )


def summary_text(
    display: ProgressDisplay,
    job: JobStatus,
    elapsed: float = 40.0,
    env_vars: tuple[str, ...] = (),
) -> str:
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    console.print(display.summary(job, elapsed, env_vars=env_vars))
    assert isinstance(console.file, io.StringIO)
    return ANSI.sub("", console.file.getvalue())


# --- pure helpers -----------------------------------------------------------------------------


def test_eta_is_unknown_until_an_image_is_done() -> None:
    """No image done means no pace to extrapolate from."""
    assert eta_seconds(0, 100, 30.0) is None


def test_eta_extrapolates_the_average_pace() -> None:
    """25 of 100 in 10 s leaves 75 images at 0.4 s each."""
    assert eta_seconds(25, 100, 10.0) == 30
    assert eta_seconds(3, 10, 1.0) == 3  # 2.33 s rounds up: never promise too early
    assert eta_seconds(100, 100, 10.0) == 0


def test_durations_read_like_a_person_would_write_them() -> None:
    """Seconds, then minutes and seconds, then hours and minutes."""
    assert format_duration(4.2) == "5 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7440) == "2 h 04 min"


# --- live view --------------------------------------------------------------------------------


def test_live_bar_shows_counts_speed_eta_retrying_and_failed() -> None:
    """After 10 s with 48 rated and 2 failed: 50/100, 5.0 img/s, ETA 10 s."""
    console, out = terminal()
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock)
    display.start()
    display.handle(event(EventKind.STARTED))
    clock.now += 10
    display.handle(event(EventKind.RATED, rated=48, failed=2, retrying=4))
    display.stop()
    text = frame(display)
    assert "openai" in text
    assert "50/100" in text
    assert "5.0 img/s" in text
    assert "ETA 10 s" in text
    assert "retrying: 4" in text
    assert "failed: 2" in text
    assert "retrying: 4  failed: 2" in plain(out)  # stop() leaves the last frame on screen


def test_live_bar_has_no_notes_line_while_all_is_well() -> None:
    """No retries, failures or rate-limit waits: one line, no zero counters."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    display.handle(event(EventKind.RATED, rated=3))
    text = frame(display)
    assert text.count("\n") == 1
    assert "retrying" not in text
    assert "failed" not in text


def test_every_figure_fits_an_80_column_terminal() -> None:
    """Large counts on a narrow terminal shrink the bar, never the figures."""
    clock = FakeClock()
    display = ProgressDisplay(10_000, JOB, "openai-compatible", terminal()[0], get_time=clock)
    clock.now += 200
    display.handle(ProgressEvent(EventKind.RATED, JOB, 10_000, 5234, 12, 345))
    display.handle(ProgressEvent(EventKind.GATE, JOB, 10_000, 5234, 12, 345, wait=34))
    lines = frame(display, width=80).splitlines()
    assert "5246/10000 26.2 img/s ETA 3 min 02 s" in lines[0]
    assert lines[1] == "retrying: 345  failed: 12  rate-limited: waiting 34 s"


def test_live_bar_says_how_long_the_rate_limit_gate_holds_sends() -> None:
    """A GATE event shows the remaining wait, which counts down and then disappears."""
    console, _ = terminal()
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock)
    display.start()
    display.handle(event(EventKind.GATE, rated=10, wait=4.0))
    clock.now += 1
    assert "rate-limited: waiting 3 s" in frame(display)
    clock.now += 5
    assert "rate-limited" not in frame(display)
    display.stop()


def test_a_resumed_job_counts_only_this_runs_images_for_speed_and_eta() -> None:
    """60 images rated before the resume do not make the first seconds look fast."""
    console, _ = terminal()
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock)
    display.start()
    display.handle(event(EventKind.STARTED, rated=60))
    clock.now += 10
    display.handle(event(EventKind.RATED, rated=80))
    display.stop()
    text = frame(display)
    assert "80/100" in text
    assert "2.0 img/s" in text
    assert "ETA 10 s" in text


def test_live_mode_leaves_stdout_alone_for_json_and_quiet_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Printing the job id on stdout during the live bar reaches stdout, not the console."""
    console, out = terminal()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=FakeClock())
    with display:
        print("batch_on_stdout")
    assert "batch_on_stdout" in capsys.readouterr().out
    assert "batch_on_stdout" not in out.getvalue()


def test_ten_thousand_events_leave_the_last_counts() -> None:
    """handle() copies counters: after 10,000 events the task shows 10,000 done."""
    console, _ = terminal()
    display = ProgressDisplay(10_000, JOB, "openai", console, get_time=FakeClock(), live=False)
    display.start()
    for n in range(1, 10_001):
        display.handle(ProgressEvent(EventKind.RATED, JOB, 10_000, n, 0, 0))
    assert display.task.completed == 10_000


# --- plain lines off a terminal ---------------------------------------------------------------


def test_plain_mode_prints_a_line_only_after_the_interval() -> None:
    """Events within the interval print nothing; the first one after it prints one line."""
    out = io.StringIO()
    console = Console(file=out, width=80)
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock, live=False, interval=5)
    display.start()
    display.handle(event(EventKind.STARTED))
    clock.now += 4.9
    display.handle(event(EventKind.RATED, rated=10, retrying=4))
    assert out.getvalue() == ""
    clock.now += 0.1
    display.handle(event(EventKind.RATED, rated=49, failed=1, retrying=4))
    assert out.getvalue() == (
        f"[kullbatch] {JOB} 49/100 rated, 1 failed, 4 retrying, 10.0 img/s, ETA 5 s\n"
    )
    clock.now += 1
    display.handle(event(EventKind.RATED, rated=55, failed=1))
    assert out.getvalue().count("\n") == 1


def test_plain_mode_prints_one_final_line_at_stop_without_escape_codes() -> None:
    """stop() prints the end state once, as plain text, unwrapped even on a narrow console."""
    out = io.StringIO()
    console = Console(file=out, width=40)
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock, live=False)
    display.start()
    clock.now += 20
    display.handle(event(EventKind.ENDED, rated=98, failed=2))
    display.stop()
    display.stop()
    assert out.getvalue() == (
        f"[kullbatch] {JOB} 98/100 rated, 2 failed, 0 retrying, 5.0 img/s, ETA 0 s\n"
    )


def test_plain_mode_prints_the_final_line_at_stop_even_before_the_interval() -> None:
    """A job shorter than the interval still ends with one line."""
    out = io.StringIO()
    clock = FakeClock()
    display = ProgressDisplay(
        10, JOB, "local", Console(file=out, width=80), get_time=clock, live=False
    )
    with display:
        display.start()  # a second start changes nothing
        clock.now += 2
        display.handle(ProgressEvent(EventKind.ENDED, JOB, 10, 10, 0, 0))
    display.stop()  # and neither does a second stop
    assert (
        out.getvalue()
        == f"[kullbatch] {JOB} 10/10 rated, 0 failed, 0 retrying, 5.0 img/s, ETA 0 s\n"
    )


def test_plain_line_mentions_a_rate_limit_wait() -> None:
    """Off a terminal the gate's wait is part of the line too."""
    console = Console(file=io.StringIO(), width=200)
    clock = FakeClock()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=clock, live=False)
    display.start()
    display.handle(event(EventKind.GATE, wait=30.0))
    assert display.line().endswith("ETA --, rate-limited: waiting 30 s")


def test_the_first_failures_are_kept_for_the_summary_and_no_more() -> None:
    """Up to five failure messages are remembered, whatever the number of failures."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock(), live=False)
    for n in range(1, 8):
        display.handle(
            event(EventKind.FAILED, failed=n, image_id=f"img{n}", error="Image too large")
        )
    text = summary_text(display, status(rated=93, failed=7))
    assert "img5: Image too large" in text
    assert "img6" not in text


# --- summary ----------------------------------------------------------------------------------


def test_summary_shows_counts_time_speed_job_id_and_the_results_command() -> None:
    """The table names the job and tells the user how to get the ratings."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    text = summary_text(display, status(), elapsed=40.0)
    assert JOB in text
    assert "98 of 100" in text
    assert "2.5 img/s" in text
    assert "40 s" in text
    assert f"kullbatch results {JOB} --format csv --output ratings.csv" in text
    assert "resume" not in text


def test_summary_shows_the_jobs_tokens_and_cost_or_why_it_has_none() -> None:
    """The bill after the run: tokens and dollars, or the note of a model without a price."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    usage = TokenUsage(inputTokens=412000, outputTokens=61000)
    priced = status().model_copy(update={"usage": usage, "costUsd": 0.0913})
    assert "412,000 in, 61,000 out tokens: $0.0913" in summary_text(display, priced)
    unpriced = priced.model_copy(update={"costUsd": None, "costNote": "no price for x"})
    assert "cost unknown, no price for x" in summary_text(display, unpriced)


def test_summary_of_an_interrupted_job_offers_resume() -> None:
    """Ctrl-C leaves work to finish: the summary says how."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    text = summary_text(display, status(JobState.INTERRUPTED, rated=40, failed=0))
    assert f"kullbatch resume {JOB}" in text


def test_summary_of_a_fatal_job_shows_the_error() -> None:
    """A job stopped by a bad key says why."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    text = summary_text(display, status(JobState.FAILED, 0, 0, error="OPENAI_API_KEY rejected"))
    assert "OPENAI_API_KEY rejected" in text
    assert "--format xmp" not in text  # nothing rated, nothing to write


def summary_row(text: str, label: str) -> str:
    """The summary table's line whose label cell is `label` (the value, stripped of rules)."""
    [line] = [line for line in text.splitlines() if re.match(rf"\W*{label}\b", line)]
    return line.strip("│ ").split("│")[-1].strip()


@pytest.mark.parametrize(
    ("error", "env_vars", "names"),
    [
        (
            "openai: 401 Incorrect API key provided [check OPENAI_API_KEY]",
            ("OPENAI_API_KEY",),
            "OPENAI_API_KEY",
        ),
        ("openai: set OPENAI_API_KEY in the environment", ("OPENAI_API_KEY",), "OPENAI_API_KEY"),
        (
            "gemini: set GEMINI_API_KEY or GOOGLE_API_KEY in the environment",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            "GEMINI_API_KEY or GOOGLE_API_KEY",
        ),
    ],
)
def test_a_fatal_job_with_nothing_rated_offers_the_variable_to_set_and_resume(
    error: str, env_vars: tuple[str, ...], names: str
) -> None:
    """No `results` for an empty job: the summary says which variable to set (the fatal
    error's `env_vars`), then resume."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    text = summary_text(display, status(JobState.FAILED, 0, 0, error=error), env_vars=env_vars)
    assert "kullbatch results" not in text
    assert summary_row(text, "Fix") == f"set {names} in the environment"
    assert summary_row(text, "Resume") == f"kullbatch resume {JOB}"
    failed = status(JobState.FAILED, 0, 0, error=error)
    assert [label for label, _ in progress._next_steps(failed, env_vars=env_vars)] == [
        "Fix",
        "Resume",
    ]


@pytest.mark.parametrize(
    "error",
    [
        "openai: model 'gpt-9' does not exist",
        "gemini: 400 API key not valid [API_KEY_INVALID]",
        "openai: set OPENAI_API_KEY in the environment",  # words are not read back
        "check your settings",
        None,
    ],
)
def test_a_fatal_job_naming_no_variable_offers_a_generic_fix_and_resume(error: str | None) -> None:
    """Without variables carried by the error, the message's words are not taken for one."""
    steps = dict(progress._next_steps(status(JobState.FAILED, 0, 0, error=error)))
    assert steps == {
        "Fix": "the problem that stopped the job",
        "Resume": f"kullbatch resume {JOB}",
    }


def test_a_fatal_job_that_rated_some_images_offers_results_and_resume() -> None:
    """Ratings already paid for are offered, and resume finishes the rest after the fix."""
    steps = dict(
        progress._next_steps(
            status(JobState.FAILED, 40, 0, error="anthropic: credit balance is too low")
        )
    )
    assert set(steps) == {"Results", "Sidecars", "Fix", "Resume"}
    assert steps["Results"].startswith(f"kullbatch results {JOB}")
    assert steps["Resume"] == f"kullbatch resume {JOB}"


def test_a_completed_job_whose_images_all_failed_still_offers_results() -> None:
    """The results list each image's error, so they are worth reading even with none rated."""
    steps = dict(progress._next_steps(status(JobState.COMPLETED, 0, 100)))
    assert set(steps) == {"Results"}


def test_summary_of_an_economy_job_offers_to_come_back_for_it() -> None:
    """A submitted batch is still running at the provider: resume collects it later."""
    display = ProgressDisplay(100, JOB, "openai", terminal()[0], get_time=FakeClock())
    text = summary_text(display, status(JobState.SUBMITTED, 0, 0))
    assert f"kullbatch resume {JOB}" in text and f"kullbatch status {JOB}" in text


def test_print_summary_prints_on_the_display_console() -> None:
    """print_summary writes the same table to the console given at construction."""
    console, out = terminal()
    display = ProgressDisplay(100, JOB, "openai", console, get_time=FakeClock())
    display.print_summary(status(), 10.0)
    assert f"kullbatch results {JOB}" in plain(out)


# --- kullbatch jobs ---------------------------------------------------------------------------

SHOOT = "wedding-2025-smith-jones-ceremony"
JOB_ROWS = [
    (JobState.COMPLETED, 9998, 10000, 2),
    (JobState.INTERRUPTED, 40, 100, 0),
    (JobState.PROCESSING, 523, 1000, 12),
    (JobState.CANCELLED, 7, 250, 1),
    (JobState.FAILED, 0, 100000, 0),
    (JobState.SUBMITTED, 0, 3, 0),
]


def job_statuses() -> list[JobStatus]:
    """One job per state, each with its own 26-character id and counts."""
    return [
        status(state, rated, failed).model_copy(
            update={
                "jobId": f"batch_176435000000{index}_ab12cd",
                "shootId": SHOOT,
                "providerId": "openai-compatible",
                "totalImages": total,
                "createdAt": "2025-11-28T17:33:20.123Z",
            }
        )
        for index, (state, rated, total, failed) in enumerate(JOB_ROWS)
    ]


def jobs_text(console: Console) -> str:
    render_jobs(job_statuses(), console)
    assert isinstance(console.file, io.StringIO)
    return ANSI.sub("", console.file.getvalue())


def assert_every_job_whole(text: str, width: int | None = None) -> None:
    """Each job's line holds its full id, full status word, rated/total and failed count."""
    lines = text.splitlines()
    for job in job_statuses():
        [line] = [line for line in lines if job.jobId in line]
        words = line.split()
        assert job.status.value in words, line
        assert f"{job.processedImages}/{job.totalImages}" in words, line
        assert str(job.failedImages) in words, line
    if width is not None:
        assert all(len(line) <= width for line in lines), text


@pytest.mark.parametrize("width", [80, 60])
def test_jobs_keep_id_status_and_counts_whole_in_a_narrow_terminal(width: int) -> None:
    """At 80 and 60 columns no job id, status word or count is cut to `compl…`."""
    text = jobs_text(Console(file=io.StringIO(), width=width, force_terminal=True))
    assert_every_job_whole(text, width)
    assert "compl…" not in text


def test_jobs_in_a_pipe_fit_80_columns_without_escape_codes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Piped (not a terminal, no COLUMNS), the table fits 80 columns, whole and plain."""
    monkeypatch.delenv("COLUMNS", raising=False)
    console = Console(file=io.StringIO())
    assert not console.is_terminal
    render_jobs(job_statuses(), console)
    assert isinstance(console.file, io.StringIO)
    text = console.file.getvalue()
    assert "\x1b" not in text
    assert_every_job_whole(text, 80)


def test_jobs_on_a_wide_terminal_show_shoot_provider_and_created_time() -> None:
    """With room, nothing is dropped: shoot, provider and the created minute are shown."""
    text = jobs_text(Console(file=io.StringIO(), width=140, force_terminal=True))
    assert_every_job_whole(text, 140)
    assert SHOOT in text
    assert "openai-compatible" in text
    assert "2025-11-28 17:33" in text


def test_jobs_drop_created_time_then_provider_before_shortening_the_shoot() -> None:
    """At 100 columns the shoot id is whole but provider and created time are gone."""
    text = jobs_text(Console(file=io.StringIO(), width=100, force_terminal=True))
    assert_every_job_whole(text, 100)
    assert SHOOT in text
    assert "openai-compatible" not in text
    assert "17:33" not in text


def test_jobs_at_80_columns_shorten_the_shoot_id_with_an_ellipsis() -> None:
    """The shoot id gives way first among what remains, ending in `…` to say it was cut."""
    text = jobs_text(Console(file=io.StringIO(), width=80, force_terminal=True))
    assert SHOOT not in text
    assert re.search(r"wedding-2025-\S*…", text), text


def test_jobs_at_60_columns_drop_the_shoot_column() -> None:
    """Too narrow even for a shortened shoot id, the table keeps only the four figures."""
    text = jobs_text(Console(file=io.StringIO(), width=60, force_terminal=True))
    assert "wedd" not in text
    assert text.splitlines()[0].split() == ["job", "status", "rated", "failed"]


def test_jobs_narrower_than_the_figures_print_one_unbroken_line_each() -> None:
    """Below the four figures' width, each job is one line the terminal may wrap, never cut."""
    text = jobs_text(Console(file=io.StringIO(), width=40, force_terminal=True))
    assert_every_job_whole(text)
    assert len(text.splitlines()) == len(JOB_ROWS)
    assert "523/1000 rated  12 failed" in text


def test_no_jobs_yet_says_how_to_start_one() -> None:
    """An empty store prints a hint instead of an empty table."""
    console = Console(file=io.StringIO(), width=80)
    render_jobs([], console)
    assert isinstance(console.file, io.StringIO)
    assert "kullbatch process SOURCE" in console.file.getvalue()


def test_module_exports_are_what_all_lists() -> None:
    """Every name in __all__ exists."""
    assert all(hasattr(progress, name) for name in progress.__all__)
