"""A whole mission through the language server, driven by a third-party client with VS Code's
capabilities (SPEC §8; issue "editor clients", point 4).

The demo project (`missions demo --prepare`) replays a recorded model offline. The client
starts its backlog item with `missions.start`, answers the gates as a user would (approve the
plan, accept each milestone) and uses hover, code actions and lenses on the way. Every message
the server sends is deserialized by pygls with lsprotocol's types, so a message outside the
LSP schema fails the test; pytest-lsp checks requests and results against the client's
capabilities and warns (here: fails) when one is not allowed.
"""

import asyncio
import json
import os
import pathlib
import subprocess
import warnings

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.checks import LspSpecificationWarning

MISSIONS = os.environ["MISSIONS_BIN"]
DEMO_ITEM = "BACKLOG.md:3"
HOME = pathlib.Path(os.environ.get("MISSIONS_TEST_HOME", "/tmp/missions-pytest-lsp-home"))


def server_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "MISSIONS_CONFIG"}
    env["MISSIONS_HOME"] = str(HOME)
    return env


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[MISSIONS, "lsp", "--stdio"], server_env=server_env()))
async def client(lsp_client: LanguageClient, tmp_path: pathlib.Path):
    workspace = tmp_path / "demo"
    subprocess.run([MISSIONS, "demo", "--prepare", str(workspace)], check=True, capture_output=True)
    lsp_client.workspace_path = workspace.resolve()
    lsp_client.answers = []

    @lsp_client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
    def answer(params: types.ShowMessageRequestParams):
        # A user at the gates: approve the plan, accept each milestone.
        titles = [action.title for action in params.actions or []]
        lsp_client.answers.append((params.message, titles))
        for wanted in ("Approve", "Accept"):
            if wanted in titles:
                return types.MessageActionItem(title=wanted)
        return None

    uri = workspace.resolve().as_uri()
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=uri,
            workspace_folders=[types.WorkspaceFolder(uri=uri, name="demo")],
        )
    )
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient, mission: str) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="missions.status", arguments=[{"missionId": mission}])
    )


async def test_a_whole_mission_speaks_only_valid_lsp(client: LanguageClient):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="missions.backlog", arguments=[{}])
        )
        assert any(item["id"] == DEMO_ITEM for item in items), items
        started = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="missions.start", arguments=[{"itemId": DEMO_ITEM}])
        )
        mission = started["missionId"]

        snapshot = {}
        for _ in range(600):
            snapshot = await status(client, mission)
            if snapshot["state"] in ("completed", "failed", "cancelled", "paused"):
                break
            await asyncio.sleep(0.2)
        assert snapshot["state"] == "completed", (snapshot["state"], snapshot.get("detail"), client.answers)
        assert any("Approve" in titles for _, titles in client.answers), client.answers
        assert any("Accept" in titles for _, titles in client.answers), client.answers

        # The editor's features over the code the mission wrote.
        handoffs = sorted((client.workspace_path / ".missions" / mission / "handoffs").glob("*.json"))
        assert handoffs, "the mission recorded no handoff"
        change = json.loads(handoffs[0].read_text())["files_changed"][0]
        document = (client.workspace_path / change["path"]).resolve().as_uri()
        line = change["ranges"][0][0] - 1
        hover = await client.text_document_hover_async(
            types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=document),
                position=types.Position(line=line, character=0),
            )
        )
        assert hover is not None and "Missions" in hover.contents.value
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=document),
                range=types.Range(start=types.Position(line=line, character=0), end=types.Position(line=line, character=0)),
                context=types.CodeActionContext(diagnostics=list(client.diagnostics.get(document, []))),
            )
        )
        assert actions is not None
        lenses = await client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=document))
        )
        assert lenses is not None

        # Progress was reported under tokens the client was asked to create (a token created
        # twice, or progress under an unknown one, is a specification warning), each beginning
        # with `begin`.
        assert client.progress_reports, "no $/progress was sent"
        for token, reports in client.progress_reports.items():
            kinds = [report.kind for report in reports]
            assert kinds and kinds[0] == "begin", (token, kinds)

    problems = [str(w.message) for w in caught if issubclass(w.category, LspSpecificationWarning)]
    assert problems == [], problems
    assert client.error is None, client.error
