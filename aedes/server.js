// MQTT broker over TLS for MTTR lab.
//
// Every client event is written to stdout as one JSON object per line, with
// "ts" in Unix milliseconds, "event" naming what happened and "clientId":
//
//   listening, connect, disconnect, keepalive_timeout, subscribe, publish,
//   client_error, connection_error, shutdown
//
// MTTR lab reads these lines through the container's log stream to measure
// clients from the broker's side. The line format is an interface: add
// fields, do not rename them.
//
// Settings (environment): MQTT_PORT (8883), MQTT_CERT (/app/certs/cert.pem),
// MQTT_KEY (/app/certs/key.pem).
import { readFileSync } from 'node:fs'
import tls from 'node:tls'
import { Aedes } from 'aedes'

const port = Number(process.env.MQTT_PORT || 8883)
const certFile = process.env.MQTT_CERT || '/app/certs/cert.pem'
const keyFile = process.env.MQTT_KEY || '/app/certs/key.pem'

function log (event, fields = {}) {
  process.stdout.write(JSON.stringify({ ts: Date.now(), event, ...fields }) + '\n')
}

function clientId (client) {
  return client ? client.id : null
}

const broker = await Aedes.createBroker()

broker.on('client', (client) => log('connect', { clientId: clientId(client) }))
broker.on('clientDisconnect', (client) => log('disconnect', { clientId: clientId(client) }))
broker.on('keepaliveTimeout', (client) => log('keepalive_timeout', { clientId: clientId(client) }))
broker.on('subscribe', (subscriptions, client) => log('subscribe', {
  clientId: clientId(client),
  topics: subscriptions.map((s) => ({ topic: s.topic, qos: s.qos }))
}))
broker.on('publish', (packet, client) => {
  if (!client) return // the broker's own $SYS messages
  log('publish', {
    clientId: client.id,
    topic: packet.topic,
    qos: packet.qos,
    messageId: packet.messageId ?? null,
    bytes: packet.payload ? packet.payload.length : 0
  })
})
broker.on('clientError', (client, err) => log('client_error', { clientId: clientId(client), error: err.message }))
broker.on('connectionError', (client, err) => log('connection_error', { clientId: clientId(client), error: err.message }))

let server
try {
  // noDelay: without it Nagle's algorithm holds the CONNACK behind the TLS
  // session tickets until the client's delayed ACK, about 40 ms later.
  server = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), noDelay: true }, (socket) => {
    socket.setNoDelay(true)
    broker.handle(socket)
  })
} catch (err) {
  log('fatal', { error: `tls: ${err.message}` })
  process.exit(1)
}
server.on('tlsClientError', (err) => log('connection_error', { clientId: null, error: err.message }))
server.listen(port, () => log('listening', { port }))

// Node as PID 1 ignores SIGTERM unless it handles it, so `docker stop`
// would wait out its timeout. Close clients, then exit.
let stopping = false
function shutdown (signal) {
  if (stopping) process.exit(1)
  stopping = true
  log('shutdown', { signal })
  setTimeout(() => process.exit(0), 2000).unref()
  server.close()
  broker.close(() => process.exit(0))
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
