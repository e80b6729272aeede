"""Rubrics per shoot type: package data files, user overrides, and the prompt they make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kullbatch.errors import UsageError
from kullbatch.manifest import manifest_from_document
from kullbatch.models import ISSUES
from kullbatch.rubrics.loader import RubricError, load_rubric, parse_rubric, rubric_names
from kullbatch.service import jobs

SHIPPED = ["event", "general", "landscape", "portrait", "product", "sports", "wedding"]
SCALE = {"stars": {str(n): f"meaning of {n}" for n in range(1, 6)}}


def test_the_package_ships_the_seven_shoot_types(tmp_path: Path) -> None:
    """Every shipped rubric is listed and loads with five star meanings."""
    env = {"KULLBATCH_RUBRICS": str(tmp_path / "none")}
    assert rubric_names(env) == SHIPPED
    for name in SHIPPED:
        rubric = load_rubric(name, env)
        assert rubric.instructions.strip() and all(rubric.stars) and rubric.summary


def test_a_rubric_prompt_has_its_scale_in_order_and_the_issues_vocabulary() -> None:
    """5 stars first, each meaning on its line, then the answer's fields and all eight issues."""
    prompt = load_rubric("sports", {}).prompt()
    lines = [line for line in prompt.splitlines() if " stars: " in line]
    assert [line.split(" ", 1)[0] for line in lines] == ["5", "4", "3", "2", "1"]
    assert "decisive moment" in prompt and "every sports shoot" in prompt
    assert all(issue in prompt for issue in ISSUES)


def test_what_matters_differs_by_shoot_type() -> None:
    """Eyes for people, the moment for events and sports, horizon for landscapes, edges for products."""
    assert "eyes" in load_rubric("wedding", {}).instructions
    assert "eye" in load_rubric("portrait", {}).instructions
    assert "decisive moment" in load_rubric("event", {}).instructions
    assert "horizon" in load_rubric("landscape", {}).instructions
    assert "edges" in load_rubric("product", {}).instructions


def test_a_user_file_overrides_a_shipped_rubric_and_adds_new_ones(tmp_path: Path) -> None:
    """The user's wedding.toml wins over the package's; a JSON file adds `newborn`."""
    (tmp_path / "wedding.toml").write_text(
        'instructions = "Our studio\'s wedding rules."\n[stars]\n'
        + "".join(f'{n} = "studio {n}"\n' for n in range(1, 6)),
        encoding="utf-8",
    )
    (tmp_path / "newborn.json").write_text(
        json.dumps({"instructions": "Babies asleep.", **SCALE}), encoding="utf-8"
    )
    env = {"KULLBATCH_RUBRICS": str(tmp_path)}
    wedding = load_rubric("wedding", env)
    assert wedding.instructions == "Our studio's wedding rules."
    assert wedding.stars[4] == "studio 5" and wedding.source.endswith("wedding.toml")
    assert load_rubric("newborn", env).instructions == "Babies asleep."
    assert rubric_names(env) == sorted([*SHIPPED, "newborn"])


def test_a_rubric_file_path_is_read_directly(tmp_path: Path) -> None:
    """`--rubric ./mine.toml` names its rubric after the file."""
    path = tmp_path / "mine.toml"
    path.write_text(
        'instructions = "Mine."\n[stars]\n' + "".join(f'{n} = "s{n}"\n' for n in range(1, 6))
    )
    rubric = load_rubric(str(path), {})
    assert (rubric.name, rubric.stars) == ("mine", ("s1", "s2", "s3", "s4", "s5"))
    with pytest.raises(RubricError, match="no such file"):
        load_rubric(str(tmp_path / "gone.toml"), {})


@pytest.mark.parametrize(
    ("text", "source", "message"),
    [
        ("instructions = ", "a.toml", "not a rubric file"),
        ("[1, 2]", "a.json", "a table of"),
        (json.dumps({"instructions": " ", **SCALE}), "a.json", "instructions"),
        (json.dumps({"instructions": "x", "stars": {"1": "a"}}), "a.json", "each of 1, 2, 3"),
        (
            json.dumps({"instructions": "x", "stars": {**SCALE["stars"], "3": " "}}),
            "a.json",
            "non-empty",
        ),
    ],
)
def test_a_broken_rubric_file_is_refused_with_its_name(
    text: str, source: str, message: str
) -> None:
    """Each field is checked and the message names the file."""
    with pytest.raises(RubricError, match=message) as caught:
        parse_rubric(text, "a", source)
    assert str(caught.value).startswith(source)


def test_an_unknown_rubric_lists_the_choices() -> None:
    """A typo says which names exist."""
    with pytest.raises(RubricError, match="unknown rubric; choose one of event, general"):
        load_rubric("weding", {})


def manifest(tmp_path: Path, prompt: str | None = None) -> object:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    document = {"shootId": "s", "images": [{"id": "a", "filename": "a.jpg", "path": "a.jpg"}]}
    if prompt:
        document["prompt"] = prompt
    return manifest_from_document(document, base=tmp_path)


async def test_a_job_stores_the_rubric_prompt_so_resume_reuses_it(tmp_path: Path) -> None:
    """--rubric wins over the manifest's prompt; --prompt is added as a note; the name is kept."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        settings = jobs.ProcessSettings(rubric="portrait", prompt="Client wants smiles.")
        job = await service.create(manifest(tmp_path, "Rate these"), settings)
        again = await service.store.get_job(job.id)
    portrait = load_rubric("portrait", {}).prompt()
    assert again is not None and again.prompt == f"{portrait}\n\nClient wants smiles."
    assert again.options.rubric == "portrait"


async def test_without_a_rubric_or_prompt_the_general_rubric_is_sent(tmp_path: Path) -> None:
    """The general rubric is today's default; a manifest prompt still wins without --rubric."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        plain = await service.create(manifest(tmp_path), jobs.ProcessSettings())
        own = await service.create(manifest(tmp_path, "Rate these"), jobs.ProcessSettings())
    assert plain.prompt == load_rubric("general", {}).prompt()
    assert own.prompt == "Rate these"


async def test_an_unknown_rubric_is_a_usage_error_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Exit 2 material: no job is created."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        with pytest.raises(UsageError, match="unknown rubric"):
            await service.create(manifest(tmp_path), jobs.ProcessSettings(rubric="nope"))
        assert await service.statuses() == []
