"""How long nats-server takes to store one atomic batch, by size and by batches in flight.

Starts its own nats-server (JetStream, `sync_interval: always`, as Switchboard runs it) on a
free port with a store in a temporary directory, makes a stream that allows atomic batches,
and prints one line per case: one-message publishes one at a time, then atomic batches of 1,
15 and 100 messages with 1, 4 and 16 batches in flight. Each line gives the batches and
messages stored per second and the p50/p99 time from a batch's first message to its ack.

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


async def measure(url: str) -> None:
    nc = await nats.connect(url)
    config = {"name": "BENCH", "subjects": ["bench.>"], "storage": "file", "allow_atomic": True}
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
