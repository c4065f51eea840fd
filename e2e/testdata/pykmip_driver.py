#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Drive a KMIP server with PyKMIP's ProxyKmipClient (a client we did not write).

usage: pykmip_driver.py [--kmip-version 1.0|1.1|1.2|1.3|1.4] [--no-verify-hostname]
                        [--debug] OP [ARGS...] [OP [ARGS...] ...]

Connection settings come from the environment:
  KMIP_HOST, KMIP_PORT       server address (required)
  KMIP_CA                    PEM CA that signed the server certificate (required)
  KMIP_CLIENT_CERT/_KEY      PEM client certificate and key (mutual TLS)
  KMIP_SERVER_NAME           optional: name checked against the server cert
                             (default KMIP_HOST; an IP is matched against IP SANs)
TLS: TLS 1.2 or newer, server cert verified against KMIP_CA, and its SAN
checked against KMIP_SERVER_NAME/KMIP_HOST unless --no-verify-hostname.
One invocation = one TLS connection: open, run all OPs in order, close.

Operations (each prints one JSON line on stdout):
  register HEXKEY [NAME]   Register raw AES key (32 bytes = AES-256) -> id
                           (without NAME PyKMIP sends Name "Symmetric Key")
  create [NAME]            Create AES-256 key on the server -> id
  activate ID | revoke ID | destroy ID              -> null
                           (revoke reason: CESSATION_OF_OPERATION)
  get ID                   -> hex of the key bytes
  state ID                 Get Attributes(ID, ["State"]) -> e.g. "ACTIVE"
  attrs ID                 Get Attributes(ID) -> {name: str(value)}
  attrlist ID              Get Attribute List(ID) -> [names]
  locate-name NAME         Locate by Name -> [ids]
  locate-state STATE       Locate by State (ACTIVE, PRE_ACTIVE, ...) -> [ids]
  encrypt ID HEXDATA       AES-CBC + PKCS5 via ProxyKmipClient; server makes the
                           IV -> {"data": hex, "iv": hex}
  decrypt ID HEXDATA HEXIV AES-CBC + PKCS5 -> {"data": hex}
  encrypt-gcm ID HEXDATA [HEXAAD]          AES-GCM, 16-byte tag; needs
                           --kmip-version 1.4 -> {"data","iv","tag"}
  decrypt-gcm ID HEXDATA HEXIV HEXTAG [HEXAAD]   -> {"data": hex}
  query                    Query operations/objects/server info -> dict
  discover                 Discover Versions -> ["1.2", ...]
An argument equal to an operation name starts the next operation. An ID
argument "@" means the id returned by the last register/create of this run.

Output: {"op":..,"ok":true,"result":..} or {"op":..,"ok":false,"status":..,
"reason":"ITEM_NOT_FOUND"|..,"message":..} (KMIP failure) or
{"op":..,"ok":false,"error":..} (anything else).
Exit: 0 all ok, 1 some op failed, 2 connection failure ("op":"connect"),
3 usage error.
"""
import argparse
import enum
import json
import logging
import os
import ssl
import sys
import warnings

try:
    import kmip  # noqa: F401
except ImportError:  # e.g. a pyenv python3 first on PATH: use Debian's python
    if os.path.exists("/usr/bin/python3") and not os.environ.get("_PYKMIP_DRIVER_REEXEC"):
        os.environ["_PYKMIP_DRIVER_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    raise

warnings.simplefilter("ignore")  # PyKMIP/SQLAlchemy/ssl deprecation noise
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
from kmip.core import enums, exceptions as core_exc  # noqa: E402
from kmip.core.factories.attributes import AttributeFactory  # noqa: E402
from kmip.core.attributes import CryptographicParameters  # noqa: E402
from kmip.core.messages import payloads  # noqa: E402
from kmip.pie import exceptions as pie_exc, objects  # noqa: E402
from kmip.pie.client import ProxyKmipClient  # noqa: E402

VERSIONS = {"1.0": enums.KMIPVersion.KMIP_1_0, "1.1": enums.KMIPVersion.KMIP_1_1,
            "1.2": enums.KMIPVersion.KMIP_1_2, "1.3": enums.KMIPVersion.KMIP_1_3,
            "1.4": enums.KMIPVersion.KMIP_1_4}
AES = enums.CryptographicAlgorithm.AES
CBC = {"cryptographic_algorithm": AES, "block_cipher_mode": enums.BlockCipherMode.CBC,
       "padding_method": enums.PaddingMethod.PKCS5}
attr_factory = AttributeFactory()


def plain(value):
    """PyKMIP attribute value -> short string (enum names, hex for bytes)."""
    if hasattr(value, "name_value"):  # Name structure
        return str(value.name_value.value)
    v = value if isinstance(value, enum.Enum) else getattr(value, "value", value)
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return str([plain(x) for x in v])
    return str(v)


# ---- operations: each takes (client, *args) and returns a JSON-able result ----

def op_register(c, hexkey, name=None):
    key = bytes.fromhex(hexkey)
    masks = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]
    kw = {"name": name} if name else {}
    return c.register(objects.SymmetricKey(AES, len(key) * 8, key, masks=masks, **kw))


def op_create(c, name=None):
    return c.create(AES, 256, name=name)


def op_revoke(c, uid):
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)


def op_get(c, uid):
    return bytes(c.get(uid).value).hex()


def op_state(c, uid):
    _, attrs = c.get_attributes(uid, ["State"])
    for a in attrs:
        if a.attribute_name.value == "State":
            return plain(a.attribute_value)
    raise RuntimeError("no State attribute in response: %r" % attrs)


def op_attrs(c, uid):
    out = {}
    for a in c.get_attributes(uid)[1]:
        name, val = a.attribute_name.value, plain(a.attribute_value)
        out[name] = val if name not in out else str([out[name], val])
    return out


def op_locate(c, attr_type, value):
    return list(c.locate(attributes=[attr_factory.create_attribute(attr_type, value)]))


def op_encrypt(c, uid, hexdata):
    data, iv = c.encrypt(bytes.fromhex(hexdata), uid=uid, cryptographic_parameters=CBC)
    return {"data": data.hex(), "iv": iv.hex() if iv else None}


def op_decrypt(c, uid, hexdata, hexiv):
    data = c.decrypt(bytes.fromhex(hexdata), uid=uid, cryptographic_parameters=CBC,
                     iv_counter_nonce=bytes.fromhex(hexiv))
    return {"data": data.hex()}


def gcm_params():
    return CryptographicParameters(cryptographic_algorithm=AES, tag_length=16,
                                   block_cipher_mode=enums.BlockCipherMode.GCM)


def need_14(c):
    # PyKMIP only encodes AAD / decodes the tag when speaking KMIP 1.4.
    if c.kmip_version != enums.KMIPVersion.KMIP_1_4:
        raise RuntimeError("GCM needs --kmip-version 1.4 (tag/AAD fields are KMIP 1.4)")


def op_encrypt_gcm(c, uid, hexdata, hexaad=None):
    need_14(c)
    req = payloads.EncryptRequestPayload(
        unique_identifier=uid, data=bytes.fromhex(hexdata), cryptographic_parameters=gcm_params(),
        auth_additional_data=bytes.fromhex(hexaad) if hexaad else None)
    resp = c.proxy.send_request_payload(enums.Operation.ENCRYPT, req)
    return {"data": resp.data.hex(), "iv": (resp.iv_counter_nonce or b"").hex(),
            "tag": (resp.auth_tag or b"").hex()}


def op_decrypt_gcm(c, uid, hexdata, hexiv, hextag, hexaad=None):
    need_14(c)
    req = payloads.DecryptRequestPayload(
        unique_identifier=uid, data=bytes.fromhex(hexdata), cryptographic_parameters=gcm_params(),
        iv_counter_nonce=bytes.fromhex(hexiv), auth_tag=bytes.fromhex(hextag),
        auth_additional_data=bytes.fromhex(hexaad) if hexaad else None)
    return {"data": c.proxy.send_request_payload(enums.Operation.DECRYPT, req).data.hex()}


def op_query(c):
    # ProxyKmipClient has no query/discover; KMIPProxy's helpers crash on a
    # failed result, so send the payloads directly (raises KmipError instead).
    q = enums.QueryFunction
    r = c.proxy.send_request_payload(enums.Operation.QUERY, payloads.QueryRequestPayload(
        query_functions=[q.QUERY_OPERATIONS, q.QUERY_OBJECTS, q.QUERY_SERVER_INFORMATION]))
    return {"operations": [plain(o) for o in r.operations or []],
            "object_types": [plain(o) for o in r.object_types or []],
            "vendor_identification": r.vendor_identification,
            "server_information": None if r.server_information is None
            else str(r.server_information)}


def op_discover(c):
    r = c.proxy.send_request_payload(enums.Operation.DISCOVER_VERSIONS,
                                     payloads.DiscoverVersionsRequestPayload())
    return ["%d.%d" % (v.major, v.minor) for v in r.protocol_versions or []]


OPS = {  # name: (function, min args, max args)
    "register": (op_register, 1, 2),
    "create": (op_create, 0, 1),
    "activate": (lambda c, uid: c.activate(uid), 1, 1),
    "revoke": (op_revoke, 1, 1),
    "destroy": (lambda c, uid: c.destroy(uid), 1, 1),
    "get": (op_get, 1, 1),
    "state": (op_state, 1, 1),
    "attrs": (op_attrs, 1, 1),
    "attrlist": (lambda c, uid: list(c.get_attribute_list(uid)), 1, 1),
    "locate-name": (lambda c, n: op_locate(c, enums.AttributeType.NAME, n), 1, 1),
    "locate-state": (lambda c, s: op_locate(c, enums.AttributeType.STATE,
                                            enums.State[s.upper()]), 1, 1),
    "encrypt": (op_encrypt, 2, 2),
    "decrypt": (op_decrypt, 3, 3),
    "encrypt-gcm": (op_encrypt_gcm, 2, 3),
    "decrypt-gcm": (op_decrypt_gcm, 4, 5),
    "query": (op_query, 0, 0),
    "discover": (op_discover, 0, 0),
}


def split_ops(argv):
    """['register','ab','n','get','1'] -> [('register',['ab','n']), ('get',['1'])]"""
    ops = []
    for tok in argv:
        if tok in OPS:
            ops.append((tok, []))
        elif ops:
            ops[-1][1].append(tok)
        else:
            raise ValueError("unknown operation %r" % tok)
    for name, args in ops:
        lo, hi = OPS[name][1:]
        if not lo <= len(args) <= hi:
            raise ValueError("%s takes %d..%d arguments, got %r" % (name, lo, hi, args))
    return ops


def failure(op, e):
    if isinstance(e, pie_exc.KmipOperationFailure):
        st, rs, msg = e.status, e.reason, e.message
    elif isinstance(e, core_exc.KmipError):  # from proxy.send_request_payload
        st, rs, msg = e.status, e.reason, str(e)
    else:
        return {"op": op, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    return {"op": op, "ok": False, "status": getattr(st, "name", str(st)),
            "reason": getattr(rs, "name", None if rs is None else str(rs)), "message": msg}


def connect(args):
    env = os.environ
    host, port, ca = env.get("KMIP_HOST"), env.get("KMIP_PORT"), env.get("KMIP_CA")
    if not (host and port and ca):
        raise ValueError("KMIP_HOST, KMIP_PORT and KMIP_CA must be set")
    cert, key = env.get("KMIP_CLIENT_CERT"), env.get("KMIP_CLIENT_KEY")
    # config= names a section no pykmip.conf has, so ~/.pykmip or /etc/pykmip
    # files can never inject settings (e.g. username/password credentials).
    client = ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                             kmip_version=VERSIONS[args.kmip_version],
                             config="pykmip-driver-ignores-config-files")
    # PyKMIP 0.10's KMIPProxy uses ssl.wrap_socket(): no SNI, no hostname check,
    # no TLS floor. Replace its socket factory with a modern SSLContext.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = not args.no_verify_hostname
    ctx.load_verify_locations(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    proxy, server_name = client.proxy, env.get("KMIP_SERVER_NAME") or host

    def create_socket(sock):
        proxy.socket = ctx.wrap_socket(sock, server_hostname=server_name)
        proxy.socket.settimeout(proxy.timeout)
    proxy._create_socket = create_socket
    client.open()
    return client


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage=argparse.SUPPRESS)
    ap.add_argument("--kmip-version", choices=sorted(VERSIONS), default="1.2")
    ap.add_argument("--no-verify-hostname", action="store_true",
                    help="still verify the chain against KMIP_CA, skip the SAN check")
    ap.add_argument("--debug", action="store_true", help="PyKMIP logging to stderr")
    ap.add_argument("ops", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
    if not args.debug:
        logging.disable(logging.CRITICAL)
    try:
        ops = split_ops(args.ops)
        if not ops:
            raise ValueError("no operation given (see --help)")
    except ValueError as e:
        emit({"op": "usage", "ok": False, "error": str(e)})
        return 3
    try:
        client = connect(args)
    except Exception as e:  # noqa: BLE001 - any failure to connect is exit 2
        emit({"op": "connect", "ok": False, "error": "%s: %s" % (type(e).__name__, e)})
        return 2
    rc, last_id = 0, None
    try:
        for name, op_args in ops:
            try:
                op_args = [last_id if a == "@" and last_id else a for a in op_args]
                result = OPS[name][0](client, *op_args)
                if name in ("register", "create"):
                    last_id = result
                emit({"op": name, "ok": True, "result": result})
            except Exception as e:  # noqa: BLE001
                emit(failure(name, e))
                rc = 1
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
