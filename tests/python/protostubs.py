"""What the Python scenarios share: stubs generated from ../../proto at start-up, and a channel
to the first node that answers. The stubs come from the .proto files alone (grpc_tools.protoc
into a temporary directory), which is the point: any language can do the same."""

import collections
import importlib
import os
import sys
import time
import traceback

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
# The switchboard.v1 files with services (a _pb2_grpc module each); nats.proto has none.
SERVICE_FILES = ("model", "admin", "assignments", "cluster", "events", "presence")


# Deadline of each gRPC call a scenario makes.
RPC_TIMEOUT_S = 10.0


class StepFailed(Exception):
    pass


class Steps:
    """A scenario's steps: `self.step` names the one under way, `self.passed` counts the passed."""

    def failed(self, failure, who):
        """Reports the step that failed (`failure`: a StepFailed, or an exception that crashed
        `who`, whose traceback is printed first) and returns the exit status, 1."""
        if isinstance(failure, StepFailed):
            reason = str(failure)
        else:
            traceback.print_exception(failure)
            reason = f"the {who} crashed (above)"
        print(f"FAILED at step {self.passed + 1} ({self.step}): {reason}", file=sys.stderr)
        print(f"{self.passed} passed, 1 failed")
        return 1

    def ok(self, detail=""):
        self.passed += 1
        print(f"ok {self.passed:2d} {self.step}" + (f": {detail}" if detail else ""), flush=True)

    def check(self, condition, message):
        if not condition:
            raise StepFailed(message)

    def call(self, method, request):
        try:
            return method(request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            raise StepFailed(f"unexpected {error.code().name}: {error.details()!r}") from None


    def leader_status(self, cluster, status_request, wait_s=10.0):
        """Cluster.Status from `cluster` (a ClusterStub), polled until it names a leader or
        `wait_s` passed; the step fails if none is known by then."""
        deadline = time.monotonic() + wait_s
        while True:
            status = self.call(cluster.Status, status_request)
            if status.leader_id != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.check(status.leader_id != 0, f"no leader known: {status}")
        return status


def generate_stubs(out_dir):
    """Compiles every switchboard/v1/*.proto into out_dir and makes it importable. Returns the
    modules by file name (`admin`, `admin_grpc`, ..., `nats`)."""
    proto_dir = os.path.join(PROTO_ROOT, "switchboard", "v1")
    files = sorted(
        os.path.join("switchboard", "v1", name) for name in os.listdir(proto_dir) if name.endswith(".proto")
    )
    if not files:
        raise SystemExit(f"no .proto files in {proto_dir}")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed ({code}) on {files}")
    sys.path.insert(0, out_dir)
    modules = {}
    for name in SERVICE_FILES:
        modules[name] = importlib.import_module(f"switchboard.v1.{name}_pb2")
        modules[name + "_grpc"] = importlib.import_module(f"switchboard.v1.{name}_pb2_grpc")
    modules["nats"] = importlib.import_module("switchboard.v1.nats_pb2")
    return modules


class Security:
    """How to reach a secured cluster (README, "Who may call what"): the CA that signed the
    nodes' certificates, and bearer tokens, one for publishing events (role gateway) and one for
    everything else (role admin). All None: a plain cluster."""

    def __init__(self, ca_file=None, token=None, gateway_token=None):
        self.ca = open(ca_file, "rb").read() if ca_file else None
        self.token = token
        self.gateway_token = gateway_token or token

    def token_for(self, method):
        """The token to send with `method` (`/switchboard.v1.Events/Publish`, ...)."""
        if method.startswith("/switchboard.v1.Events/"):
            return self.gateway_token
        return self.token

    def channel(self, address):
        """A channel to `address`: TLS when a CA is given, every call carrying its token."""
        if self.ca is None:
            channel = grpc.insecure_channel(address)
        else:
            channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=self.ca))
        if self.token is None:
            return channel
        return grpc.intercept_channel(channel, _Authorization(self))


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _Authorization(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (the token chosen by its method)."""

    def __init__(self, security):
        self.security = security

    def _details(self, details):
        metadata = list(details.metadata or [])
        token = self.security.token_for(details.method)
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def security_args(argv):
    """Splits `--ca FILE`, `--token T` and `--gateway-token T` off `argv`: (Security, the rest)."""
    options, rest, i = {}, [], 0
    names = {"--ca": "ca_file", "--token": "token", "--gateway-token": "gateway_token"}
    while i < len(argv):
        if argv[i] in names and i + 1 < len(argv):
            options[names[argv[i]]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return Security(**options), rest


def connect(addresses, security=None):
    """A channel to the first address that answers (any node serves; followers forward writes)."""
    security = security or Security()
    errors = []
    for address in addresses:
        channel = security.channel(address)
        try:
            grpc.channel_ready_future(channel).result(timeout=5)
            return address, channel
        except grpc.FutureTimeoutError:
            errors.append(f"{address}: not reachable within 5 s")
            channel.close()
    raise SystemExit("no node answered: " + "; ".join(errors))
