#!/usr/bin/env python3
"""Scriptable MQTT test client (paho-mqtt 2.x) over TCP, TLS or WebSocket, for every test of
this workspace that needs a real MQTT client.

Driven line by line: it prints one JSON object per event on stdout and reads one JSON command
per line on stdin.

Events:   {"event": "connected", "rc": 0, "local": ["127.0.0.121", 40000]}  (the socket's own address)
          (MQTT 5: "connected" adds "session_present" and the CONNACK "props" by paho's
          names)
          {"event": "error", "reason": "connect: ..."}  (the TCP/TLS/WebSocket connection failed)
          (MQTT 5 messages add "dup" and "props": user_properties, content_type, ...)
          {"event": "subscribed", "mid": 1, "granted": [1]}
          {"event": "published", "mid": 2}
          {"event": "message", "topic": "t", "payload": "p", "qos": 1, "retain": false}
          {"event": "disconnected", "rc": 0}
Commands: {"op": "sub", "topic": "t/#", "qos": 1}
          (MQTT 5 options: "no_local", "retain_as_published", "retain_handling", "sub_id")
          {"op": "pub", "topic": "t", "payload": "p", "qos": 1, "retain": false}
          (MQTT 5: "props": {"user_properties": [["k", "v"]], "content_type": ...})
          {"op": "quit"}

Usage: mqtt_client.py --port PORT [--host 127.0.0.1] [--path /mqtt] [--bind 127.0.0.121]
                      [--client-id ID] [--header "Name: value"]... [--keepalive 60]
                      [--mqtt 3.1.1|5] [--transport websockets|tcp] [--tls-sni NAME]
                      [--tls-cert CLIENT.pem --tls-key CLIENT.key]
"""

import argparse
import json
import ssl
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

lock = threading.Lock()


def emit(**event):
    with lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


class SniContext(ssl.SSLContext):
    """An SSL context that always sends `sni` (paho uses the connect host, here an IP, as SNI)."""

    sni = None

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=self.sni, **kwargs)


def local_address(client):
    """The socket's own (ip, port); the WebSocket wrapper keeps the socket inside."""
    sock = client.socket()
    sock = getattr(sock, "_socket", sock)
    try:
        ip, port = sock.getsockname()[:2]
    except (AttributeError, OSError):
        return None
    return [ip, port]


def message_properties(props):
    """The MQTT 5 PUBLISH properties paho-mqtt read, as JSON."""
    out = {}
    if props is None:
        return out
    for name, key in [
        ("UserProperty", "user_properties"),
        ("ContentType", "content_type"),
        ("ResponseTopic", "response_topic"),
        ("PayloadFormatIndicator", "payload_format_indicator"),
        ("MessageExpiryInterval", "message_expiry_interval"),
        ("SubscriptionIdentifier", "subscription_identifiers"),
        ("TopicAlias", "topic_alias"),
    ]:
        if hasattr(props, name):
            value = getattr(props, name)
            out[key] = [list(p) for p in value] if name == "UserProperty" else value
    if hasattr(props, "CorrelationData"):
        out["correlation_data"] = props.CorrelationData.decode("utf-8", "replace")
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/mqtt")
    parser.add_argument("--bind", default="")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--keepalive", type=int, default=60)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--mqtt", choices=["3.1.1", "5"], default="3.1.1")
    parser.add_argument("--transport", choices=["websockets", "tcp"], default="websockets")
    parser.add_argument("--tls-sni", default=None, help="TLS (certificate not verified) with this SNI")
    parser.add_argument("--tls-cert", default=None, help="with --tls-sni: client certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="with --tls-cert: its private key (PEM)")
    args = parser.parse_args()

    headers = {}
    for line in args.header:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()

    v5 = args.mqtt == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        transport=args.transport,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if args.transport == "websockets":
        client.ws_set_options(path=args.path, headers=headers or None)
    if args.tls_sni:
        ctx = SniContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.sni = args.tls_sni
        if args.tls_cert:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        client.tls_set_context(ctx)
        client.tls_insecure_set(True)

    def on_connect(client, _userdata, flags, reason_code, properties):
        event = dict(event="connected", rc=reason_code.value, local=local_address(client))
        if v5:
            event["session_present"] = bool(flags.session_present)
            event["props"] = {
                name: getattr(properties, name)
                for name in [
                    "MaximumPacketSize",
                    "ReceiveMaximum",
                    "MaximumQoS",
                    "TopicAliasMaximum",
                    "RetainAvailable",
                    "WildcardSubscriptionAvailable",
                    "SubscriptionIdentifierAvailable",
                    "SharedSubscriptionAvailable",
                    "AssignedClientIdentifier",
                ]
                if properties is not None and hasattr(properties, name)
            }
        emit(**event)

    def on_subscribe(_client, _userdata, mid, reason_codes, _properties):
        emit(event="subscribed", mid=mid, granted=[rc.value for rc in reason_codes])

    def on_publish(_client, _userdata, mid, _reason_code, _properties):
        emit(event="published", mid=mid)

    def on_message(_client, _userdata, msg):
        event = dict(
            event="message",
            topic=msg.topic,
            payload=msg.payload.decode("utf-8", "replace"),
            qos=msg.qos,
            retain=bool(msg.retain),
        )
        if v5:
            event["dup"] = bool(msg.dup)
            event["props"] = message_properties(msg.properties)
        emit(**event)

    def on_disconnect(client, _userdata, _flags, reason_code, _properties):
        emit(event="disconnected", rc=reason_code.value)
        # No automatic reconnect: a test that sees the broker close the connection must not
        # find the client back (and, with the same client id, taking over another one).
        client.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    client.on_disconnect = on_disconnect

    try:
        client.connect(args.host, args.port, keepalive=args.keepalive, bind_address=args.bind)
    except Exception as e:  # noqa: BLE001 - reported to the test as an event
        emit(event="error", reason=f"connect: {e!r}")
        return 1
    client.loop_start()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "sub" and v5:
            options = SubscribeOptions(
                qos=cmd.get("qos", 0),
                noLocal=cmd.get("no_local", False),
                retainAsPublished=cmd.get("retain_as_published", False),
                retainHandling=cmd.get("retain_handling", 0),
            )
            properties = None
            if cmd.get("sub_id"):
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                properties = Properties(PacketTypes.SUBSCRIBE)
                properties.SubscriptionIdentifier = cmd["sub_id"]
            client.subscribe(cmd["topic"], options=options, properties=properties)
        elif op == "sub":
            client.subscribe(cmd["topic"], qos=cmd.get("qos", 0))
        elif op == "pub":
            properties = None
            if v5 and cmd.get("props"):
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                properties = Properties(PacketTypes.PUBLISH)
                p = cmd["props"]
                if "user_properties" in p:
                    properties.UserProperty = [tuple(kv) for kv in p["user_properties"]]
                if "content_type" in p:
                    properties.ContentType = p["content_type"]
                if "response_topic" in p:
                    properties.ResponseTopic = p["response_topic"]
                if "correlation_data" in p:
                    properties.CorrelationData = p["correlation_data"].encode()
                if "message_expiry_interval" in p:
                    properties.MessageExpiryInterval = p["message_expiry_interval"]
                if "payload_format_indicator" in p:
                    properties.PayloadFormatIndicator = p["payload_format_indicator"]
                if "topic_alias" in p:
                    properties.TopicAlias = p["topic_alias"]
            client.publish(
                cmd["topic"],
                cmd.get("payload", ""),
                qos=cmd.get("qos", 0),
                retain=cmd.get("retain", False),
                properties=properties,
            )
        elif op == "quit":
            break
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
