#!/usr/bin/env bash
# Generates the Go gRPC stubs of the conformance client from the project's OWN proto/ files
# (never from Nomad's), into pb/ (gitignored), so that the plugin and this client share one
# definition and a difference from Nomad's wire format shows up as a decode failure here.
# The generators are the versions pinned by this module's go.mod (`tool` directives).
# go-plugin's own services (proto/plugin/) are not generated: go-plugin brings its own.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
protos="$(cd "$here/../../proto" && pwd)"
out="$here/pb"
bin="$here/.bin"
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler libprotobuf-dev" >&2; exit 1; }
inc=/usr/include
[ -f "$inc/google/protobuf/duration.proto" ] || { echo "$inc/google/protobuf/*.proto missing: apt-get install libprotobuf-dev" >&2; exit 1; }
mkdir -p "$bin"
(cd "$here" && go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)
rm -rf "$out" && mkdir -p "$out"
mod=nomad-driver-systemd/tests/nomad-client/pb
files=(hclspec/hcl_spec.proto structs/attribute.proto structs/recoverable_error.proto base/base.proto drivers/driver.proto)
maps=()
for f in "${files[@]}"; do
  d="$(dirname "$f")"
  maps+=("--go_opt=M$f=$mod/$d" "--go-grpc_opt=M$f=$mod/$d")
done
protoc -I "$protos" -I "$inc" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "${maps[@]}" "${files[@]}"
