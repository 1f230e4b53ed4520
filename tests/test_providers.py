"""Model providers are checked when a pipeline file loads, without importing litellm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from durapipe.adapters._providers import litellm_providers
from durapipe.cli import app

PIPES = """
models:
  gateway:                      # a gateway's own prefix, routed by the deck entry
    model: mygateway/chat
    custom_llm_provider: openai
    api_base: http://127.0.0.1:1/v1
  typo: opnai/gpt-4o-mini
default_model: durapipe/offline
pipes:
  ask:
    kind: llm
    model: nosuchprovider/foo
    inputs: {q: text}
    prompt: "{{ q }}"
  routed:
    kind: llm
    model: gateway
    fallbacks: [mygateway/chat, anthropic/claude-sonnet-4-5, openrouter/auto]
    inputs: {q: text}
    prompt: "{{ q }}"
  offline:
    kind: llm
    model: durapipe/offline
    inputs: {q: text}
    prompt: "{{ q }}"
"""


def test_validate_names_each_unknown_provider_and_keeps_routed_and_own_models(
    tmp_path: Path,
) -> None:
    # `model: nosuchprovider/foo` validated, and failed only at run time (BadRequest from litellm).
    file = tmp_path / "p.yaml"
    file.write_text(PIPES)
    done = CliRunner().invoke(app, ["validate", str(file)])
    assert done.exit_code == 2, done.stdout
    tail = (
        "which litellm does not know{}; a model a gateway serves needs a models: entry with its "
        "custom_llm_provider (see the README's Models section)"
    )
    assert done.stderr.splitlines()[1:] == [
        f"  - {file}:7: model alias 'typo': model 'opnai/gpt-4o-mini' names provider 'opnai', "
        + tail.format(" (did you mean 'openai'?)"),
        f"  - {file}:10: pipe 'ask', field 'model': model 'nosuchprovider/foo' names provider "
        "'nosuchprovider', " + tail.format(""),
    ]


def test_the_providers_read_from_litellm_source_are_litellms_own() -> None:
    # Read from the installed source (~1 ms) instead of `import litellm` (3.5-4 s); this pins the
    # reading to what litellm itself routes, so an upgrade that moves them fails here. (The
    # suite imports litellm anyway: the offline model is a litellm provider.)
    import litellm
    from litellm.llms.openai_like.json_loader import JSONProviderRegistry

    JSONProviderRegistry.load()
    routed = {str(getattr(p, "value", p)) for p in litellm.provider_list}
    routed |= set(JSONProviderRegistry.list_providers())
    assert litellm_providers() == routed - {"durapipe"}  # ours, added when the model registers
    assert {"openai", "anthropic", "ollama", "mistral", "azure"} <= litellm_providers()


def test_validate_does_not_import_litellm(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(PIPES.replace("nosuchprovider", "openai").replace("opnai", "openai"))
    probe = (
        "import sys\nfrom durapipe.cli import app\n"
        f"try:\n    app(['validate', {str(file)!r}])\nexcept SystemExit as done:\n"
        "    assert done.code in (0, None), done.code\n"
        "print('litellm' in sys.modules)"
    )
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert seen.stdout.splitlines()[-1] == "False", seen.stderr
