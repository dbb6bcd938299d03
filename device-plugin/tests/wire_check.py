#!/usr/bin/env python3
"""An independent kubelet for the kaas device plugin, in Python grpcio.

It checks the wire format without sharing anything with the Rust side: messages are
encoded and decoded by hand from the field numbers of the documented v1beta1 API, and
methods are called by their full gRPC paths. It serves Registration on
<dir>/kubelet.sock, waits for the plugin to register, then calls the plugin back.

Usage: wire_check.py DIR   (prints READY when listening, then one JSON summary line)
"""
import json
import sys
import threading
from concurrent import futures

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    """Length-delimited (str/bytes/message) or varint (int/bool) field."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(num << 3 | 0) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def decode(buf):
    """Fields of one message as {number: [values]} (bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire} for field {num}")
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def strings(msg, num):
    return [v.decode() for v in msg.get(num, [])]


def main():
    d = sys.argv[1]
    registered = []
    got = threading.Event()

    def register(request, context):
        m = decode(request)
        opts = decode(m.get(4, [b""])[0])
        registered.append({
            "version": strings(m, 1)[0],
            "endpoint": strings(m, 2)[0],
            "resource": strings(m, 3)[0],
            "preStartRequired": bool(opts.get(1, [0])[0]),
            "preferredAllocation": bool(opts.get(2, [0])[0]),
        })
        got.set()
        return b""  # Empty

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "v1beta1.Registration",
        {"Register": grpc.unary_unary_rpc_method_handler(register)}),))
    server.add_insecure_port(f"unix:{d}/kubelet.sock")
    server.start()
    print("READY", flush=True)
    if not got.wait(20):
        sys.exit("the plugin never registered")
    reg = registered[0]
    assert reg["version"] == "v1beta1", reg
    assert reg["resource"] == "kaas.dev/cpu-share", reg

    # Kubelets since 1.26 send `:authority: localhost` on unix sockets; older grpc
    # clients sent the socket path, which HTTP/2 servers such as hyper reject.
    channel = grpc.insecure_channel(f"unix:{d}/{reg['endpoint']}",
                                    options=[("grpc.default_authority", "localhost")])
    call = lambda name: channel.unary_unary(f"/v1beta1.DevicePlugin/{name}")
    opts = decode(call("GetDevicePluginOptions")(b"", timeout=5))
    assert opts.get(2) == [1], f"GetPreferredAllocation not offered: {opts}"

    stream = channel.unary_stream("/v1beta1.DevicePlugin/ListAndWatch")(b"", timeout=10)
    first = decode(next(stream))
    devices = [decode(dev) for dev in first.get(1, [])]
    ids = [strings(dev, 1)[0] for dev in devices]
    health = [strings(dev, 2)[0] for dev in devices]
    stream.cancel()
    assert health and all(h == "Healthy" for h in health), health

    req = field(1, b"".join(field(1, i) for i in ids) + field(3, 2))
    pref = decode(call("GetPreferredAllocation")(req, timeout=5))
    preferred = strings(decode(pref[1][0]), 1)
    assert len(preferred) == 2 and set(preferred) <= set(ids), preferred

    alloc = decode(call("Allocate")(field(1, field(1, ids[0])), timeout=5))
    container = decode(alloc[1][0])
    envs = {}
    for entry in container.get(1, []):
        kv = decode(entry)
        envs[strings(kv, 1)[0]] = strings(kv, 2)[0]
    mount = decode(container[2][0])
    assert envs["KAAS_SHARE_IDS"] == ids[0], envs
    assert envs["KAAS_EXECUTOR_SOCKET"].startswith(strings(mount, 1)[0]), (envs, mount)

    try:
        call("Allocate")(field(1, field(1, "no-such-share")), timeout=5)
        sys.exit("Allocate of an unknown share succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    print(json.dumps({"registration": reg, "devices": ids, "preferred": preferred, "envs": envs,
                      "mount": {"containerPath": strings(mount, 1)[0], "hostPath": strings(mount, 2)[0]}}),
          flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
