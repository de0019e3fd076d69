#!/usr/bin/env python3
"""An external MTTR lab client written with the paho-mqtt package.

It reads the MTTR_* contract from its environment, connects over TLS
trusting only MTTR_CA_FILE, publishes telemetry with QoS 1 every second
and lets paho reconnect on its own. COMMANDS says what it does about its
commands (MTTR_C2D_TOPIC): "onconnect" subscribes with QoS 1 in its
on-connect handler, so after every reconnect, as an IoT device SDK does;
"once" on its first connection only, as a naive application does (with a
clean session it is deaf after a reconnect); unset, it never subscribes.
"""
import json
import os
import ssl
import time

import paho.mqtt.client as mqtt

host = os.environ["MTTR_BROKER_HOST"]
dial = os.environ["MTTR_BROKER_DIAL_HOST"]
port = int(os.environ["MTTR_BROKER_PORT"])
device = os.environ["MTTR_DEVICE_ID"]
topic = os.environ["MTTR_TOPIC"]
keep_alive = int(os.environ["MTTR_KEEP_ALIVE_SECONDS"])
commands = os.environ.get("COMMANDS", "")

try:  # paho-mqtt 2.x
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
except AttributeError:  # paho-mqtt 1.x
    client = mqtt.Client(client_id=device)
tls = ssl.create_default_context(cafile=os.environ["MTTR_CA_FILE"])
if dial != host:
    # The path starts at an address, not at the certificate's name: check
    # the chain (MTTR_CA_FILE holds only the broker's certificate), not the
    # name.
    tls.check_hostname = False
client.tls_set_context(tls)
client.username_pw_set(f"{host}/{device}/?api-version=2021-04-12")
client.reconnect_delay_set(min_delay=1, max_delay=2)

subscribed = False


def on_connect(c, userdata, flags, *rest):
    global subscribed
    if commands == "onconnect" or (commands == "once" and not subscribed):
        c.subscribe(os.environ["MTTR_C2D_TOPIC"], qos=1)
        subscribed = True


def on_message(c, userdata, msg):
    print(f"{device}: command on {msg.topic}: {msg.payload.decode(errors='replace')}", flush=True)


client.on_connect = on_connect
client.on_message = on_message
client.connect_async(dial, port, keepalive=keep_alive)
client.loop_start()
print(f"{device}: publishing to {topic} on {dial}:{port}", flush=True)

seq = 0
while True:
    seq += 1
    payload = json.dumps({"deviceId": device, "seq": seq, "sentAt": time.time_ns()})
    client.publish(topic, payload, qos=1)
    time.sleep(1)
