"""Follows a container's log over MQTT 5 with paho-mqtt and nothing but docs/protocol.md § Streams.

Usage: follow_logs.py HOST PORT USER PASSWORD AGENT CONTAINER

It asks for a follow with a window of 2, checks that the agent sends 2 chunks and then nothing
while unacknowledged, acknowledges from then on until it has 30 lines (each "tick N", N counting
up by one), cancels, and waits for the end. Prints a JSON summary; exits 1 on any failure.
"""

import json
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def fail(why):
    print(json.dumps({"ok": False, "why": why}))
    sys.exit(1)


def main():
    host, port, user, password, agent, container = sys.argv[1:7]
    reply_topic = f"zedops/v1/replies/paho-{uuid.uuid4().hex[:12]}"
    correlation = b"paho-follow-1"
    inbox = queue.Queue()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_message = lambda c, u, m: inbox.put(m)
    client.connect(host, int(port))
    client.loop_start()
    client.subscribe(reply_topic, qos=0)
    time.sleep(0.5)

    def send(op, payload):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        topic = f"zedops/v1/agents/{agent}/req/{op}"
        client.publish(topic, json.dumps(payload) if payload is not None else b"", qos=0, properties=props)

    def next_message(limit):
        try:
            m = inbox.get(timeout=limit)
        except queue.Empty:
            return None
        if m.properties.CorrelationData != correlation:
            fail(f"a message with another correlation: {m.properties.CorrelationData!r}")
        return json.loads(m.payload)

    send("container.logs", {"container": container, "follow": True, "window": 2, "lease_s": 30})

    lines, seqs = [], []

    def take(msg):
        if not msg.get("ok") and "stream" not in msg:
            fail(f"the stream did not start: {msg}")
        pos = msg.get("stream") or {}
        if "end" in pos:
            return pos["end"]
        seqs.append(pos["seq"])
        lines.extend(line["text"] for line in msg["result"]["lines"])
        return None

    # The window: two chunks, then nothing until we acknowledge.
    for _ in range(2):
        msg = next_message(10)
        if msg is None:
            fail(f"only {len(seqs)} chunks arrived before the window closed")
        if take(msg):
            fail(f"the stream ended early: {msg}")
    stalled = next_message(2.0) is None
    if not stalled:
        fail("a third chunk arrived without an ack: the window is not respected")

    send("stream.ack", {"seq": seqs[-1]})
    deadline = time.time() + 20
    while len(lines) < 30 and time.time() < deadline:
        msg = next_message(5)
        if msg is None:
            fail(f"no chunk after an ack (had {len(lines)} lines)")
        if take(msg):
            fail(f"the stream ended early: {msg}")
        send("stream.ack", {"seq": seqs[-1]})

    send("stream.cancel", None)
    end = None
    deadline = time.time() + 10
    while end is None and time.time() < deadline:
        msg = next_message(5)
        if msg is None:
            break
        end = take(msg)
    client.loop_stop()
    client.disconnect()

    numbers = [int(t.split()[-1]) for t in lines if t.startswith("tick ")]
    in_order = len(numbers) == len(lines) and all(b == a + 1 for a, b in zip(numbers, numbers[1:]))
    seq_ok = seqs == list(range(len(seqs)))
    summary = {
        "ok": stalled and in_order and seq_ok and end == "cancelled" and len(lines) >= 30,
        "stalled": stalled,
        "lines": len(lines),
        "in_order": in_order,
        "seqs_in_order": seq_ok,
        "end": end,
    }
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
