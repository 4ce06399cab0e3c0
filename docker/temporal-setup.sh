#!/bin/sh
# One-shot (temporalio/admin-tools): register the casework search attributes
# (workflows/search_attributes.py) once the server and the namespace answer.
# Idempotent: attributes already present are skipped, so it runs on every `up`.
set -eu
ns="${NAMESPACE:-default}"

until temporal operator namespace describe --namespace "$ns" >/dev/null 2>&1; do
  echo "waiting for Temporal at $TEMPORAL_ADDRESS and namespace $ns"
  sleep 2
done

for attr in CaseProcedure:Keyword CaseRegion:Keyword CaseStatus:Keyword SlaState:Keyword SlaDeadline:Datetime; do
  name="${attr%%:*}"
  type="${attr##*:}"
  until temporal operator search-attribute list --namespace "$ns" | grep -qw "$name"; do
    temporal operator search-attribute create --namespace "$ns" --name "$name" --type "$type" || sleep 2
  done
  echo "search attribute $name ($type) present"
done
