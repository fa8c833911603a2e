"""A DOUBLE of Azure Key Vault and Entra ID for the azure-keyvault tests (no Azure emulator can
run here). It implements exactly the published REST calls the keyservice makes, nothing else:

  Entra ID   POST /{tenant}/oauth2/v2.0/token        (client_credentials, client secret)
  App Service managed identity  GET /msi/token?api-version=2019-08-01&resource=…
             (plain http on loopback, header x-identity-header, like the real local endpoint)
  Key Vault  GET  /keys/{name}/{version}             (version may be empty: the current one)
             GET  /keys/{name}/rotationpolicy
             POST /keys/{name}/{version}/wrapkey     {"alg":"RSA-OAEP-256","value":b64url}
             POST /keys/{name}/{version}/unwrapkey
  Every Key Vault request without a valid bearer token gets the real 401 challenge first:
  WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
  resource="https://vault.azure.net".

RSA-OAEP-256 is real (the `cryptography` package: OAEP, MGF1-SHA256, SHA-256, no label).
TLS is real too: a test CA and a server certificate for veil-test.vault.azure.net and
login.microsoftonline.com are generated at start; the CA is written to argv[2] for the client
to trust (SSL_CERT_FILE). The client reaches the double through its HTTPS proxy (HTTPS_PROXY,
the standard variable): this process also answers CONNECT, and tunnels ONLY those two names
to its own TLS port (anything else gets 403), so nothing leaves the machine.

Usage: keyvault_double.py CONFIG.json CA_OUT.pem ; prints {"proxy":P,"msi":M} when ready.
"""
import base64
import datetime
import http.server
import json
import os
import secrets
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VAULT_HOST = "veil-test.vault.azure.net"
LOGIN_HOST = "login.microsoftonline.com"
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

cfg = json.load(open(sys.argv[1]))
ca_out = sys.argv[2]
tenant = cfg["tenant"]
# client_id -> {"secret": str, "allowed": bool}
clients = cfg["clients"]
tokens = {}  # access token -> allowed (RBAC role on the key)
lock = threading.Lock()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# Keys: name -> {"versions": {ver: private_key}, "current": ver, attrs...}
keys = {}
for k in cfg["keys"]:
    ver = secrets.token_hex(16)
    priv = rsa.generate_private_key(public_exponent=65537, key_size=k.get("size", 2048))
    now = int(time.time())
    keys[k["name"]] = {
        "versions": {ver: priv},
        "current": ver,
        "enabled": k.get("enabled", True),
        "exp": (now + int(k["exp_days"]) * 86400) if k.get("exp_days") is not None else None,
        "rotate": k.get("rotate", False),
        "created": now,
    }


# Test observability of the double only: each key's private part, so a test can check on its
# own that a wrapped root really is RSA-OAEP-256 under that key.
if cfg.get("dump_dir"):
    for name, k in keys.items():
        with open(os.path.join(cfg["dump_dir"], f"{name}.pem"), "wb") as f:
            f.write(k["versions"][k["current"]].private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))


def key_bundle(name, ver):
    k = keys[name]
    pub = k["versions"][ver].public_key().public_numbers()
    n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
    e = pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")
    attrs = {"enabled": k["enabled"], "created": k["created"], "updated": k["created"],
             "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
    if k["exp"] is not None:
        attrs["exp"] = k["exp"]
    return {"key": {"kid": f"https://{VAULT_HOST}/keys/{name}/{ver}", "kty": "RSA",
                    "key_ops": ["wrapKey", "unwrapKey"], "n": b64u(n), "e": b64u(e)},
            "attributes": attrs}


def make_tls():
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil test CA (Key Vault double)")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    srv = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, VAULT_HOST)]))
           .issuer_name(ca_name).public_key(srv_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(VAULT_HOST), x509.DNSName(LOGIN_HOST)]), critical=False)
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    with open(ca_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    d = tempfile.mkdtemp()
    cert_path, key_path = os.path.join(d, "srv.pem"), os.path.join(d, "srv.key")
    with open(cert_path, "wb") as f:
        f.write(srv.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(srv_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def log(*a):
    print("double:", *a, file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log(self.command, self.path.split("?")[0])

    def send_json(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def host(self):
        return (self.headers.get("Host") or "").split(":")[0]

    # --- Entra ID ---
    def token_endpoint(self):
        form = urllib.parse.parse_qs(self.body().decode())
        get = lambda k: (form.get(k) or [""])[0]
        if self.path.split("?")[0] != f"/{tenant}/oauth2/v2.0/token":
            return self.send_json(400, {"error": "invalid_request", "error_codes": [90002],
                                        "error_description": f"AADSTS90002: Tenant not found."})
        c = clients.get(get("client_id"))
        # Client credentials: a client secret, or a client assertion (workload identity: the
        # federated Kubernetes token; the double compares it with the one it was given).
        jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        if get("client_assertion_type") == jwt_bearer:
            authenticated = c is not None and c.get("assertion") and get("client_assertion") == c["assertion"]
        else:
            authenticated = c is not None and get("client_secret") == c["secret"]
        if get("grant_type") != "client_credentials" or not authenticated:
            return self.send_json(401, {"error": "invalid_client", "error_codes": [7000215],
                                        "error_description": "AADSTS7000215: Invalid client secret provided."})
        if get("scope") != "https://vault.azure.net/.default":
            return self.send_json(400, {"error": "invalid_scope", "error_codes": [70011],
                                        "error_description": "AADSTS70011: The provided value for the input parameter 'scope' is not valid."})
        tok = secrets.token_urlsafe(32)
        with lock:
            tokens[tok] = c["allowed"]
        self.send_json(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                             "access_token": tok})

    # --- Key Vault ---
    def challenge(self):
        self.send_json(401, {"error": {"code": "Unauthorized",
                                       "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                       [("WWW-Authenticate",
                         f'Bearer authorization="https://{LOGIN_HOST}/{tenant}", resource="https://vault.azure.net"')])

    def vault(self, method):
        auth = self.headers.get("Authorization") or ""
        tok = auth[7:] if auth.startswith("Bearer ") else None
        body = self.body() if method == "POST" else b""
        with lock:
            allowed = tokens.get(tok)
        if allowed is None:
            return self.challenge()
        if not allowed:
            return self.send_json(403, {"error": {"code": "Forbidden",
                                                  "message": "Caller is not authorized to perform action on resource.",
                                                  "innererror": {"code": "ForbiddenByRbac"}}})
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if not q.get("api-version"):
            return self.send_json(400, {"error": {"code": "BadParameter", "message": "api-version is required"}})
        parts = url.path.strip("/").split("/")
        parts += [""] * (4 - len(parts))
        _, name, ver, op = parts[0], parts[1], parts[2], parts[3]
        if parts[0] != "keys" or name not in keys:
            return self.send_json(404, {"error": {"code": "KeyNotFound",
                                                  "message": f"A key with (name/id) {name} was not found in this key vault."}})
        k = keys[name]
        if method == "GET" and ver == "rotationpolicy":
            actions = [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]
            if k["rotate"]:
                actions.append({"trigger": {"timeAfterCreate": "P18M"}, "action": {"type": "Rotate"}})
            return self.send_json(200, {"id": f"https://{VAULT_HOST}/keys/{name}/rotationpolicy",
                                        "lifetimeActions": actions,
                                        "attributes": {"expiryTime": "P2Y", "created": k["created"], "updated": k["created"]}})
        ver = ver or k["current"]
        if ver not in k["versions"]:
            return self.send_json(404, {"error": {"code": "KeyNotFound",
                                                  "message": f"A key with (name/id) {name}/{ver} was not found in this key vault."}})
        if method == "GET" and op == "":
            return self.send_json(200, key_bundle(name, ver))
        if method == "POST" and op in ("wrapkey", "unwrapkey"):
            if not k["enabled"]:
                return self.send_json(403, {"error": {"code": "Forbidden", "message": "Operation is not allowed on a disabled key."}})
            req = json.loads(body or b"{}")
            if req.get("alg") != "RSA-OAEP-256" or "value" not in req:
                return self.send_json(400, {"error": {"code": "BadParameter", "message": "Invalid algorithm or value."}})
            priv = k["versions"][ver]
            data = unb64u(req["value"])
            if op == "wrapkey":
                out = priv.public_key().encrypt(data, OAEP)
            else:
                try:
                    out = priv.decrypt(data, OAEP)
                except ValueError:
                    return self.send_json(400, {"error": {"code": "BadParameter", "message": "The parameter is incorrect."}})
            return self.send_json(200, {"kid": f"https://{VAULT_HOST}/keys/{name}/{ver}", "value": b64u(out)})
        self.send_json(405, {"error": {"code": "MethodNotAllowed", "message": "not supported by the double"}})

    def do_GET(self):
        if self.host() == VAULT_HOST:
            return self.vault("GET")
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        if self.host() == LOGIN_HOST:
            return self.token_endpoint()
        if self.host() == VAULT_HOST:
            return self.vault("POST")
        self.send_json(404, {"error": "not found"})


class MsiHandler(Handler):
    """The App Service managed identity endpoint (plain http on loopback, as in App Service)."""

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path != "/msi/token" or q.get("api-version") != ["2019-08-01"]:
            return self.send_json(400, {"error": "invalid_request"})
        if self.headers.get("x-identity-header") != cfg["identity_header"]:
            return self.send_json(401, {"error": "unauthorized", "error_description": "bad x-identity-header"})
        if q.get("resource") != ["https://vault.azure.net"]:
            return self.send_json(400, {"error": "invalid_resource"})
        tok = secrets.token_urlsafe(32)
        with lock:
            tokens[tok] = cfg.get("msi_allowed", True)
        self.send_json(200, {"access_token": tok, "expires_on": str(int(time.time()) + 3600),
                             "resource": "https://vault.azure.net", "token_type": "Bearer",
                             "client_id": "msi-client"})


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


tls_ctx = make_tls()
tls_srv = Threaded(("127.0.0.1", 0), Handler)
tls_srv.socket = tls_ctx.wrap_socket(tls_srv.socket, server_side=True)
msi_srv = Threaded(("127.0.0.1", 0), MsiHandler)
tls_port = tls_srv.server_address[1]


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def proxy_conn(c):
    f = c.makefile("rb")
    line = f.readline().decode("latin1")
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
    parts = line.split()
    if len(parts) < 2 or parts[0] != "CONNECT" or parts[1].rsplit(":", 1)[0] not in (VAULT_HOST, LOGIN_HOST):
        log("proxy refused", line.strip())
        c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        c.close()
        return
    log("proxy", line.strip())
    up = socket.create_connection(("127.0.0.1", tls_port))
    c.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    threading.Thread(target=pipe, args=(c, up), daemon=True).start()
    pipe(up, c)


proxy = socket.socket()
proxy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
proxy.bind(("127.0.0.1", 0))
proxy.listen(64)

threading.Thread(target=tls_srv.serve_forever, daemon=True).start()
threading.Thread(target=msi_srv.serve_forever, daemon=True).start()
print(json.dumps({"proxy": proxy.getsockname()[1], "msi": msi_srv.server_address[1]}), flush=True)
while True:
    conn, _ = proxy.accept()
    threading.Thread(target=proxy_conn, args=(conn,), daemon=True).start()
