#!/bin/sh
# Writes this pod's node configuration and starts the node (`render.sh run`, the container's
# command), or writes it again and has the running node reload it (`render.sh reload`: tokens
# and certificates, on SIGHUP). Why a script: a node's id and advertised addresses differ per
# pod and derive from its ordinal, and `[[peers]]` has no environment override. The id is
# looked up by the pod's ordinal in node-ids rather than computed from it, so that a pod
# whose disk was lost can rejoin under a new id (deploy/README.md, "Replace a dead node").
set -eu

config_dir=${SWITCHBOARD_CONFIG_DIR:-/etc/switchboard}
rendered=${SWITCHBOARD_RENDERED_CONFIG:-/run/switchboard/node.toml}
service=${SWITCHBOARD_PEER_SERVICE:-switchboard-peers}
domain=${SWITCHBOARD_CLUSTER_DOMAIN:-cluster.local}
namespace=${POD_NAMESPACE:?POD_NAMESPACE must name the pod namespace}
pod=${POD_NAME:?POD_NAME must be the pod name}
statefulset=${pod%-*}
ordinal=${pod##*-}
case $ordinal in
  '' | *[!0-9]*)
    echo "render.sh: the pod name $pod does not end with an ordinal" >&2
    exit 1
    ;;
esac

id=""
self=""
peers=""
i=0
while read -r node_id _; do
  case $node_id in
    '' | '#'*) continue ;;
    *[!0-9]*)
      echo "render.sh: $config_dir/node-ids: $node_id is not a node id" >&2
      exit 1
      ;;
  esac
  host="$statefulset-$i.$service.$namespace.svc.$domain"
  if [ "$i" -eq "$ordinal" ]; then
    id=$node_id
    self=$host
  fi
  peers="$peers
[[peers]]
id = $node_id
raft_addr = \"$host:7201\"
api_addr = \"$host:7101\"
"
  i=$((i + 1))
done <"$config_dir/node-ids"
if [ -z "$id" ]; then
  echo "render.sh: $config_dir/node-ids names no id for ordinal $ordinal" >&2
  exit 1
fi

# Top-level keys first: TOML puts every key after a [table] header into that table.
{
  echo "# Written by render.sh for pod $pod from $config_dir/node.toml and node-ids."
  echo "id = $id"
  echo "advertise_api = \"$self:7101\""
  echo "advertise_raft = \"$self:7201\""
  cat "$config_dir/node.toml"
  echo "$peers"
} >"$rendered.tmp"
mv "$rendered.tmp" "$rendered"

case ${1:-run} in
  run) exec switchboard node --config "$rendered" ;;
  reload) kill -HUP 1 ;;
  render) ;;
  *)
    echo "render.sh: unknown command ${1}; use run, reload or render" >&2
    exit 1
    ;;
esac
