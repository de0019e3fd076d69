#!/usr/bin/env python3
"""An impatient MTTR lab client written with the paho-mqtt package.

It tries to connect again every 100 ms while the broker is away, and it
keeps publishing telemetry with QoS 1 every 200 ms whether it is connected
or not: paho queues what it cannot send and sends that backlog the moment
it is connected again. It reads the MTTR_* contract from its environment
and trusts only MTTR_CA_FILE.
"""
import json
import os
import ssl
import time

import paho.mqtt.client as mqtt

host = os.environ["MTTR_BROKER_HOST"]
port = int(os.environ["MTTR_BROKER_PORT"])
device = os.environ["MTTR_DEVICE_ID"]
topic = os.environ["MTTR_TOPIC"]
keep_alive = int(os.environ["MTTR_KEEP_ALIVE_SECONDS"])

try:  # paho-mqtt 2.x
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
except AttributeError:  # paho-mqtt 1.x
    client = mqtt.Client(client_id=device)
client.tls_set_context(ssl.create_default_context(cafile=os.environ["MTTR_CA_FILE"]))
client.username_pw_set(f"{host}/{device}/?api-version=2021-04-12")
client.reconnect_delay_set(min_delay=0.1, max_delay=0.1)
client.max_queued_messages_set(0)  # no limit: keep the whole backlog
client.connect_async(host, port, keepalive=keep_alive)
client.loop_start()
print(f"{device}: publishing to {topic} on {host}:{port}, reconnecting every 100 ms", flush=True)

seq = 0
while True:
    seq += 1
    payload = json.dumps({"deviceId": device, "seq": seq, "sentAt": time.time_ns()})
    client.publish(topic, payload, qos=1)
    time.sleep(0.2)
