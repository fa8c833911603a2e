#!/usr/bin/env bash
# The demo: start the stack (local key, in-memory state), send Moesif's sample event
# through Veil's collector route, and show what left the company. VEIL_FILTER=wasm (default)
# or native picks the shell Envoy loads Veil with (scripts/stack.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VEIL_LISTEN=${VEIL_LISTEN:-127.0.0.1:10000}
VEIL_UPSTREAM=${VEIL_UPSTREAM:-127.0.0.1:18080}
RUN=${VEIL_RUN_DIR:-.run}

scripts/setup.sh
scripts/stack.sh up

echo "==> sending fixtures/moesif/event.json to http://$VEIL_LISTEN/collector/v1/events"
curl -fsS -X DELETE "http://$VEIL_UPSTREAM/_recorded" >/dev/null
status=$(curl -sS -o "$RUN/demo-response.json" -w '%{http_code}' -X POST \
  -H 'content-type: application/json' --data-binary @fixtures/moesif/event.json \
  "http://$VEIL_LISTEN/collector/v1/events")
echo "==> Envoy answered $status: $(cat "$RUN/demo-response.json")"
curl -fsS "http://$VEIL_UPSTREAM/_recorded" | python3 -c '
import base64, json, sys
rec = json.load(sys.stdin)
if not rec:
    sys.exit("error: the upstream received nothing")
print("==> the upstream received", rec[-1]["method"], rec[-1]["path"])
json.dump(json.loads(base64.b64decode(rec[-1]["body_base64"])), open(sys.argv[1], "w"))
' "$RUN/demo-received.json"
echo
python3 scripts/show-side-by-side.py fixtures/moesif/event.json "$RUN/demo-received.json"
echo
echo "Field names, timestamps, verb, status, ids and the URI path stay readable; everything"
echo "else left as veil:v2:<kid>:<mode>:<ciphertext>."
echo
echo "==> searching the vendor in plaintext through Veil's management-API route:"
echo "    POST http://$VEIL_LISTEN/api/search/~/search/events  (term request.body.patient.email.raw = jane@example.com)"
curl -fsS -X POST -H 'content-type: application/json' \
  --data-binary @fixtures/moesif/search-request-plaintext.json \
  "http://$VEIL_LISTEN/api/search/~/search/events?from=-1y&to=now" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
hits = answer.get("hits", {}).get("hits", [])
print(f"==> {len(hits)} hit(s); the answer comes back decrypted:")
for h in hits[:1]:
    p = h["_source"]["request"]["body"]["patient"]
    print("    patient:", json.dumps({k: p[k] for k in ("name", "email", "ssn") if k in p}))
'
echo
echo "==> the relay: an echo through Veil Relay (docs/relay.md) with the veil-relay CLI"
bin="${CARGO_TARGET_DIR:-target}/${VEIL_PROFILE:-debug}"
# The client pins the relay's server key, taken out of band from the keyring (never from the
# relay's own /veil/keys through the hops it protects against): a hop that pairs with both
# sides is then refused at pairing (relay-server-auth-failed).
VEIL_KEYRING="$RUN/keyring.json" VEIL_LOCAL_KEK_FILE="$RUN/local-kek.key" KMS_PROVIDER=local \
  "$bin/veil-keyservice" relay-key show >"$RUN/relay-server-key" 2>/dev/null
echo "    veil-keyservice relay-key show > $RUN/relay-server-key   # the pin: $(cut -c1-24 "$RUN/relay-server-key")..."
echo "    veil-relay --url http://$VEIL_LISTEN/veil --server-key $RUN/relay-server-key -H 'x-app-user: jane' POST '/app/echo/orders?id=42' --data '{\"card\":\"4111 1111 1111 1111\"}'"
curl -fsS -X DELETE "http://$VEIL_UPSTREAM/_recorded" >/dev/null
"$bin/veil-relay" --url "http://$VEIL_LISTEN/veil" --server-key "$RUN/relay-server-key" -H 'x-app-user: jane' \
  POST '/app/echo/orders?id=42' --data '{"card":"4111 1111 1111 1111"}' >"$RUN/demo-relay.json"
python3 -c '
import base64, json, sys
echo = json.load(open(sys.argv[1]))
print("==> the client decoded the upstream answer:", echo["method"], echo["path"], "?" + (echo["query"] or ""),
      "body", base64.b64decode(echo["body_base64"]).decode())
' "$RUN/demo-relay.json"
curl -fsS "http://$VEIL_UPSTREAM/_recorded" | python3 -c '
import json, sys
rec = json.load(sys.stdin)[-1]
print("==> the upstream received the plaintext request:", rec["method"], rec["path"], "x-app-user:", rec["headers"].get("x-app-user"))
'
echo "    On the wire between the client and Envoy only ciphertext travels: the method, a path"
echo "    /veil/x/<sealed>, the x-veil-relay control header and sealed headers and body."
echo "    Plaintext to a relayed route is refused:"
echo "    curl http://$VEIL_LISTEN/app/echo  ->  $(curl -sS -o /dev/null -w '%{http_code}' "http://$VEIL_LISTEN/app/echo") relay-required"
echo
echo "The stack is still running:"
echo "  curl http://$VEIL_UPSTREAM/_recorded     # everything the vendor received"
echo "  make down                                   # stop it"
