#!/usr/bin/env python3
"""Drives a running Switchboard cluster through its public gRPC API from Python.

Usage: client_scenario.py [--ca FILE --token ADMIN --gateway-token GATEWAY] HOST:PORT [HOST:PORT ...]

The stubs are generated from the .proto files (../../proto, relative to this script) with
grpc_tools.protoc into a temporary directory at start-up, so this proves the API is usable
from another language with nothing but the protos. Every run uses a fresh workspace
(py-<random hex>), so it can be run again and again against the same cluster.

Prints one line per passed step; on the first failure prints the step and what went wrong
and exits with status 1.
"""

import queue
import secrets
import sys
import tempfile
import threading
import time

import grpc
from protostubs import StepFailed, Steps, connect, generate_stubs, security_args

RPC_TIMEOUT_S = 10.0
WATCH_DEADLINE_S = 10.0


class Scenario(Steps):
    def __init__(self, pb, channel, addresses, security):
        self.security = security
        self.pb = pb
        self.channel = channel
        self.addresses = addresses
        self.admin = pb["admin_grpc"].AdminStub(channel)
        self.presence = pb["presence_grpc"].PresenceStub(channel)
        self.events = pb["events_grpc"].EventsStub(channel)
        self.assignments = pb["assignments_grpc"].AssignmentsStub(channel)
        self.cluster = pb["cluster_grpc"].ClusterStub(channel)
        self.ws = "py-" + secrets.token_hex(6)
        self.step = "start"
        self.passed = 0
        self.assigned = {}  # conversation -> agent
        self.workspace_index = 0

    # ---- helpers -------------------------------------------------------------------------

    def expect_error(self, method, request, code, mentions=()):
        try:
            response = method(request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            self.check(
                error.code() == code,
                f"expected {code.name}, got {error.code().name}: {error.details()!r}",
            )
            for word in mentions:
                self.check(word in (error.details() or ""), f"{error.details()!r} does not mention {word!r}")
            return error
        raise StepFailed(f"expected {code.name}, got OK: {response}")

    def opened(self, conversation, event_id=None):
        m, e = self.pb["model"], self.pb["events"]
        return e.GatewayEvent(
            event_id=event_id if event_id is not None else f"{conversation}-opened",
            workspace=self.ws,
            occurred_at_ms=int(time.time() * 1000),
            conversation_opened=e.ConversationOpened(
                conversation=conversation,
                contact=f"contact-{conversation}",
                channel=m.CHANNEL_WHATSAPP,
            ),
        )

    def publish(self, event):
        return self.call(self.events.Publish, self.pb["events"].PublishRequest(event=event))

    @staticmethod
    def effects_of(effects, kind):
        return [getattr(e, kind) for e in effects if e.WhichOneof("kind") == kind]

    def get_conversation(self, conversation):
        return self.call(
            self.assignments.GetConversation,
            self.pb["assignments"].GetConversationRequest(workspace=self.ws, conversation=conversation),
        )

    def list_agents(self):
        return self.call(self.presence.ListAgents, self.pb["presence"].ListAgentsRequest(workspace=self.ws))

    # ---- the scenario ----------------------------------------------------------------------

    def run(self):
        m, adm, pre, ev, asg, cl = (self.pb[k] for k in ("model", "admin", "presence", "events", "assignments", "cluster"))
        S = grpc.StatusCode

        self.step = "Cluster.Status has a leader"
        status = self.leader_status(self.cluster, cl.StatusRequest())
        self.check(status.state_digest != "", f"empty state_digest: {status}")
        self.check(len(status.members) >= 1, f"no members: {status}")
        self.ok(
            f"node {status.node_id} is {status.role}, leader {status.leader_id} ({status.leader_api_addr}), "
            f"{len(status.members)} members, digest {status.state_digest[:12]}…"
        )

        self.step = "grpc.health.v1 Health.Check"
        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:
            print("skip   grpc.health.v1 (grpcio-health-checking not installed)")
        else:
            health = health_pb2_grpc.HealthStub(self.channel)
            for service in ("", "switchboard.v1.Assignments"):
                response = self.call(health.Check, health_pb2.HealthCheckRequest(service=service))
                self.check(
                    response.status == health_pb2.HealthCheckResponse.SERVING,
                    f"service {service!r}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}",
                )
            self.ok("'' and switchboard.v1.Assignments are SERVING")

        self.step = f"Admin.ConfigureWorkspace {self.ws}"
        written = self.call(
            self.admin.ConfigureWorkspace,
            adm.ConfigureWorkspaceRequest(workspace=self.ws, settings=m.WorkspaceSettings()),
        )
        self.check(written.log_index > 0, f"log_index {written.log_index}")
        self.workspace_index = written.log_index
        self.ok(f"log_index {written.log_index}")

        self.step = "Admin.UpsertAgent mary, john"
        for agent_id, name in (("mary", "Mary"), ("john", "John")):
            self.call(
                self.admin.UpsertAgent,
                adm.UpsertAgentRequest(
                    workspace=self.ws,
                    agent=m.Agent(id=agent_id, display_name=name, max_open=2, daily_limit=100),
                ),
            )
        self.ok()

        self.step = "Admin.UpsertTeam support (round robin, mary + john)"
        self.call(
            self.admin.UpsertTeam,
            adm.UpsertTeamRequest(
                workspace=self.ws,
                team=m.Team(id="support", members=["mary", "john"], strategy=m.STRATEGY_ROUND_ROBIN),
            ),
        )
        self.ok()

        self.step = "Admin.ConfigureWorkspace default_team support"
        self.call(
            self.admin.ConfigureWorkspace,
            adm.ConfigureWorkspaceRequest(workspace=self.ws, settings=m.WorkspaceSettings(default_team="support")),
        )
        config = self.call(self.admin.GetWorkspace, adm.GetWorkspaceRequest(workspace=self.ws))
        self.check(config.settings.default_team == "support", f"default_team {config.settings.default_team!r}")
        self.check([a.id for a in config.agents] == ["john", "mary"], f"agents {[a.id for a in config.agents]}")
        self.check(
            [(t.id, list(t.members), t.strategy) for t in config.teams]
            == [("support", ["mary", "john"], m.STRATEGY_ROUND_ROBIN)],
            f"teams {config.teams}",
        )
        self.ok("GetWorkspace shows it")

        self.step = "Presence.SetStatus ONLINE"
        for agent in ("mary", "john"):
            response = self.call(
                self.presence.SetStatus,
                pre.SetStatusRequest(workspace=self.ws, agent=agent, status=m.AGENT_STATUS_ONLINE),
            )
            self.check(response.log_index > 0, f"{agent}: log_index {response.log_index}")
        self.ok()

        self.step = "Presence.Heartbeat"
        beat = self.call(self.presence.Heartbeat, pre.HeartbeatRequest(workspace=self.ws, agent="mary"))
        self.check(
            beat.status == m.AGENT_STATUS_ONLINE,
            f"status {m.AgentStatus.Name(beat.status)}, expected AGENT_STATUS_ONLINE",
        )
        self.ok(f"status ONLINE, timeout_ms {beat.timeout_ms}")

        self.step = "Presence.ListAgents"
        agents = self.list_agents().agents
        listed = [(a.id, a.display_name, a.status, a.max_open, list(a.teams)) for a in agents]
        self.check(
            listed
            == [
                ("john", "John", m.AGENT_STATUS_ONLINE, 2, ["support"]),
                ("mary", "Mary", m.AGENT_STATUS_ONLINE, 2, ["support"]),
            ],
            f"agents {listed}",
        )
        self.ok("john, mary ONLINE in support")

        self.step = "Events.Publish conversation opened -> Assigned"
        published = self.publish(self.opened("c1"))
        assigned = self.effects_of(published.effects, "assigned")
        self.check(len(assigned) == 1, f"expected one Assigned effect, got {list(published.effects)}")
        a = assigned[0]
        self.check(a.agent in ("mary", "john"), f"assigned to {a.agent!r}")
        self.check(
            (a.conversation, a.team, a.agent_name, a.channel, a.contact)
            == ("c1", "support", {"mary": "Mary", "john": "John"}[a.agent], m.CHANNEL_WHATSAPP, "contact-c1"),
            f"Assigned effect {a}",
        )
        self.check(
            all(e.workspace == self.ws and e.log_index == published.log_index for e in published.effects),
            f"effects not stamped with workspace/log_index {published.log_index}: {list(published.effects)}",
        )
        self.assigned["c1"] = a.agent
        self.ok(f"c1 -> {a.agent} ({ev.AssignReason.Name(a.reason)}, {m.Strategy.Name(a.strategy)})")

        self.step = "Events.Publish same event_id again -> ALREADY_EXISTS"
        error = self.expect_error(
            self.events.Publish, ev.PublishRequest(event=self.opened("c1")), S.ALREADY_EXISTS, ["already processed"]
        )
        self.ok(repr(error.details()))

        self.step = "fill both agents to capacity (4 conversations)"
        for conversation in ("c2", "c3", "c4"):
            effects = self.publish(self.opened(conversation)).effects
            assigned = self.effects_of(effects, "assigned")
            self.check(len(assigned) == 1, f"{conversation}: expected one Assigned effect, got {list(effects)}")
            self.assigned[conversation] = assigned[0].agent
        per_agent = {agent: sorted(c for c, a in self.assigned.items() if a == agent) for agent in ("mary", "john")}
        self.check(all(len(c) == 2 for c in per_agent.values()), f"round robin gave {per_agent}")
        counts = {a.id: (a.open_count, sorted(a.open_conversations)) for a in self.list_agents().agents}
        self.check(
            counts == {agent: (2, convs) for agent, convs in per_agent.items()},
            f"ListAgents open counts {counts}, expected {per_agent}",
        )
        self.ok(f"mary {per_agent['mary']}, john {per_agent['john']}")

        self.step = "Events.Publish when everyone is full -> Queued"
        effects = self.publish(self.opened("c5")).effects
        self.check(not self.effects_of(effects, "assigned"), f"c5 was assigned: {list(effects)}")
        queued = self.effects_of(effects, "queued")
        self.check(len(queued) == 1, f"expected one Queued effect, got {list(effects)}")
        self.check(
            (queued[0].conversation, queued[0].team, queued[0].position) == ("c5", "support", 1),
            f"Queued effect {queued[0]}",
        )
        self.ok(f"position {queued[0].position}")

        self.step = "Assignments.GetConversation of the queued one"
        info = self.get_conversation("c5")
        self.check(
            info.state == m.CONVERSATION_STATE_QUEUED,
            f"state {m.ConversationState.Name(info.state)}, expected QUEUED",
        )
        self.check(info.HasField("queue") and info.queue.position == 1, f"queue {info.queue if info.HasField('queue') else None}")
        self.check((info.team, info.assignee) == ("support", ""), f"team {info.team!r}, assignee {info.assignee!r}")
        eta = f"{info.queue.eta_ms} ms" if info.queue.HasField("eta_ms") else "none"
        self.ok(f"QUEUED at position {info.queue.position}, eta {eta}")

        self.step = "Assignments.ListQueue support"
        listing = self.call(self.assignments.ListQueue, asg.ListQueueRequest(workspace=self.ws, team="support"))
        self.check(listing.depth == 1, f"depth {listing.depth}")
        self.check(
            [(e.position, e.conversation, e.channel) for e in listing.entries] == [(1, "c5", m.CHANNEL_WHATSAPP)],
            f"entries {list(listing.entries)}",
        )
        self.ok("depth 1: c5")

        self.step = "Assignments.Claim of an assigned conversation -> FAILED_PRECONDITION"
        other = "john" if self.assigned["c2"] == "mary" else "mary"
        error = self.expect_error(
            self.assignments.Claim,
            asg.ClaimRequest(workspace=self.ws, conversation="c2", agent=other),
            S.FAILED_PRECONDITION,
            ["c2"],
        )
        self.ok(repr(error.details()))

        self.step = "Assignments.Close frees an agent, who takes the queued conversation"
        freed = self.assigned["c1"]
        closed = self.call(self.assignments.Close, asg.CloseRequest(workspace=self.ws, conversation="c1"))
        closes = self.effects_of(closed.effects, "closed")
        self.check(
            [(c.conversation, c.agent) for c in closes] == [("c1", freed)], f"Closed effects {list(closed.effects)}"
        )
        takes = self.effects_of(closed.effects, "assigned")
        self.check(
            [(t.conversation, t.agent) for t in takes] == [("c5", freed)], f"Assigned effects {list(closed.effects)}"
        )
        info = self.get_conversation("c5")
        self.check(
            (info.state, info.assignee) == (m.CONVERSATION_STATE_ASSIGNED, freed),
            f"c5 is {m.ConversationState.Name(info.state)} with {info.assignee!r}, expected ASSIGNED to {freed}",
        )
        self.check(not info.HasField("queue"), f"c5 still has queue info {info.queue}")
        c1 = self.get_conversation("c1")
        self.check(
            (c1.state, c1.assignee, c1.last_agent) == (m.CONVERSATION_STATE_CLOSED, "", freed),
            f"c1 after close: {c1}",
        )
        depth = self.call(self.assignments.ListQueue, asg.ListQueueRequest(workspace=self.ws, team="support")).depth
        self.check(depth == 0, f"queue depth {depth} after the queued conversation was assigned")
        self.assigned["c5"] = freed
        del self.assigned["c1"]
        self.ok(f"c1 closed, c5 -> {freed}, queue empty")

        self.step = "Assignments.Close of a closed conversation -> FAILED_PRECONDITION"
        error = self.expect_error(
            self.assignments.Close, asg.CloseRequest(workspace=self.ws, conversation="c1"), S.FAILED_PRECONDITION
        )
        self.ok(repr(error.details()))

        self.step = "bad input: Presence.SetStatus of an unknown agent -> NOT_FOUND"
        error = self.expect_error(
            self.presence.SetStatus,
            pre.SetStatusRequest(workspace=self.ws, agent="nobody", status=m.AGENT_STATUS_ONLINE),
            S.NOT_FOUND,
            ["nobody"],
        )
        self.ok(repr(error.details()))

        self.step = "bad input: Events.Publish with an empty event_id -> INVALID_ARGUMENT"
        error = self.expect_error(
            self.events.Publish, ev.PublishRequest(event=self.opened("c-bad", event_id="")), S.INVALID_ARGUMENT, ["event_id"]
        )
        self.ok(repr(error.details()))

        self.step = "bad input: Admin.UpsertTeam with an unknown timezone -> INVALID_ARGUMENT"
        error = self.expect_error(
            self.admin.UpsertTeam,
            adm.UpsertTeamRequest(
                workspace=self.ws,
                team=m.Team(id="mars", members=["mary"], strategy=m.STRATEGY_ROUND_ROBIN, timezone="Mars/Olympus"),
            ),
            S.INVALID_ARGUMENT,
            ["timezone", "Mars/Olympus"],
        )
        self.ok(repr(error.details()))

        self.step = "bad input: Admin.UpsertTeam with inverted business hours -> INVALID_ARGUMENT"
        error = self.expect_error(
            self.admin.UpsertTeam,
            adm.UpsertTeamRequest(
                workspace=self.ws,
                team=m.Team(
                    id="inverted",
                    members=["mary"],
                    strategy=m.STRATEGY_ROUND_ROBIN,
                    business_hours=m.BusinessHours(
                        weekly=[m.OpeningInterval(weekday=0, open_minute=1080, close_minute=540)]
                    ),
                ),
            ),
            S.INVALID_ARGUMENT,
            ["business_hours"],
        )
        self.ok(repr(error.details()))

        self.step = "bad input: Assignments.Watch of an unknown workspace -> NOT_FOUND"
        ghost = self.ws + "-nowhere"
        watch = WatchThread(self.assignments, asg.WatchRequest(workspace=ghost))
        try:
            item = watch.next(WATCH_DEADLINE_S)
        finally:
            watch.cancel()
        self.check(isinstance(item, grpc.RpcError), f"expected the stream to fail, got {item}")
        self.check(item.code() == S.NOT_FOUND, f"expected NOT_FOUND, got {describe(item)}")
        self.check(ghost in (item.details() or ""), f"{item.details()!r} does not mention {ghost!r}")
        self.ok(repr(item.details()))

        self.step = "Assignments.Watch sees the Assigned effect of a new conversation"
        # Free a seat so that the next conversation is assigned at once.
        freed = self.assigned.pop("c2")
        self.call(self.assignments.Close, asg.CloseRequest(workspace=self.ws, conversation="c2"))
        watch = WatchThread(self.assignments, asg.WatchRequest(workspace=self.ws))
        try:
            # The first message (a progress tick, sent about once a second while nothing matches)
            # proves the stream is subscribed before we publish.
            first = watch.next(WATCH_DEADLINE_S)
            self.check(first is not None, f"no message on the watch within {WATCH_DEADLINE_S} s")
            if isinstance(first, grpc.RpcError):
                raise StepFailed(f"watch failed: {describe(first)}")
            published = self.publish(self.opened("c6"))
            self.check(
                [(a.conversation, a.agent) for a in self.effects_of(published.effects, "assigned")] == [("c6", freed)],
                f"c6 publish effects {list(published.effects)}, expected Assigned to {freed}",
            )
            self.assigned["c6"] = freed
            seen = watch.wait_for_assigned("c6", WATCH_DEADLINE_S)
            self.check(seen is not None, f"no Assigned effect for c6 within {WATCH_DEADLINE_S} s; saw {watch.summary()}")
            self.check(
                (seen.assigned.agent, seen.workspace, seen.log_index) == (freed, self.ws, published.log_index),
                f"watched effect {seen}, expected agent {freed} at log_index {published.log_index}",
            )
        finally:
            watch.cancel()
        self.ok(f"c6 -> {freed} at log_index {seen.log_index}")

        self.step = "Assignments.Watch from the workspace's first index replays its history"
        watch = WatchThread(self.assignments, asg.WatchRequest(workspace=self.ws, from_index=self.workspace_index))
        try:
            replayed = {}
            deadline = time.monotonic() + WATCH_DEADLINE_S
            while "c6" not in replayed:
                item = watch.next(max(0.0, deadline - time.monotonic()))
                self.check(item is not None, f"replay stalled; assignments seen {replayed}")
                if isinstance(item, grpc.RpcError):
                    if item.code() == S.OUT_OF_RANGE:
                        print(f"skip   replay: node no longer retains index {self.workspace_index}: {item.details()}")
                        break
                    raise StepFailed(f"watch failed: {describe(item)}")
                if item.HasField("effect") and item.effect.HasField("assigned"):
                    replayed[item.effect.assigned.conversation] = item.effect.assigned.agent
            else:
                expected = dict(self.assigned)
                expected["c1"] = self.assigned["c5"]  # c1 went to the agent that later took c5
                expected["c2"] = self.assigned["c6"]  # likewise c2 and c6
                self.check(replayed == expected, f"replayed {replayed}, expected {expected}")
                self.ok(f"{len(replayed)} assignments replayed from index {self.workspace_index}")
        finally:
            watch.cancel()

        self.step = "Cluster.Status on every given node"
        seen = []
        for address in self.addresses:
            with self.security.channel(address) as channel:
                stub = self.pb["cluster_grpc"].ClusterStub(channel)
                status = self.call(stub.Status, cl.StatusRequest())
            self.check(status.leader_id != 0, f"{address}: no leader known: {status}")
            self.check(len(status.state_digest) > 0, f"{address}: empty state_digest")
            self.check(
                status.last_log_index >= status.commit_index >= status.applied_index >= status.snapshot_index,
                f"{address}: inconsistent indexes {status}",
            )
            seen.append(f"{address} {status.role} applied {status.applied_index} digest {status.state_digest[:12]}…")
        self.ok(f"leader {status.leader_id}; " + "; ".join(seen))


def describe(error):
    return f"{error.code().name}: {error.details()!r}"


class WatchThread:
    """Reads a server stream on a background thread into a queue, so the test can wait on it
    with a deadline; cancel() ends the call."""

    def __init__(self, stub, request):
        self.call = stub.Watch(request)
        self.items = queue.Queue()
        self.history = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for event in self.call:
                self.items.put(event)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.items.put(error)

    def next(self, timeout):
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            return None
        self.history.append(item)
        return item

    def wait_for_assigned(self, conversation, timeout):
        deadline = time.monotonic() + timeout
        while True:
            item = self.next(max(0.0, deadline - time.monotonic()))
            if item is None:
                return None
            if isinstance(item, grpc.RpcError):
                raise StepFailed(f"watch failed: {describe(item)}")
            if item.HasField("effect") and item.effect.assigned.conversation == conversation:
                return item.effect

    def summary(self):
        kinds = []
        for item in self.history:
            if isinstance(item, grpc.RpcError):
                kinds.append(describe(item))
            elif item.HasField("effect"):
                kinds.append(f"effect {item.effect.WhichOneof('kind')}@{item.effect.log_index}")
            else:
                kinds.append(item.WhichOneof("event"))
        return kinds

    def cancel(self):
        self.call.cancel()
        self.thread.join(timeout=5)


def main(argv):
    security, addresses = security_args(argv[1:])
    if not addresses or any(a.startswith("-") for a in addresses):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="switchboard-pb-") as out_dir:
        pb = generate_stubs(out_dir)
        address, channel = connect(addresses, security)
        scenario = Scenario(pb, channel, addresses, security)
        print(f"workspace {scenario.ws} via {address}", flush=True)
        started = time.monotonic()
        try:
            scenario.run()
        except Exception as failure:  # a failed step, or a crash of the client
            return scenario.failed(failure, "client")
        finally:
            channel.close()
    print(f"scenario took {time.monotonic() - started:.1f} s")
    print(f"{scenario.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
