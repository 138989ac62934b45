"""Interoperability with the official A2A Python SDK (PyPI ``a2a-sdk``), end to end: the SDK's
own push sender (``BasePushNotificationSender`` over an ``httpx.AsyncClient``, configs in an
``InMemoryPushNotificationConfigStore``, wired as the SDK's ``DefaultRequestHandler`` docs show)
pushes task events to a running gateway (``profile: a2a-static-token``) and a real backend.

a2a-sdk 1.x signs nothing: a push carries the client-chosen ``token`` in
``X-A2A-Notification-Token`` and/or the config's ``authentication`` as ``Authorization: <scheme>
<credentials>``. Its only JWS code (``a2a.utils.signing``) signs agent cards, not pushes, and it
serves no JWKS, so the JWT profiles (``a2a-samples``, ``a2a-spec``, ...) do not apply to it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from a2a.helpers import new_task
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import (
    BasePushNotificationSender,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    TaskUpdater,
)
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    AuthenticationInfo,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from gateway.config import Config, parse_config
from tests.support import World, gateway_config_data, wait_until, world

PREFIX = "/a2a/notifications"


def token() -> str:
    return "a2a-push-" + uuid.uuid4().hex


def configured(*tokens: str) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        data = gateway_config_data(w.jwks_url, w.backend_url)
        data["issuers"] = [
            {
                "name": "agent",
                "profile": "a2a-static-token",
                "path_prefix": PREFIX,
                "static_token": {"tokens": list(tokens)},
            }
        ]
        return parse_config(data)

    return configure


@dataclass
class Agent:
    """The sending agent's side: the SDK's config store and push sender, and every answer the
    gateway gave it (the sender itself only logs failures: pushes are best effort)."""

    store: InMemoryPushNotificationConfigStore
    sender: BasePushNotificationSender
    answers: list[tuple[int, Any]] = field(default_factory=list)

    async def register(self, task_id: str, url: str, **config: Any) -> None:
        """What the SDK's request handler does for a client's CreateTaskPushNotificationConfig."""
        cfg = TaskPushNotificationConfig(id=uuid.uuid4().hex, task_id=task_id, url=url, **config)
        await self.store.set_info(task_id, cfg, ServerCallContext())


@asynccontextmanager
async def agent() -> AsyncIterator[Agent]:
    answers: list[tuple[int, Any]] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        answers.append((response.status_code, response.json()))

    async with httpx.AsyncClient(event_hooks={"response": [keep]}) as client:
        store = InMemoryPushNotificationConfigStore()
        sender = BasePushNotificationSender(httpx_client=client, config_store=store)
        yield Agent(store, sender, answers)


def completed(task_id: str) -> Task:
    status = TaskStatus(state=TaskState.TASK_STATE_COMPLETED)
    return Task(id=task_id, context_id="ctx-1", status=status)


def working(task_id: str) -> TaskStatusUpdateEvent:
    status = TaskStatus(state=TaskState.TASK_STATE_WORKING)
    return TaskStatusUpdateEvent(task_id=task_id, context_id="ctx-1", status=status)


@pytest.mark.parametrize("carrier", ["token", "authentication"])
async def test_a_push_from_the_a2a_sdk_is_forwarded(carrier: str) -> None:
    secret = token()
    credentials: dict[str, Any] = (
        {"token": secret}
        if carrier == "token"
        else {"authentication": AuthenticationInfo(scheme="Bearer", credentials=secret)}
    )
    async with world(configured(secret)) as w, agent() as a:
        await a.register("task-1", w.url + PREFIX + "/task-1", **credentials)
        await a.sender.send_notification("task-1", working("task-1"))
        await a.sender.send_notification("task-1", completed("task-1"))
        assert [status for status, _ in a.answers] == [200, 200]
        first, second = w.backend.received
        assert first.path_qs == PREFIX + "/task-1"
        assert json.loads(first.body)["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
        task = json.loads(second.body)["task"]
        assert (task["id"], task["status"]["state"]) == ("task-1", "TASK_STATE_COMPLETED")
        assert second.header("X-Jwt-Issuer") == "agent"
        # Whatever carried the token is removed before forwarding.
        assert second.header("X-A2A-Notification-Token") is None
        assert second.header("Authorization") is None


async def test_a2a_sdk_pushes_with_a_rotated_token() -> None:
    """Two agents' configs, one with the old token and one with the new, both configured in the
    gateway during the rotation; then the old one is dropped from the gateway."""
    old, new = token(), token()
    async with world(configured(old, new)) as w, agent() as a:
        await a.register("task-r", w.url + PREFIX + "/old", token=old)
        await a.register("task-r", w.url + PREFIX + "/new", token=new)
        await a.sender.send_notification("task-r", completed("task-r"))
        assert sorted(status for status, _ in a.answers) == [200, 200]
        assert sorted(r.path_qs for r in w.backend.received) == [PREFIX + "/new", PREFIX + "/old"]
    async with world(configured(new)) as w, agent() as a:
        await a.register("task-r", w.url + PREFIX + "/old", token=old)
        await a.sender.send_notification("task-r", completed("task-r"))
        assert [(s, body["error"]) for s, body in a.answers] == [(401, "bad_signature")]
        assert w.backend.received == []


async def test_a2a_sdk_pushes_without_the_right_token_are_refused() -> None:
    secret = token()
    async with world(configured(secret)) as w, agent() as a:
        url = w.url + PREFIX + "/task-x"
        await a.register("task-x", url, token="wrong-" + secret)
        # A scheme with no credentials: the SDK sends no Authorization at all.
        await a.register("task-y", url, authentication=AuthenticationInfo(scheme="Bearer"))
        await a.sender.send_notification("task-x", completed("task-x"))
        await a.sender.send_notification("task-y", completed("task-y"))
        reasons = [(status, body["error"]) for status, body in a.answers]
        assert reasons == [(401, "bad_signature"), (401, "missing_token")]
        assert w.backend.received == []


class Answering(AgentExecutor):
    """An agent as the SDK's docs write one: the task, working, an artifact, completed."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        await updater.add_artifact([Part(text="the answer")])
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def card(url: str) -> AgentCard:
    return AgentCard(
        name="answering",
        description="answers",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC")],
        capabilities=AgentCapabilities(push_notifications=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="answer", name="answer", description="answers", tags=["test"])],
    )


async def test_an_sdk_agent_pushes_every_task_event_through_the_gateway() -> None:
    """A client's message/send with a push config, handled by the SDK's DefaultRequestHandler:
    every event the agent emits is pushed by the SDK itself to the gateway and forwarded."""
    secret = token()
    async with world(configured(secret)) as w, agent() as a:
        handler = DefaultRequestHandler(
            agent_executor=Answering(),
            task_store=InMemoryTaskStore(),
            agent_card=card("http://127.0.0.1:1/a2a"),
            push_config_store=a.store,
            push_sender=a.sender,
        )
        push = TaskPushNotificationConfig(url=w.url + PREFIX + "/client-1", token=secret)
        request = SendMessageRequest(
            message=Message(
                message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text="q")]
            ),
            configuration=SendMessageConfiguration(task_push_notification_config=push),
        )
        result = await handler.on_message_send(request, ServerCallContext())
        assert isinstance(result, Task)
        await wait_until(lambda: len(a.answers) >= 4)
        await handler.aclose()
        assert [status for status, _ in a.answers] == [200, 200, 200, 200]
        pushed = [json.loads(r.body) for r in w.backend.received]
        assert [next(iter(p)) for p in pushed] == [
            "task",
            "statusUpdate",
            "artifactUpdate",
            "statusUpdate",
        ]
        assert pushed[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
        # Every push is about the task the client's message made.
        ids = [p["task"]["id"] if "task" in p else next(iter(p.values()))["taskId"] for p in pushed]
        assert ids == [result.id] * 4
