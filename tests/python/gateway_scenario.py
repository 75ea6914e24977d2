#!/usr/bin/env python3
"""A channel gateway in Python, written from README.md ("NATS contract") and the .proto files alone.

Usage: gateway_scenario.py --nats URL --grpc HOST:PORT[,HOST:PORT...] [--metrics HOST:PORT,...]

It publishes GatewayEvents to NATS JetStream and consumes effects with a durable pull consumer
(nats-py), and uses gRPC only for what NATS cannot do: configuring the workspace (Admin) and
the agents' presence (Presence). Every NATS name (streams, subject prefixes, headers, effect
kinds) comes from the defaults of `NatsContract` and `EffectKinds` in nats.proto. The stubs are
generated from ../../proto with grpc_tools.protoc into a temporary directory at start-up, as
client_scenario.py does. Every run uses a fresh workspace (pygw-<random hex>).

With --metrics (the Prometheus endpoints of the nodes, or one endpoint serving them all), it
also checks that a re-sent event is counted as a duplicate.

Prints one line per passed step; on the first failure prints the step and what went wrong
and exits with status 1.
"""

import argparse
import asyncio
import re
import secrets
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
import nats
import nats.errors
import nats.js.errors
from nats.js import api as js_api
from protostubs import StepFailed, Steps, connect, generate_stubs

RPC_TIMEOUT_S = 10.0
# How long to wait for an effect that should come at once (an event's direct consequence).
EFFECT_TIMEOUT_S = 15.0
# The team's position_update_interval_s, and how long to wait for its timer's effect.
POSITION_INTERVAL_S = 5
POSITION_WAIT_S = 20.0
# README: retry a publish JetStream did not acknowledge, 100 ms doubling to 5 s.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
RETRY_DEADLINE_S = 30.0
# The effect nobody caused: a timer's.
NO_EVENT = ""
# Bytes that are no GatewayEvent: field 15 with wire type 7, which does not exist.
GARBAGE = bytes([0xFF, 0x00, 0x13, 0x37])


def scrape(addresses, series, labels):
    """The sum over `addresses` of a Prometheus counter with exactly these labels (absent = 0)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(series)}\{{([^}}]*)\}}\s+(\S+)")
    total = 0.0
    for address in addresses:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            match = pattern.match(line)
            if match and ",".join(sorted(match.group(1).split(","))) == wanted:
                total += float(match.group(2))
    return total


class Heartbeats:
    """Keeps the agents online as their app would: a heartbeat every few seconds (the cluster
    marks agents without heartbeats offline)."""

    def __init__(self, presence, pre, workspace, agents, every_s=5.0):
        self.stop = threading.Event()
        self.last_error = None

        def run():
            while not self.stop.wait(every_s):
                for agent in agents:
                    try:
                        presence.Heartbeat(pre.HeartbeatRequest(workspace=workspace, agent=agent), timeout=5)
                    except grpc.RpcError as error:
                        self.last_error = f"{agent}: {error.code().name}: {error.details()!r}"

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)


class Scenario(Steps):
    def __init__(self, pb, channel, nats_url, metrics):
        self.pb = pb
        self.channel = channel
        self.nats_url = nats_url
        self.metrics = metrics
        self.admin = pb["admin_grpc"].AdminStub(channel)
        self.presence = pb["presence_grpc"].PresenceStub(channel)
        self.cluster = pb["cluster_grpc"].ClusterStub(channel)
        # Every NATS name, from nats.proto.
        self.names = pb["nats"].NatsContract()
        kinds = pb["nats"].EffectKinds()
        self.kinds = {field.name: getattr(kinds, field.name) for field in kinds.DESCRIPTOR.fields}
        self.ws = "pygw-" + secrets.token_hex(6)
        self.step = "start"
        self.passed = 0
        self.nc = None
        self.js = None
        self.heartbeats = None
        self.effects = None  # the durable pull subscription
        self.durable = None
        # Per-effect bookkeeping.
        self.last_id = (0, -1)
        self.last_stream_seq = None
        self.last_msg_id = None
        self.handled = 0

    # ---- helpers -------------------------------------------------------------------------

    def kind(self, name):
        """An effect kind's name as nats.proto's EffectKinds gives it."""
        return self.kinds[name]

    def events_subject(self):
        return self.names.events_subject_prefix + self.ws

    def opened(self, conversation):
        m, e = self.pb["model"], self.pb["events"]
        return e.GatewayEvent(
            event_id=f"{self.ws}-{conversation}-opened",
            workspace=self.ws,
            occurred_at_ms=int(time.time() * 1000),
            conversation_opened=e.ConversationOpened(
                conversation=conversation, contact=f"contact-{conversation}", channel=m.CHANNEL_WHATSAPP
            ),
        )

    def closed(self, conversation):
        e = self.pb["events"]
        return e.GatewayEvent(
            event_id=f"{self.ws}-{conversation}-closed",
            occurred_at_ms=int(time.time() * 1000),
            # workspace left empty: the subject's token is used (README).
            conversation_closed=e.ConversationClosed(conversation=conversation),
        )

    async def publish_raw(self, subject, payload, msg_id):
        """Publishes until JetStream acknowledges it: "no responders" means it was not stored,
        so send it again with the same Nats-Msg-Id, backing off 100 ms doubling to 5 s."""
        delay = BACKOFF_FIRST_S
        deadline = time.monotonic() + RETRY_DEADLINE_S
        while True:
            try:
                return await self.js.publish(subject, payload, headers={self.names.msg_id_header: msg_id})
            except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError, nats.errors.TimeoutError) as error:
                if time.monotonic() + delay > deadline:
                    raise StepFailed(
                        f"publish of {msg_id!r} to {subject} never acknowledged within {RETRY_DEADLINE_S} s: {error!r}"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def publish(self, event):
        """Publishes a GatewayEvent with Nats-Msg-Id = event_id."""
        ack = await self.publish_raw(self.events_subject(), event.SerializeToString(), event.event_id)
        self.check(ack.stream == self.names.events_stream, f"stored in stream {ack.stream!r}, expected {self.names.events_stream!r}")
        return ack

    async def next_effect(self, timeout):
        """The next effect on the durable consumer, checked against the contract and acked once
        handled; None if none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                messages = await self.effects.fetch(1, timeout=min(remaining, 2.0))
            except nats.errors.TimeoutError:
                continue
            if messages:
                break
        msg = messages[0]
        effect = self.pb["events"].Effect()
        try:
            effect.ParseFromString(msg.data)
        except Exception as error:  # noqa: BLE001 - any decode error is a failure of the contract
            raise StepFailed(f"undecodable effect on {msg.subject}: {error!r}") from None
        self.check_effect(msg, effect)
        await msg.ack()
        self.handled += 1
        return effect

    def check_effect(self, msg, effect):
        n = self.names
        kind = effect.WhichOneof("kind")
        where = f"effect {kind}@{effect.log_index}.{effect.sequence} on {msg.subject}"
        self.check(kind in self.kinds.values(), f"{where}: kind {kind!r} is not in EffectKinds {sorted(self.kinds.values())}")
        self.check(
            msg.subject == f"{n.effects_subject_prefix}{self.ws}.{kind}",
            f"{where}: subject's kind token differs from WhichOneof('kind') = {kind!r}",
        )
        self.check(msg.metadata.stream == n.effects_stream, f"{where}: from stream {msg.metadata.stream!r}")
        self.check(effect.workspace == self.ws, f"{where}: workspace {effect.workspace!r}")
        headers = msg.headers or {}
        msg_id = f"{effect.log_index}.{effect.sequence}"
        expected = {
            n.msg_id_header: msg_id,
            n.log_index_header: str(effect.log_index),
            n.sequence_header: str(effect.sequence),
        }
        for header, value in expected.items():
            self.check(headers.get(header) == value, f"{where}: header {header} = {headers.get(header)!r}, expected {value!r}")
        # Switchboard-Previous-Msg-Id names the effect before it in the stream; that is the one
        # this consumer saw last when the stream holds nothing in between.
        stream_seq = msg.metadata.sequence.stream
        before = headers.get(n.previous_msg_id_header)
        if stream_seq == 1:
            self.check(before is None, f"{where}: the stream's first effect has {n.previous_msg_id_header} {before!r}")
        elif self.last_stream_seq is not None and stream_seq == self.last_stream_seq + 1:
            self.check(
                before == self.last_msg_id,
                f"{where}: {n.previous_msg_id_header} {before!r}, but the effect before it is {self.last_msg_id!r}",
            )
        ident = (effect.log_index, effect.sequence)
        self.check(ident > self.last_id, f"{where}: arrived after {self.last_id[0]}.{self.last_id[1]} (out of log order)")
        self.last_id = ident
        self.last_stream_seq = stream_seq
        self.last_msg_id = msg_id

    @staticmethod
    def describe(effect):
        kind = effect.WhichOneof("kind")
        body = getattr(effect, kind)
        subject = getattr(body, "conversation", "") or getattr(body, "agent", "")
        return f"{kind}({subject})@{effect.log_index}.{effect.sequence} event_id={effect.event_id!r}"

    async def expect_effects(self, count, timeout=EFFECT_TIMEOUT_S):
        """The next `count` effects."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            effect = await self.next_effect(deadline - time.monotonic())
            self.check(
                effect is not None,
                f"only {len(got)} of {count} effects within {timeout} s: {[self.describe(e) for e in got]}",
            )
            got.append(effect)
        return got

    # ---- the scenario ----------------------------------------------------------------------

    async def run(self):
        m, adm, pre, cl = (self.pb[k] for k in ("model", "admin", "presence", "cluster"))
        n = self.names

        self.step = "contract names from nats.proto"
        oneof = self.pb["events"].Effect.DESCRIPTOR.oneofs_by_name["kind"]
        self.check(
            sorted(self.kinds.values()) == sorted(f.name for f in oneof.fields),
            f"EffectKinds {sorted(self.kinds.values())} != Effect.kind fields {sorted(f.name for f in oneof.fields)}",
        )
        self.ok(
            f"events {n.events_stream} ({n.events_subject_prefix}<ws>), effects {n.effects_stream} "
            f"({n.effects_subject_prefix}<ws>.<kind>), rejected {n.rejected_stream} ({n.rejected_subject_prefix}<ws>)"
        )

        self.step = "Cluster.Status has a leader"
        status = self.leader_status(self.cluster, cl.StatusRequest())
        self.ok(f"leader {status.leader_id}")

        # a. The workspace, over gRPC (NATS carries no configuration).
        self.step = f"configure {self.ws}: mary, john (max_open 1), team support (round robin, positions every {POSITION_INTERVAL_S} s)"
        self.call(self.admin.ConfigureWorkspace, adm.ConfigureWorkspaceRequest(workspace=self.ws, settings=m.WorkspaceSettings()))
        for agent_id, name in (("mary", "Mary"), ("john", "John")):
            self.call(
                self.admin.UpsertAgent,
                adm.UpsertAgentRequest(
                    workspace=self.ws, agent=m.Agent(id=agent_id, display_name=name, max_open=1, daily_limit=100)
                ),
            )
        self.call(
            self.admin.UpsertTeam,
            adm.UpsertTeamRequest(
                workspace=self.ws,
                team=m.Team(
                    id="support",
                    members=["mary", "john"],
                    strategy=m.STRATEGY_ROUND_ROBIN,
                    options=m.TeamOptions(position_update_interval_s=POSITION_INTERVAL_S),
                ),
            ),
        )
        self.call(
            self.admin.ConfigureWorkspace,
            adm.ConfigureWorkspaceRequest(workspace=self.ws, settings=m.WorkspaceSettings(default_team="support")),
        )
        online_request = {agent: f"{self.ws}-{agent}-online" for agent in ("mary", "john")}
        for agent, request_id in online_request.items():
            self.call(
                self.presence.SetStatus,
                pre.SetStatusRequest(workspace=self.ws, agent=agent, status=m.AGENT_STATUS_ONLINE, request_id=request_id),
            )
        self.heartbeats = Heartbeats(self.presence, pre, self.ws, list(online_request))
        self.ok("default team support, both ONLINE")

        # b. The durable pull consumer of this gateway.
        self.step = f"durable pull consumer on {n.effects_stream}"
        self.nc = await nats.connect(self.nats_url, name="switchboard-python-gateway", connect_timeout=5)
        self.js = self.nc.jetstream()
        self.durable = f"{self.ws}-gateway"
        config = js_api.ConsumerConfig(
            durable_name=self.durable,
            filter_subject=f"{n.effects_subject_prefix}{self.ws}.>",
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=30,
            # A customer must never hear two messages out of order (README).
            max_ack_pending=1,
        )
        delay, waited, deadline = BACKOFF_FIRST_S, 0, time.monotonic() + RETRY_DEADLINE_S
        while True:
            try:
                self.effects = await self.js.pull_subscribe(
                    config.filter_subject, durable=self.durable, stream=n.effects_stream, config=config
                )
                break
            except nats.js.errors.NotFoundError as error:
                # The leader creates the stream when it first leads; until then, wait.
                self.check(
                    time.monotonic() + delay < deadline,
                    f"{n.effects_stream} never appeared within {RETRY_DEADLINE_S} s: {error.description or error!r}",
                )
                await asyncio.sleep(delay)
                waited += 1
                delay = min(delay * 2, BACKOFF_MAX_S)
        info = await self.effects.consumer_info()
        self.check(
            (info.config.filter_subject, info.config.ack_policy, info.config.deliver_policy, info.config.ack_wait)
            == (config.filter_subject, js_api.AckPolicy.EXPLICIT, js_api.DeliverPolicy.ALL, 30.0),
            f"consumer config {info.config}",
        )
        self.ok(f"{self.durable} filter {config.filter_subject}" + (f" (stream appeared after {waited} retries)" if waited else ""))

        self.step = "deliver all: the agents' status effects, each naming its SetStatus request_id"
        effects = await self.expect_effects(2)
        statuses = {
            (e.agent_status.agent, e.agent_status.status, e.event_id) for e in effects if e.WhichOneof("kind") == self.kind("agent_status")
        }
        wanted = {(agent, m.AGENT_STATUS_ONLINE, request_id) for agent, request_id in online_request.items()}
        self.check(statuses == wanted, f"effects {[self.describe(e) for e in effects]}, expected ONLINE for {online_request}")
        self.ok(", ".join(self.describe(e) for e in effects))

        # c. Four conversations for two agents of one seat each.
        self.step = "4 conversation_opened over NATS -> 2 assigned, 2 queued (positions 1, 2)"
        conversations = ["c1", "c2", "c3", "c4"]
        events = {c: self.opened(c) for c in conversations}
        for conversation in conversations:
            ack = await self.publish(events[conversation])
            self.check(not ack.duplicate, f"{conversation}: JetStream called a first publish a duplicate")
        effects = await self.expect_effects(4)
        about = [getattr(e, e.WhichOneof("kind")).conversation for e in effects]
        self.check(about == conversations, f"effects {[self.describe(e) for e in effects]}: not one per conversation in order")
        for conversation, effect in zip(conversations, effects):
            self.check(
                effect.event_id == events[conversation].event_id,
                f"{self.describe(effect)}: event_id is not {events[conversation].event_id!r}",
            )
        c1, c2, c3, c4 = effects
        self.check(
            [e.WhichOneof("kind") for e in effects] == [self.kind(k) for k in ("assigned", "assigned", "queued", "queued")],
            f"kinds {[self.describe(e) for e in effects]}",
        )
        self.check(
            {c1.assigned.agent, c2.assigned.agent} == {"mary", "john"},
            f"round robin gave c1 {c1.assigned.agent!r}, c2 {c2.assigned.agent!r}",
        )
        self.check(
            (c3.queued.team, c3.queued.position, c4.queued.team, c4.queued.position) == ("support", 1, "support", 2),
            f"queued {c3.queued} / {c4.queued}",
        )
        first_agent = c1.assigned.agent
        c4_queued = c4
        self.ok(f"c1 -> {c1.assigned.agent}, c2 -> {c2.assigned.agent}, c3 #1, c4 #2")

        # d. A close frees a seat: the first in the queue takes it, the second moves up.
        self.step = "conversation_closed c1 -> closed c1, assigned c3"
        close = self.closed("c1")
        await self.publish(close)
        closed_at = time.monotonic()
        effects = await self.expect_effects(2)
        self.check(
            [(e.WhichOneof("kind"), getattr(e, e.WhichOneof("kind")).conversation, e.event_id) for e in effects]
            == [(self.kind("closed"), "c1", close.event_id), (self.kind("assigned"), "c3", close.event_id)],
            f"effects {[self.describe(e) for e in effects]}, expected closed c1 then assigned c3, caused by {close.event_id!r}",
        )
        self.check(effects[1].assigned.agent == first_agent, f"c3 went to {effects[1].assigned.agent!r}, not {first_agent!r}")
        self.ok(f"c3 -> {first_agent}")

        self.step = f"queue_position: c4 is now number 1 (within {POSITION_WAIT_S:.0f} s)"
        effect = await self.next_effect(POSITION_WAIT_S)
        self.check(effect is not None, f"no effect within {POSITION_WAIT_S} s of the close")
        self.check(
            (effect.WhichOneof("kind"), effect.queue_position.conversation, effect.queue_position.position)
            == (self.kind("queue_position"), "c4", 1),
            f"{self.describe(effect)}: expected queue_position c4 #1",
        )
        self.check(effect.queue_position.team == "support", f"team {effect.queue_position.team!r}")
        self.check(effect.event_id == NO_EVENT, f"a timer's effect names event {effect.event_id!r}")
        told_ms = effect.at_ms - c4_queued.at_ms
        self.check(
            told_ms >= POSITION_INTERVAL_S * 1000,
            f"c4 was told again {told_ms} ms after its queued effect, within the {POSITION_INTERVAL_S} s interval",
        )
        self.ok(f"{time.monotonic() - closed_at:.1f} s after the close, {told_ms} ms after it was queued, no event_id")

        # e. The same event under another Nats-Msg-Id: stored, but without effect.
        self.step = "re-sent event under another Nats-Msg-Id is stored but has no effect"
        duplicates = None
        series, labels = "switchboard_events_duplicate_total", {"source": "nats"}
        shown = series + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        ingested_series = "switchboard_events_ingested_total"
        if self.metrics:
            duplicates = scrape(self.metrics, series, labels)
            ingested = scrape(self.metrics, ingested_series, labels)
        again = events["c1"]
        ack = await self.publish_raw(self.events_subject(), again.SerializeToString(), again.event_id + "/again")
        self.check(not ack.duplicate, "JetStream did not store the re-sent event (another Nats-Msg-Id)")
        await asyncio.sleep(2)
        marker = self.opened("c5")
        await self.publish(marker)
        before = []
        while True:
            effect = await self.next_effect(EFFECT_TIMEOUT_S)
            self.check(effect is not None, f"no effect of the marker {marker.event_id!r}; before it {[self.describe(e) for e in before]}")
            if effect.event_id == marker.event_id:
                break
            before.append(effect)
        caused = [self.describe(e) for e in before if e.event_id == again.event_id]
        self.check(not caused, f"the re-sent event took effect again: {caused}")
        self.check(not before, f"unexpected effects before the marker's: {[self.describe(e) for e in before]}")
        self.check(
            (effect.WhichOneof("kind"), effect.queued.conversation, effect.queued.position) == (self.kind("queued"), "c5", 2),
            f"marker {self.describe(effect)}: expected queued c5 #2",
        )
        detail = "nothing before the marker's queued c5 #2"
        if self.metrics:
            deadline = time.monotonic() + 10
            now = scrape(self.metrics, series, labels)
            while now <= duplicates and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                now = scrape(self.metrics, series, labels)
            self.check(now > duplicates, f"{shown} stayed at {duplicates:g} on {self.metrics}")
            detail += f"; {shown} {duplicates:g} -> {now:g}"
            # Only the marker took effect: the re-sent event is a duplicate, not ingested.
            ingested_now = scrape(self.metrics, ingested_series, labels)
            while ingested_now < ingested + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                ingested_now = scrape(self.metrics, ingested_series, labels)
            self.check(
                ingested_now == ingested + 1,
                f"{ingested_series}{{source=\"nats\"}} went {ingested:g} -> {ingested_now:g}; expected +1 (the marker only)",
            )
            detail += f"; ingested +{ingested_now - ingested:g}"
        else:
            detail += " (no --metrics: duplicate counter not checked)"
        self.ok(detail)

        # f. A poison message goes to the rejected stream, with the reason in headers.
        self.step = f"garbage on {self.events_subject()} -> {n.rejected_subject_prefix}{self.ws} (undecodable)"
        rejected_subject = n.rejected_subject_prefix + self.ws
        rejected = await self.js.pull_subscribe(
            rejected_subject,
            stream=n.rejected_stream,
            config=js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.ALL, ack_policy=js_api.AckPolicy.EXPLICIT, inactive_threshold=60
            ),
        )
        garbage_id = f"{self.ws}-garbage"
        await self.publish_raw(self.events_subject(), GARBAGE, garbage_id)
        try:
            messages = await rejected.fetch(1, timeout=EFFECT_TIMEOUT_S)
        except nats.errors.TimeoutError:
            raise StepFailed(f"nothing on {rejected_subject} within {EFFECT_TIMEOUT_S} s") from None
        msg = messages[0]
        headers = msg.headers or {}
        self.check(msg.subject == rejected_subject, f"subject {msg.subject!r}")
        self.check(msg.metadata.stream == n.rejected_stream, f"stream {msg.metadata.stream!r}")
        self.check(
            headers.get(n.original_msg_id_header) == garbage_id,
            f"the first rejection of {self.ws} is not the garbage (the re-sent event was rejected?): headers {headers}",
        )
        self.check(headers.get(n.error_header) == "undecodable", f"{n.error_header} {headers.get(n.error_header)!r}")
        self.check(
            headers.get(n.original_subject_header) == self.events_subject(),
            f"{n.original_subject_header} {headers.get(n.original_subject_header)!r}",
        )
        self.check(headers.get(n.error_message_header), f"no {n.error_message_header}: headers {headers}")
        self.check(msg.data == GARBAGE, f"payload {msg.data!r}, expected the original bytes {GARBAGE!r}")
        await msg.ack()
        self.ok(f"{n.error_message_header}: {headers.get(n.error_message_header)!r}")

        self.step = "nothing else was rejected or caused"
        try:
            more = await rejected.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            more = []
        self.check(not more, f"another rejection: {[(m.headers, m.data) for m in more]}")
        effect = await self.next_effect(1)
        self.check(effect is None, f"an effect after the marker: {self.describe(effect) if effect else ''}")
        await rejected.unsubscribe()
        self.ok(f"{self.handled} effects handled and acked")

    async def close(self):
        if self.heartbeats:
            self.heartbeats.close()
        if self.js and self.durable:
            try:
                await self.js.delete_consumer(self.names.effects_stream, self.durable)
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self.nc:
            await self.nc.close()


async def run_scenario(pb, channel, args):
    scenario = Scenario(pb, channel, args.nats, [a for a in (args.metrics or "").split(",") if a])
    print(f"workspace {scenario.ws} via NATS {args.nats}", flush=True)
    started = time.monotonic()
    try:
        await scenario.run()
    except Exception as failure:  # a failed step, or a crash of the gateway
        return scenario.failed(failure, "gateway")
    finally:
        await scenario.close()
    print(f"scenario took {time.monotonic() - started:.1f} s")
    print(f"{scenario.passed} passed, 0 failed")
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--nats", required=True, help="NATS URL, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--grpc", required=True, help="HOST:PORT[,HOST:PORT...] of the nodes' API")
    parser.add_argument("--metrics", help="HOST:PORT[,...] of Prometheus /metrics endpoints")
    args = parser.parse_args(argv[1:])
    addresses = [a for a in args.grpc.split(",") if a]
    with tempfile.TemporaryDirectory(prefix="switchboard-pb-") as out_dir:
        pb = generate_stubs(out_dir)
        address, channel = connect(addresses)
        print(f"gRPC via {address}", flush=True)
        try:
            return asyncio.run(run_scenario(pb, channel, args))
        finally:
            channel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
