"""The MTHDS CLI contract: `durapipe run PIPE --file x.mthds` (and a package folder), `durapipe
worker x.mthds`, `--inputs` inline, from a file or from stdin, compact JSON or `--with-memory`."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from durapipe.cli import app
from tests.mthds.conftest import BUNDLES, INVALID, PACKAGES
from tests.support import WorkerProcess, run_cli

JOKES = BUNDLES / "jokes.mthds"
FUNC = BUNDLES / "func.mthds"
TOPIC = {"topic": {"concept": "joke_generation.Topic", "content": {"text": "cats"}}}
JOKE = "Offline answer: Write a clever one-liner joke about cats. Be concise and witty."
runner = CliRunner()


def test_inputs_inline_from_a_file_and_from_stdin_give_the_same_compact_json(
    tmp_path: Path,
) -> None:
    inline = runner.invoke(
        app,
        ["run", "generate_joke", "--file", str(JOKES), "--local", "--inputs", json.dumps(TOPIC)],
    )
    assert inline.exit_code == 0, inline.output
    assert inline.stdout == json.dumps({"text": JOKE}, separators=(",", ":")) + "\n"
    data = tmp_path / "inputs.json"
    data.write_text(json.dumps({"topic": "cats"}))  # a bare value works as well as a stuff
    from_file = runner.invoke(
        app, ["run", "generate_joke", "--file", str(JOKES), "--local", "--inputs", str(data)]
    )
    assert from_file.stdout == inline.stdout
    piped = runner.invoke(
        app, ["run", "generate_joke", "--file", str(JOKES), "--local"], input=json.dumps(TOPIC)
    )
    assert piped.stdout == inline.stdout
    # --inputs wins over stdin, as the contract says.
    both = runner.invoke(
        app,
        ["run", "generate_joke", "--file", str(JOKES), "--local", "--inputs", json.dumps(TOPIC)],
        input='{"topic": "dogs"}',
    )
    assert both.stdout == inline.stdout


def test_with_memory_output_chains_into_the_next_method() -> None:
    first = runner.invoke(
        app,
        ["run", "generate_joke", "--file", str(JOKES), "--local", "--with-memory", "--inputs", json.dumps(TOPIC)],
    )  # fmt: skip
    envelope = json.loads(first.stdout)
    assert json.loads(envelope["main_stuff"]["json"]) == {"text": JOKE}
    root = envelope["working_memory"]["root"]
    assert root["topic"]["content"] == {"text": "cats"}
    assert root["main_stuff"]["concept"] == {"code": "Joke"}
    # A one-input method downstream binds the upstream main_stuff (the single-input shortcut).
    second = runner.invoke(
        app, ["run", "shout", "--file", str(BUNDLES / "func.mthds"), "--local"], input=first.stdout
    )
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout) == {"text": JOKE.upper()}


def test_lists_and_structures_print_as_their_concepts() -> None:
    jokes = runner.invoke(
        app, ["run", "generate_jokes_from_topics", "--file", str(JOKES), "--local"], input=""
    )
    items = json.loads(jokes.stdout)["items"]
    assert len(items) == 3 and all(set(item) == {"text"} for item in items)
    package = runner.invoke(
        app,
        ["run", "publish", "--file", str(PACKAGES / "editorial"), "--local", "--inputs", '{"topic": "tides"}'],
    )  # fmt: skip
    assert set(json.loads(package.stdout)) == {"value", "reason"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "{not json"], "--inputs is not valid JSON"),
        (
            ["--inputs", "missing.json"],
            "--inputs: 'missing.json' is neither inline JSON nor a file",
        ),
        ([], "MTHDS inputs must be a JSON object"),
    ],
)
def test_input_mistakes_are_one_sentence_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["run", "generate_joke", "--file", str(JOKES), "--local", *args], input="[1, 2]"
    )
    assert result.exit_code == 2
    # The MTHDS CLI contract's error object, on stderr; its message is one sentence.
    error = json.loads(result.stderr)
    assert error["error"] is True and error["error_domain"] == "input"
    assert error["message"].startswith(message), error
    assert result.stdout == ""


def test_an_unknown_pipe_of_a_bundle_is_named() -> None:
    result = runner.invoke(app, ["run", "tell_joke", "--file", str(JOKES), "--local"], input="")
    assert result.exit_code == 2
    assert (
        "the bundle has no pipe 'tell_joke' (did you mean 'generate_joke'?) (pipes: "
        in (json.loads(result.stderr)["message"])
    )
    # A typo gets the close name, as a YAML pipe's does.
    for typo in ("generate_jok", "joke_generation.generate_jok"):
        typed = runner.invoke(app, ["run", typo, "--file", str(JOKES), "--local"], input="")
        assert typed.exit_code == 2
        assert json.loads(typed.stderr)["message"] == (
            f"the bundle has no pipe '{typo}' (did you mean 'generate_joke'?) (pipes: "
            "batch_generate_jokes, generate_joke, generate_jokes_from_topics, generate_topics)"
        )
    # A YAML run in the same process afterwards still prints durapipe's plain sentence.
    yaml = runner.invoke(app, ["run", "nope", "--file", "missing.yaml", "--local"])
    assert yaml.stderr == "error: pipeline file 'missing.yaml' does not exist\n"


def test_validate_and_worker_refuse_a_compose_path_into_a_value_without_that_field() -> None:
    bundle = INVALID / "compose_from_no_field.mthds"
    sentence = (
        f"{bundle}:15: bundle 'd', pipe 'sheet', construct field 'score': "
        "'analysis.overall_match_score' reads nothing: 'analysis' is MatchAnalysis, a concept with "
        "no structure (a text), which has no field 'overall_match_score'"
    )
    # The worker refuses the bundle before it connects: no server is named or needed.
    for args in (["validate", str(bundle)], ["worker", str(bundle), "--address", "127.0.0.1:9"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert sentence in result.stderr and "Traceback" not in result.output, result.stderr


@pytest.fixture
def mthds_worker_process(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> Iterator[WorkerProcess]:
    # A bundle with PipeFunc pipes: the worker registers their functions from the bundle's folder.
    worker = WorkerProcess(FUNC, temporal_address, task_queue, tmp_path / "worker.log")
    yield worker
    worker.stop()


def test_worker_on_a_bundle_runs_it_on_temporal_like_local(
    temporal_address: str, task_queue: str, mthds_worker_process: WorkerProcess
) -> None:
    args = ["run", "draft_and_count", "--file", str(FUNC), "--inputs", '{"subject": "rivers"}']
    local = run_cli(*args, "--local")
    on_temporal = run_cli(*args, "--address", temporal_address, "--task-queue", task_queue)
    assert on_temporal.returncode == 0, on_temporal.stderr
    assert on_temporal.stdout == local.stdout
    count = json.loads(on_temporal.stdout)
    assert count["words"] == len(count["text"].split()) > 3


def test_a_package_folder_run_reads_its_inputs_json(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    shutil.copytree(PACKAGES, root)
    (root / "editorial" / "inputs.json").write_text(
        '{"topic": {"concept": "Text", "content": {"text": "tides"}}}'
    )
    from_folder = runner.invoke(
        app, ["run", "publish", "--file", str(root / "editorial"), "--local"], input=""
    )
    explicit = runner.invoke(
        app,
        [
            "run",
            "publish",
            "--file",
            str(root / "editorial"),
            "--local",
            "--inputs",
            '{"topic": "tides"}',
        ],
    )
    assert from_folder.exit_code == 0, from_folder.output
    assert from_folder.stdout == explicit.stdout


def test_with_memory_holds_every_step_result_and_binds_by_name_downstream() -> None:
    bundle = str(BUNDLES / "compose_template.mthds")
    inputs = '{"title": "Q3", "body": "Sales grew."}'
    compact = runner.invoke(app, ["run", "report", "--file", bundle, "--local", "--inputs", inputs])
    full = runner.invoke(
        app, ["run", "report", "--file", bundle, "--local", "--inputs", inputs, "--with-memory"]
    )
    envelope = json.loads(full.stdout)
    memory = envelope["working_memory"]
    assert list(memory["root"]) == ["title", "body", "summary", "draft", "report", "main_stuff"]
    assert memory["aliases"] == {"main_stuff": "report"}
    assert memory["root"]["report"]["concept"] == {"code": "Report"}
    assert json.loads(envelope["main_stuff"]["json"]) == json.loads(compact.stdout)
    # `layout` needs `title` and `summary`: both bind by name from the upstream working memory.
    layout = runner.invoke(app, ["run", "layout", "--file", bundle, "--local"], input=full.stdout)
    assert layout.exit_code == 0, layout.output
    summary = memory["root"]["summary"]["content"]["text"]
    assert json.loads(layout.stdout) == {"text": f"# Q3\n\n{summary}"}


EXTRACT_RUN = ["run", "extract_pages", "--file", str(BUNDLES / "extract.mthds"), "--local"]


def test_a_document_arrives_as_a_path_or_a_data_url(
    tmp_path: Path, temporal_address: str, task_queue: str, mthds_worker_process: WorkerProcess
) -> None:
    letter = "Invoice 42 from Acme, total 120."
    path = tmp_path / "letter.txt"
    path.write_text(letter)
    encoded = "data:text/plain;base64," + base64.b64encode(letter.encode()).decode()
    pages = []
    for url in (str(path), encoded):
        inputs = json.dumps({"invoice": {"concept": "native.Document", "content": {"url": url}}})
        result = runner.invoke(app, [*EXTRACT_RUN, "--inputs", inputs])
        assert result.exit_code == 0, result.output
        pages.append(json.loads(result.stdout))
    assert pages[0] == pages[1]
    assert letter in json.dumps(pages[0])
    # On Temporal the CLI stores the bytes and the worker reads them from the blob store.
    inputs = json.dumps({"invoice": {"url": encoded}})
    on_temporal = run_cli(
        *EXTRACT_RUN[:-1],
        "--inputs",
        inputs,
        "--address",
        temporal_address,
        "--task-queue",
        task_queue,
    )
    assert on_temporal.returncode == 0, on_temporal.stderr
    assert json.loads(on_temporal.stdout) == pages[0]
    broken = json.dumps({"invoice": {"url": "data:text/plain;base64,%%%"}})
    bad = runner.invoke(app, [*EXTRACT_RUN, "--inputs", broken])
    assert bad.exit_code == 2
    assert "input 'invoice' is not valid Base64" in bad.stderr


def test_with_memory_is_the_whole_working_memory_on_temporal_like_local(
    temporal_address: str, task_queue: str, mthds_worker_process: WorkerProcess
) -> None:
    args = ["run", "issue", "--file", str(BUNDLES / "memory.mthds"), "--with-memory"]
    args += ["--inputs", '{"topic": "tides"}']
    local = run_cli(*args, "--local")
    on_temporal = run_cli(*args, "--address", temporal_address, "--task-queue", task_queue)
    assert on_temporal.returncode == 0, on_temporal.stderr
    assert on_temporal.stdout == local.stdout
    memory = json.loads(local.stdout)["working_memory"]
    root = memory["root"]
    # The nested sequence's results, the step's two outputs, the inline batch's list and the
    # condition's alias sit beside the top sequence's own results.
    assert list(root) == [
        "topic",
        "facts",
        "digest",
        "notes",
        "angles",
        "loud_angles",
        "length_class",
        "summary",
        "title",
        "verdict",
        "main_stuff",
    ]
    assert root["notes"]["content"] == root["digest"]["content"]
    assert root["digest"]["content"]["text"] == "Digest: " + root["facts"]["content"]["text"]
    assert len(root["angles"]["content"]["items"]) == 2
    assert root["loud_angles"]["content"]["items"] == [
        {"text": "ANGLE: " + item["text"]} for item in root["angles"]["content"]["items"]
    ]
    assert root["length_class"]["content"] == {"text": "long"}
    # The condition chose the long outcome, a sequence: its results are in the memory too.
    assert root["title"]["content"]["text"] == "TITLE: " + root["summary"]["content"]["text"]
    assert root["verdict"]["content"] == root["title"]["content"]
    assert memory["aliases"] == {"main_stuff": "verdict"}
    compact = run_cli(*args[:-3], "--inputs", '{"topic": "tides"}', "--local")
    assert json.loads(compact.stdout) == root["main_stuff"]["content"]


def test_a_list_of_documents_arrives_as_paths(tmp_path: Path) -> None:
    # `Document[]` (mthds-std's answer_from_documents takes one): each item a path of the user's.
    letters = ["Invoice 42 from Acme.", "Invoice 43 from Beta."]
    documents = []
    for index, letter in enumerate(letters):
        path = tmp_path / f"letter{index}.txt"
        path.write_text(letter)
        documents.append({"concept": "native.Document", "content": {"url": str(path)}})
    inputs = json.dumps({"documents": documents, "question": "Who sent them?"})
    bundle = str(BUNDLES / "batch_lists.mthds")
    args = ["run", "answer_from_documents", "--file", bundle, "--local", "--with-memory"]
    result = runner.invoke(app, [*args, "--inputs", inputs])
    assert result.exit_code == 0, result.output
    pages = json.loads(result.stdout)["working_memory"]["root"]["pages"]["content"]["items"]
    # The pages of both documents, joined into the one list `answer` reads.
    assert [page["text"] for page in pages] == letters


def test_a_bundle_run_says_its_tokens_and_cost_on_stderr_as_a_yaml_run_does() -> None:
    # The output concept alone went to stdout, and the totals line `run` prints for every other
    # pipeline file (the README: "the output, the tokens spent, the run id") was left out.
    result = runner.invoke(
        app,
        ["run", "generate_joke", "--file", str(JOKES), "--local", "--inputs", json.dumps(TOPIC)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"text": JOKE}  # the contract's stdout, unchanged
    assert re.search(
        r"^tokens: [1-9]\d* in / [1-9]\d* out, cost: \$0\.000000$", result.stderr, re.M
    ), result.stderr
