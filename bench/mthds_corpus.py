"""MTHDS bundles other people wrote, through durapipe unchanged: how many validate, how many run.

Two steps, so a sceptic can rebuild the figure from the same public repositories:

    python -m bench.mthds_corpus collect OUT REPO...   # copy each repo's bundles into OUT/<repo>/
    python -m bench.mthds_corpus run OUT [--temporal N] [--timeout S] [--methods STORE]

``collect`` takes checked-out repositories (or bare git directories, read at HEAD) and copies every
``.mthds`` file with its package's ``METHODS.toml``; from Markdown documentation (``docs/**.md``,
the spec's own examples) it takes each TOML code block that is a whole bundle (a ``domain`` line and
a ``[pipe.`` table). The repository's commit goes to ``OUT/<repo>/COMMIT``.

``run`` runs ``durapipe validate FILE`` on every bundle, then, for each bundle that validates,
``durapipe run PIPE --file FILE --local`` for its ``main_pipe`` (else each pipe no other pipe
calls), with inputs made up from the pipe's declared types (text, numbers, a one-page PDF, a PNG,
structures sampled from their schema): the offline model answers, so nothing reaches a provider.
With ``--temporal N`` the first N runnable bundles run again on a dev server (started here) through
``durapipe worker FILE`` and ``durapipe run PIPE --file FILE``. It prints exact counts, one
``name = value`` per line, and one line per rejection or failed run with its first reason.
``--methods STORE`` is the store of installed methods that package addresses before ``->``
resolve from (``DURAPIPE_MTHDS_METHODS``; Pipelex/methods' bundles name its ``documents`` package
so: copy ``OUT/Pipelex+methods/methods/documents`` into STORE, as that repository's README says).
Without it no installed method is found (not even ``~/.mthds/methods``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import dev_server, durapipe_cli, figure, note, process
from durapipe.testing._documents import text_pdf

_DOC_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


# --- collect ---------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={_git_dir(repo)}", *args], capture_output=True, text=True, check=True
    ).stdout


def _git_dir(repo: Path) -> Path:
    return repo / ".git" if (repo / ".git").exists() else repo


def collect(out: Path, repos: list[Path]) -> None:
    """Copy the bundles of each repository (at HEAD) into ``out/<repo name>/``."""
    for repo in repos:
        name = (
            repo.resolve().name if repo.name not in ("repo", ".git") else repo.resolve().parent.name
        )
        target = out / name
        files = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").split("\n")
        kept = 0
        for path in files:
            if path.endswith(".mthds") or (
                path.endswith("METHODS.toml") and any(f.endswith(".mthds") for f in files)
            ):
                dest = target / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(_git(repo, "show", f"HEAD:{path}"))
                kept += path.endswith(".mthds")
            elif path.startswith("docs/") and path.endswith(".md"):
                kept += _doc_examples(_git(repo, "show", f"HEAD:{path}"), path, target)
        if kept:
            (target / "COMMIT").write_text(_git(repo, "rev-parse", "HEAD"))
        note(f"{name}: {kept} bundles")


def _doc_examples(text: str, path: str, target: Path) -> int:
    found = 0
    for block in _DOC_BLOCK.finditer(text):
        body = block.group(1)
        if re.search(r"^domain\s*=", body, re.M) and re.search(r"^\[pipe\.", body, re.M):
            line = text[: block.start()].count("\n") + 2
            dest = target / f"{path[:-3].replace('/', '__')}__L{line}.mthds"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(body)
            found += 1
    return found


# --- made-up inputs --------------------------------------------------------------------------


def _png() -> bytes:
    """A 2x2 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))


@dataclass
class _Samples:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    def path(self, kind: str) -> str:
        if kind not in self.files:
            target = self.folder / ("sample.pdf" if kind == "document" else "sample.png")
            target.write_bytes(
                text_pdf(["Sample agreement between Acme and Beta, 2024."])
                if kind == "document"
                else _png()
            )
            self.files[kind] = target
        return str(self.files[kind])


def _value(type_ref: str, structures: Any, samples: _Samples, name: str) -> Any:
    from durapipe.spec._types import json_schema
    from durapipe.testing import sample_from_schema

    if type_ref.startswith("list["):
        item, _, count = type_ref[5:-1].partition(",")
        return [_value(item.strip(), structures, samples, name) for _ in range(int(count or 2))]
    if type_ref in ("document", "file"):
        return {"url": samples.path("document"), "mime_type": "application/pdf"}
    if type_ref == "image":
        return {"url": samples.path("image")}
    if type_ref in ("text", "any"):
        return f"Sample {name.replace('_', ' ')}: Acme signed a two-year supply deal with Beta in 2024."
    return sample_from_schema(json_schema(type_ref, structures), name)


# --- run -------------------------------------------------------------------------------------


@dataclass
class _Bundle:
    path: Path
    pipes: dict[str, dict[str, Any]]  # pipe -> made-up inputs


def _first_reason(stderr: str) -> str:
    """The first problem of a failed command: the error JSON's message, or its first listed line."""
    for line in stderr.splitlines():
        if line.strip().startswith("{"):
            try:
                return str(json.loads(line)["message"]).split("\n")[0]
            except (ValueError, KeyError, TypeError):
                pass
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    listed = [line[2:] for line in lines if line.startswith("- ")]
    more = f" (+{len(listed) - 1} more)" if len(listed) > 1 else ""
    return (listed[0] + more) if listed else (lines[-1] if lines else "no message")


def _entry_pipes(path: Path, samples: _Samples) -> dict[str, dict[str, Any]]:
    """The pipes to run (main_pipe, else pipes nothing calls) with made-up inputs for each."""
    from durapipe.adapters.mthds import load_method
    from durapipe.spec import pipes_used

    method = load_method(path)
    pipeline = method.pipeline
    if method.main_pipe:
        names = [method.main_pipe]
    else:
        called = {used for pipe in pipeline.pipes.values() for used in pipes_used(pipe)}
        names = [name for name in pipeline.pipes if name not in called]
    return {
        name: {
            input_name: _value(ref, pipeline.structures, samples, input_name)
            for input_name, ref in pipeline.pipes[name].inputs.items()
        }
        for name in names
    }


def _bundles(root: Path) -> Iterator[Path]:
    yield from sorted(root.rglob("*.mthds"))


def _cli(args: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            durapipe_cli(*args), capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout:.0f} s")


def run(
    root: Path, temporal: int, timeout: float, address: str | None, methods: Path | None = None
) -> None:
    """Validate and run every bundle under ``root``; print the counts."""
    work = Path(tempfile.mkdtemp(prefix="mthds-corpus-"))
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DURAPIPE_CHECKPOINTS": str(work / "checkpoints.sqlite"),
        "DURAPIPE_MTHDS_METHODS": str((methods or work / "no-methods").resolve()),
        "NO_COLOR": "1",
    }
    # _entry_pipes loads bundles in this process too: the same store.
    os.environ["DURAPIPE_MTHDS_METHODS"] = env["DURAPIPE_MTHDS_METHODS"]
    samples = _Samples(work)
    try:
        for commit in sorted(root.glob("*/COMMIT")):
            # One commit for a repository collected whole; else one "commit path" line a file.
            for line in commit.read_text().strip().splitlines():
                note(f"{commit.parent.name} @ {line}")
        files = list(_bundles(root))
        rejected: list[tuple[Path, str]] = []
        runnable: list[_Bundle] = []
        for path in files:
            done = _cli(["validate", str(path)], timeout, env)
            if done.returncode != 0:
                rejected.append((path, _first_reason(done.stderr + done.stdout)))
                continue
            try:
                runnable.append(_Bundle(path, _entry_pipes(path, samples)))
            except Exception as err:  # a bundle that validates but will not load is a finding
                rejected.append((path, f"validated, but did not load: {err}"))
        attempted, failed = 0, []
        for bundle in runnable:
            for pipe, inputs in bundle.pipes.items():
                attempted += 1
                args = ["run", pipe, "--file", str(bundle.path), "--local"]
                done = _cli([*args, "--inputs", json.dumps(inputs)], timeout, env)
                if done.returncode != 0:
                    failed.append((bundle.path, pipe, _first_reason(done.stderr)))
        figure("files", len(files))
        figure("validated", len(files) - len(rejected))
        figure("rejected", len(rejected))
        for path, reason in rejected:
            print(f"  rejected {path.relative_to(root)}: {reason}")
        figure("runs_attempted", attempted)
        figure("runs_ok", attempted - len(failed))
        for path, pipe, reason in failed:
            print(f"  failed {path.relative_to(root)} {pipe}: {reason}")
        if temporal:
            asyncio.run(_on_temporal(runnable[:temporal], root, env, timeout, address, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _polled(address: str, queue: str, child: subprocess.Popen[bytes]) -> bool:
    """Wait until a worker polls ``queue`` (a worker takes seconds to start on a loaded machine,
    longer than the CLI waits before it calls a run stalled); False if the worker exits first."""
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    client = await Client.connect(address)
    request = DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=queue))
    for _ in range(600):  # at most 60 s
        if child.poll() is not None:
            return False
        if (await client.workflow_service.describe_task_queue(request)).pollers:
            return True
        await asyncio.sleep(0.1)
    return False


async def _on_temporal(
    bundles: list[_Bundle],
    root: Path,
    env: dict[str, str],
    timeout: float,
    address: str | None,
    work: Path,
) -> None:
    attempted, failed = 0, []
    async with dev_server(address) as target:
        env = {**env, "TEMPORAL_ADDRESS": target}
        for bundle in bundles:
            queue = f"corpus-{uuid.uuid4().hex[:8]}"
            worker = durapipe_cli("worker", str(bundle.path), "--task-queue", queue)
            with process(worker, work / "worker.log", env) as child:
                if not await _polled(target, queue, child):
                    for pipe in bundle.pipes:
                        attempted += 1
                        failed.append((bundle.path, pipe, "its worker did not start polling"))
                    continue
                for pipe, inputs in bundle.pipes.items():
                    attempted += 1
                    args = ["run", pipe, "--file", str(bundle.path), "--task-queue", queue]
                    done = await asyncio.to_thread(
                        _cli, [*args, "--inputs", json.dumps(inputs)], timeout, env
                    )
                    if done.returncode != 0:
                        failed.append((bundle.path, pipe, _first_reason(done.stderr)))
    figure("temporal_runs_attempted", attempted)
    figure("temporal_runs_ok", attempted - len(failed))
    for path, pipe, reason in failed:
        print(f"  failed on temporal {path.relative_to(root)} {pipe}: {reason}")


def main() -> None:
    """``collect OUT REPO...`` or ``run OUT``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect", help="copy the bundles of checked-out repositories")
    gather.add_argument("out", type=Path)
    gather.add_argument("repos", type=Path, nargs="+")
    check = commands.add_parser("run", help="validate and run every bundle under a folder")
    check.add_argument("root", type=Path)
    check.add_argument("--temporal", type=int, default=0, help="bundles to run on Temporal too")
    check.add_argument("--timeout", type=float, default=180.0, help="seconds per command")
    check.add_argument("--address", help="a running Temporal server (default: start one)")
    check.add_argument("--methods", type=Path, help="installed methods (DURAPIPE_MTHDS_METHODS)")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.out, args.repos)
    else:
        run(args.root, args.temporal, args.timeout, args.address, args.methods)


if __name__ == "__main__":
    main()
