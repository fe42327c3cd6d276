#!/bin/sh
# Wait until cloud-init has finished (first-boot package installs, users, runcmd...) before provisioning,
# so provisioners do not race apt locks or half-written config. Prints the final status.
#
#   BAKER_CLOUD_INIT_TIMEOUT   seconds to wait (default 1800)
#   BAKER_CLOUD_INIT_STRICT    1: fail on status "error" too (default 0: warn, since a failed optional
#                              module - say, an unreachable NTP server - rarely matters for a build)
#   BAKER_CLOUD_INIT_RESULT    where cloud-init reports its finished boot (default
#                              /run/cloud-init/result.json; tests point it elsewhere)
#
# Exit status of `cloud-init status`: 0 done/disabled; 1 error (22.4) or critical failure (23.4+);
# 2 "degraded"/recoverable errors (23.4+). Recoverable is treated as success with a warning.
set -u
timeout_s=${BAKER_CLOUD_INIT_TIMEOUT:-1800}
strict=${BAKER_CLOUD_INIT_STRICT:-0}

if ! command -v cloud-init >/dev/null 2>&1; then
  echo "wait-cloud-init: cloud-init is not installed; nothing to wait for"
  exit 0
fi

# Fast path: cloud-init writes result.json when its last stage is over (in /run: this boot only).
# Finished without errors or recoverable errors, there is nothing to wait for and no need to start
# `cloud-init status` - a Python start of seconds under emulation. Anything else: ask it.
result=${BAKER_CLOUD_INIT_RESULT:-/run/cloud-init/result.json}
if [ -f "$result" ] && grep -q -E '"errors": *\[ *\]' "$result" \
   && ! grep -q -E '"recoverable_errors": *\{ *($|[^} ])' "$result"; then
  echo "wait-cloud-init: status: done (no errors in $result)"
  exit 0
fi

# `status --wait` blocks without a limit; `timeout` (coreutils) bounds it, and we poll as a fallback
if command -v timeout >/dev/null 2>&1; then
  timeout "$timeout_s" cloud-init status --wait >/dev/null 2>&1
  rc=$?
  if [ "$rc" = 124 ]; then
    echo "wait-cloud-init: cloud-init still running after ${timeout_s}s" >&2
    cloud-init status --long 2>&1 | sed 's/^/  /' >&2
    exit 1
  fi
else
  waited=0
  while cloud-init status 2>/dev/null | grep -q -E 'status: (running|not run|not started)'; do
    [ "$waited" -ge "$timeout_s" ] && { echo "wait-cloud-init: timed out" >&2; exit 1; }
    sleep 2
    waited=$((waited + 2))
  done
fi

out=$(cloud-init status --long 2>&1)
rc=$?
echo "$out" | sed 's/^/wait-cloud-init: /'
status=$(echo "$out" | sed -n 's/^status: *//p' | head -n 1)
case "$rc:$status" in
  0:*|*:done|*:disabled)
    exit 0 ;;
  2:*|*:degraded*)
    echo "wait-cloud-init: WARNING: cloud-init finished with recoverable errors (see above)" >&2
    exit 0 ;;
  *)
    if [ "$strict" = 1 ]; then
      echo "wait-cloud-init: cloud-init reported errors (status: ${status:-unknown})" >&2
      exit 1
    fi
    echo "wait-cloud-init: WARNING: cloud-init reported errors (status: ${status:-unknown});" \
         "continuing (BAKER_CLOUD_INIT_STRICT=1 makes this fatal)" >&2
    exit 0 ;;
esac
