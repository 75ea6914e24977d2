"""How long nats-server takes to store one atomic batch, by size and by batches in flight.

Starts its own nats-server (JetStream, `sync_interval: always`, as Switchboard runs it) on a
free port with a store in a temporary directory, makes a stream that allows atomic batches,
and prints one line per case: one-message publishes one at a time, then atomic batches of 1,
15 and 100 messages with 1, 4 and 16 batches in flight. Each line gives the batches and
messages stored per second and the p50/p99 time from a batch's first message to its ack.
Last, fast-ingest batches (ADR-50, `allow_batched`, nats-server 2.14+: each message stored as
it arrives, the server acking every `flow` messages): messages per second and the time from a
message's send to the flow ack that covers it.

    target/pyenv/bin/python benches/jetstream_batches.py

(`bash tests/python/setup_env.sh` makes that environment, nats-py and nats-server included.)
The figures are in benches/README.md ("The gateway's batcher").
"""

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import nats

PAYLOAD = b"x" * 200
BATCHES = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


async def batches(nc, size: int, in_flight: int) -> None:
    slots = asyncio.Semaphore(in_flight)
    took: list[float] = []

    async def one(batch_id: str) -> None:
        started = time.perf_counter()
        for k in range(size):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(k + 1), "Nats-Msg-Id": f"{batch_id}-{k}"}
            if k + 1 == size:
                headers["Nats-Batch-Commit"] = "1"
                reply = await nc.request("bench.a", PAYLOAD, headers=headers, timeout=10)
                if b'"error"' in reply.data:
                    sys.exit(f"batch refused: {reply.data!r}")
            else:
                await nc.publish("bench.a", PAYLOAD, headers=headers)
        took.append((time.perf_counter() - started) * 1000)
        slots.release()

    started = time.perf_counter()
    tasks = []
    for b in range(BATCHES):
        await slots.acquire()
        tasks.append(asyncio.create_task(one(f"b{size}-{in_flight}-{b}")))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    took.sort()
    print(
        f"jetstream atomic: messages_per_batch={size} in_flight={in_flight} batches_per_s={BATCHES / seconds:.0f} "
        f"messages_per_s={BATCHES * size / seconds:.0f} p50_ms={percentile(took, 0.5):.2f} p99_ms={percentile(took, 0.99):.2f}"
    )


async def fast_ingest(nc, flow: int, count: int = 2_000) -> None:
    """One fast-ingest batch of `count` messages, at most two flows unacknowledged."""
    inbox = nc.new_inbox()
    events: asyncio.Queue = asyncio.Queue()

    async def received(message) -> None:
        await events.put((time.perf_counter(), message.data))

    await nc.subscribe(inbox, cb=received)
    await nc.subscribe(inbox + ".>", cb=received)
    sent: dict[int, float] = {}
    took: list[float] = []
    acked = 0

    def drain() -> None:
        nonlocal acked
        while not events.empty():
            at, data = events.get_nowait()
            reply = json.loads(data)
            if reply.get("type") == "ack":
                took.extend((at - sent[k]) * 1000 for k in range(acked + 1, reply["seq"] + 1) if k in sent)
                acked = max(acked, reply["seq"])
            elif "type" in reply or "error" in reply:
                sys.exit(f"fast batch failed: {reply}")

    started = time.perf_counter()
    for seq in range(1, count + 1):
        operation = 0 if seq == 1 else 1  # start, append
        sent[seq] = time.perf_counter()
        reply = f"{inbox}.{flow}.fail.{seq}.{operation}.$FI"
        await nc.publish("bench.f", PAYLOAD, reply=reply, headers={"Nats-Msg-Id": f"fast-{flow}-{seq}"})
        while acked + 2 * flow <= seq:
            if time.perf_counter() - started > 60:
                sys.exit(f"fast batch stalled at {acked} of {seq}")
            await asyncio.sleep(0)
            drain()
        drain()
    await nc.publish("bench.f", b"", reply=f"{inbox}.{flow}.fail.{count + 1}.3.$FI")  # end of batch
    while acked < count and time.perf_counter() - started < 60:
        await asyncio.sleep(0.001)
        drain()
    seconds = time.perf_counter() - started
    took.sort()
    print(
        f"jetstream fast_ingest: flow={flow} messages_per_s={count / seconds:.0f} "
        f"p50_ms={percentile(took, 0.5):.2f} p99_ms={percentile(took, 0.99):.2f}"
    )


async def measure(url: str) -> None:
    nc = await nats.connect(url)
    config = {"name": "BENCH", "subjects": ["bench.>"], "storage": "file", "allow_atomic": True, "allow_batched": True}
    reply = await nc.request("$JS.API.STREAM.CREATE.BENCH", json.dumps(config).encode(), timeout=10)
    if b'"error"' in reply.data:
        sys.exit(f"stream not created: {reply.data!r}")
    js = nc.jetstream()
    took = []
    for i in range(300):
        started = time.perf_counter()
        await js.publish("bench.a", PAYLOAD, headers={"Nats-Msg-Id": f"single-{i}"})
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    print(f"jetstream single: in_flight=1 p50_ms={percentile(took, 0.5):.2f} p99_ms={percentile(took, 0.99):.2f}")
    for size in (1, 15, 100):
        for in_flight in (1, 4, 16):
            await batches(nc, size, in_flight)
    for flow in (1, 10, 100):
        await fast_ingest(nc, flow)
    await nc.close()


def main() -> None:
    server = os.environ.get("SWITCHBOARD_NATS_SERVER") or str(pathlib.Path(sys.executable).parent / "nats-server")
    with tempfile.TemporaryDirectory() as store:
        port = free_port()
        conf = pathlib.Path(store) / "nats.conf"
        conf.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{store}/js", sync_interval: always }}\n')
        process = subprocess.Popen([server, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            asyncio.run(measure(f"nats://127.0.0.1:{port}"))
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
