"""Last Wills and session takeover on a broker, with paho-mqtt, over MQTT 3.1.1 and MQTT 5.

Usage: wills.py HOST PORT USER PASSWORD

For each protocol version, with a watcher subscribed to a topic of its own:
- a client killed with SIGKILL (a child process) leaves its will;
- a client that disconnects cleanly leaves none;
- a second connection with a client id takes the session over: the first is closed (MQTT 5:
  reason 142, session taken over) and leaves no will;
- MQTT 5 only: a will with a delay of 1 s arrives no sooner than that.
Prints a JSON summary; exits 1 on the first failure.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

VERSIONS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


def fail(why):
    print(json.dumps({"ok": False, "why": why}))
    sys.exit(1)


def client(proto, user, password, client_id=None):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"paho-{uuid.uuid4().hex[:12]}",
        protocol=proto,
        reconnect_on_failure=False,
    )
    c.username_pw_set(user, password)
    return c


def will_props(delay):
    if delay is None:
        return None
    p = Properties(PacketTypes.WILLMESSAGE)
    p.WillDelayInterval = delay
    return p


def connected(c, host, port):
    up = queue.Queue()
    c.on_connect = lambda cl, u, flags, rc, props=None: up.put(rc)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        rc = up.get(timeout=10)
    except queue.Empty:
        fail("no CONNACK within 10 s")
    if rc != 0:
        fail(f"connection refused: {rc}")
    return c


def doomed(host, port, user, password, version, topic, delay):
    """Child: connect with a will, say so, then wait to be killed."""
    c = client(VERSIONS[version], user, password)
    c.will_set(topic, b"killed", qos=1, properties=will_props(None if delay == "none" else int(delay)))
    connected(c, host, port)
    print("up", flush=True)
    time.sleep(60)


def killed_child(host, port, user, password, version, topic, delay):
    child = subprocess.Popen(
        [sys.executable, __file__, "--doomed", host, str(port), user, password, version, topic, delay],
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.stdout.readline().strip() != "up":
        fail("the doomed client did not connect")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    return time.monotonic()


def round_of(version, host, port, user, password):
    proto = VERSIONS[version]
    base = f"paho-wills/{uuid.uuid4().hex[:10]}"
    inbox = queue.Queue()
    watcher = client(proto, user, password)
    watcher.on_message = lambda c, u, m: inbox.put((m.topic, m.payload, time.monotonic()))
    connected(watcher, host, port)
    watcher.subscribe(f"{base}/#", qos=1)
    time.sleep(0.5)

    def expect(topic, within):
        try:
            got = inbox.get(timeout=within)
        except queue.Empty:
            fail(f"{version}: no will on {topic} within {within} s")
        if got[0] != topic:
            fail(f"{version}: a will on {got[0]} where {topic} was expected")
        return got[2]

    def expect_none(within, why):
        try:
            got = inbox.get(timeout=within)
            fail(f"{version}: {why}, but {got[0]} arrived")
        except queue.Empty:
            pass

    killed_child(host, port, user, password, version, f"{base}/killed", "none")
    expect(f"{base}/killed", 10)

    clean = client(proto, user, password)
    clean.will_set(f"{base}/clean", b"x", qos=1)
    connected(clean, host, port)
    clean.disconnect()
    clean.loop_stop()
    expect_none(1.5, "a clean disconnect left its will")

    same_id = f"paho-twice-{uuid.uuid4().hex[:8]}"
    first = client(proto, user, password, same_id)
    gone = queue.Queue()
    first.on_disconnect = lambda c, u, flags, rc, props=None: gone.put(rc)
    first.will_set(f"{base}/twice", b"w", qos=1)
    connected(first, host, port)
    second = connected(client(proto, user, password, same_id), host, port)
    try:
        rc = gone.get(timeout=10)
    except queue.Empty:
        fail(f"{version}: the first connection was not closed when the second took its session")
    if proto == mqtt.MQTTv5 and getattr(rc, "value", rc) != 142:
        fail(f"{version}: the first connection was closed with {rc}, not 142 (session taken over)")
    expect_none(1.5, "a session taken over left its will")
    second.disconnect()

    delayed = None
    if proto == mqtt.MQTTv5:
        died = killed_child(host, port, user, password, version, f"{base}/delayed", "1")
        delayed = round(expect(f"{base}/delayed", 10) - died, 3)
        if delayed < 0.9:
            fail(f"{version}: a will with a 1 s delay arrived after {delayed} s")
    watcher.disconnect()
    return {"version": version, "delayed_will_s": delayed, "takeover_reason": str(rc)}


def main():
    if sys.argv[1] == "--doomed":
        doomed(sys.argv[2], int(sys.argv[3]), *sys.argv[4:9])
        return
    host, port, user, password = sys.argv[1:5]
    rounds = [round_of(v, host, int(port), user, password) for v in VERSIONS]
    print(json.dumps({"ok": True, "rounds": rounds}))


if __name__ == "__main__":
    main()
