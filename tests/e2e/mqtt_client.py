#!/usr/bin/env python3
"""Scriptable MQTT client for the end-to-end suite (paho-mqtt 2.x).

Protocol with the test harness (one JSON object per stdout line):
  1. connect (TCP, TLS or WebSocket) from --bind, then print
     {"event": "connected", "local": [ip, port]}  (the socket's own address)
  2. wait for a line on stdin (the harness queries the broker's admin API meanwhile)
  3. subscribe to --topic, publish --payload to it, wait for the message, print
     {"event": "received", "topic": ..., "payload": ...} and disconnect.
Any failure prints {"event": "error", "reason": ...} and exits with status 2.
"""

import argparse
import json
import ssl
import sys
import threading

import paho.mqtt.client as mqtt

TIMEOUT = 15.0


def emit(**obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(reason):
    emit(event="error", reason=str(reason))
    sys.exit(2)


class SniContext(ssl.SSLContext):
    """An SSL context that always sends `sni` (paho uses the connect host, here an IP, as SNI)."""

    sni = None

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=self.sni, **kwargs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="")
    ap.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
    ap.add_argument("--path", default="/mqtt")
    ap.add_argument("--header", action="append", default=[], help="extra WebSocket handshake header NAME:VALUE")
    ap.add_argument("--tls-sni", default=None, help="connect with TLS (certificate not verified) sending this SNI")
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--payload", default="hello")
    args = ap.parse_args()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        transport=args.transport,
        protocol=mqtt.MQTTv311,
    )
    if args.transport == "websockets":
        headers = {}
        for h in args.header:
            name, _, value = h.partition(":")
            headers[name.strip()] = value.strip()
        client.ws_set_options(path=args.path, headers=headers or None)
    if args.tls_sni:
        ctx = SniContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.sni = args.tls_sni
        client.tls_set_context(ctx)
        client.tls_insecure_set(True)

    connected = threading.Event()
    subscribed = threading.Event()
    received = threading.Event()
    state = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        state["rc"] = reason_code
        connected.set()

    def on_disconnect(c, userdata, flags, reason_code, properties):
        # the connection was closed (before or after CONNACK): stop waiting at once
        state.setdefault("rc", reason_code)
        state["closed"] = True
        connected.set()
        subscribed.set()
        received.set()

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(c, userdata, msg):
        state["msg"] = msg
        received.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    try:
        client.connect(args.host, args.port, keepalive=30, bind_address=args.bind)
    except Exception as e:  # noqa: BLE001 - report anything to the harness
        fail(f"connect: {e!r}")
    client.loop_start()
    if not connected.wait(TIMEOUT):
        fail("no CONNACK")
    if state.get("closed"):
        fail(f"connection closed before CONNACK ({state['rc']})")
    if state["rc"].is_failure:
        fail(f"CONNACK {state['rc']}")

    sock = client.socket()
    sock = getattr(sock, "_socket", sock)  # the WebSocket wrapper keeps the socket inside
    ip, port = sock.getsockname()[:2]
    emit(event="connected", local=[ip, port])

    if not sys.stdin.readline():
        fail("harness closed stdin")

    client.subscribe(args.topic, qos=1)
    if not subscribed.wait(TIMEOUT) or state.get("closed"):
        fail("no SUBACK")
    client.publish(args.topic, args.payload, qos=1)
    if not received.wait(TIMEOUT) or "msg" not in state:
        fail("published message never came back")
    msg = state["msg"]
    emit(event="received", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"))
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
