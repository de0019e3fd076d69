// MQTT broker over TLS for MTTR lab.
//
// Every client event is written to stdout as one JSON object per line, with
// "ts" in Unix milliseconds, "event" naming what happened and "clientId":
//
//   listening, connect, connack, disconnect, keepalive_timeout, subscribe,
//   publish, ack, client_error, connection_error, shutdown, fatal
//
// A publish line carries "digest", the first 16 hex digits of the payload's
// SHA-256, so that a subscriber's copy can be matched with its receipt. An
// ack line (a client acknowledged a QoS 1 message delivered to it) carries
// the delivered message's topic, messageId and digest; the verifier's are
// not logged. A connack line carries "sessionPresent": whether the broker
// had the client's session.
//
// MTTR lab reads these lines through the container's log stream to measure
// clients from the broker's side. The line format is an interface: add
// fields, do not rename them.
//
// Settings (environment): MQTT_PORT (8883), MQTT_HOST (the address to
// listen on; unset: all interfaces), MQTT_CERT (/app/certs/cert.pem),
// MQTT_KEY (/app/certs/key.pem).
//
// MQTT_VERIFIER_ID and MQTT_VERIFIER_TOPIC, when both are set, make the
// broker start with a persistent session for client MQTT_VERIFIER_ID,
// subscribed to MQTT_VERIFIER_TOPIC with QoS 1, before it accepts any
// connection. QoS 1 messages published before that client connects (with
// clean session false) are queued for it and delivered when it does, so a
// verifier loses nothing to the race with the devices after a restart.
import { createHash } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { Aedes } from 'aedes'
import mqttPacket from 'mqtt-packet'

// Clients whose id starts with this are the broker's own warm-up
// connections; they are not logged.
const warmUpPrefix = 'mttr-warmup-'

const port = Number(process.env.MQTT_PORT || 8883)
const host = process.env.MQTT_HOST || undefined
const verifierId = process.env.MQTT_VERIFIER_ID || ''
const verifierTopic = process.env.MQTT_VERIFIER_TOPIC || ''
const certFile = process.env.MQTT_CERT || '/app/certs/cert.pem'
const keyFile = process.env.MQTT_KEY || '/app/certs/key.pem'

function log (event, fields = {}) {
  process.stdout.write(JSON.stringify({ ts: Date.now(), event, ...fields }) + '\n')
}

function clientId (client) {
  return client ? client.id : null
}

function own (client) {
  return client != null && typeof client.id === 'string' && client.id.startsWith(warmUpPrefix)
}

const broker = await Aedes.createBroker()

broker.on('client', (client) => own(client) || log('connect', { clientId: clientId(client) }))
broker.on('clientDisconnect', (client) => own(client) || log('disconnect', { clientId: clientId(client) }))
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
    bytes: packet.payload ? packet.payload.length : 0,
    // The payload's name, so a subscriber's copy can be matched with this
    // receipt: the first 16 hex digits of its SHA-256.
    digest: digest(packet.payload)
  })
})
broker.on('connackSent', (packet, client) => own(client) || log('connack', {
  clientId: clientId(client),
  sessionPresent: !!packet.sessionPresent,
  returnCode: packet.returnCode ?? 0
}))
// The QoS 1 and 2 messages the broker wrote to each connection, by message
// id, read from the bytes it writes (handle): a PUBACK names the message
// it acknowledges by that id alone, and aedes keeps delivered messages
// only for persistent sessions, and tells its 'ack' listeners nothing
// else. A connection's map loses each entry at its PUBACK.
const written = new WeakMap() // socket -> Map(messageId -> { topic, digest })
const pubacks = new WeakMap() // client -> [messageId], in the order their 'ack' events come
function digest (payload) {
  return createHash('sha256').update(payload ?? Buffer.alloc(0)).digest('hex').slice(0, 16)
}
function watched (client) {
  return client != null && client.id !== verifierId && !own(client)
}
// Writes to socket also go through an MQTT parser that notes each QoS > 0
// PUBLISH. (MQTT 3.1.1 framing; a 5.0 client's publishes carry
// properties the parser is told of once the client has connected.)
function noteWrites (socket) {
  const out = new Map()
  written.set(socket, out)
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on('packet', (p) => {
    if (p.cmd === 'publish' && p.qos > 0) out.set(p.messageId, { topic: p.topic, digest: digest(p.payload) })
  })
  parser.on('error', () => {}) // a frame we cannot read is not ours to fail on
  const write = socket.write.bind(socket)
  socket.write = (chunk, ...rest) => {
    if (chunk && chunk.length) parser.parse(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
    return write(chunk, ...rest)
  }
  socket.mttrParser = parser
}
broker.on('client', (client) => {
  if (client.conn?.mttrParser && client.version) client.conn.mttrParser.settings.protocolVersion = client.version
})
const clearMessageId = broker.persistence.outgoingClearMessageId.bind(broker.persistence)
broker.persistence.outgoingClearMessageId = (client, packet, ...rest) => {
  if (packet && packet.cmd === 'puback') {
    let q = pubacks.get(client)
    if (!q) pubacks.set(client, (q = []))
    q.push(packet.messageId)
  }
  return clearMessageId(client, packet, ...rest)
}
broker.on('ack', (packet, client) => {
  const messageId = pubacks.get(client)?.shift()
  const out = client?.conn ? written.get(client.conn) : undefined
  const d = out?.get(messageId)
  out?.delete(messageId)
  if (!watched(client)) return
  log('ack', {
    clientId: client.id,
    messageId: messageId ?? (packet ? packet.messageId : null),
    topic: d ? d.topic : (packet ? packet.topic : null),
    digest: d ? d.digest : (packet ? digest(packet.payload) : null)
  })
})
// A warm-up connection's own end (a reset as it closes) is not logged,
// like the rest of it.
broker.on('clientError', (client, err) => {
  if (!own(client)) log('client_error', { clientId: clientId(client), error: err.message })
})
broker.on('connectionError', (client, err) => {
  if (!own(client)) log('connection_error', { clientId: clientId(client), error: err.message })
})

let tlsOptions
try {
  // noDelay: without it Nagle's algorithm holds the CONNACK behind the TLS
  // session tickets until the client's delayed ACK, about 40 ms later.
  tlsOptions = { cert: readFileSync(certFile), key: readFileSync(keyFile), noDelay: true }
} catch (err) {
  log('fatal', { error: `tls: ${err.message}` })
  process.exit(1)
}

function handle (socket) {
  socket.setNoDelay(true)
  noteWrites(socket)
  broker.handle(socket)
}

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session.
function connectPacket (id) {
  const body = Buffer.concat([Buffer.from([0, 4, 77, 81, 84, 84, 4, 2, 0, 10, 0, id.length]), Buffer.from(id)])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

// warmUp runs a few TLS connections with an MQTT CONNECT through the broker
// on a private Unix socket before the real port opens. A freshly started
// Node answers its first connection some 70 ms slower than later ones
// (its code is not compiled yet); without this the first device to
// reconnect after a restart would pay for the broker's start-up. Not over
// TCP: a loopback port of its own, or the local port of one of its
// connections, can be the very port the broker is about to listen on, and
// clients would be answered by the warm-up, then refused, or the broker
// could not listen at all.
async function warmUp (rounds) {
  const warm = tls.createServer(tlsOptions, handle)
  const path = join(tmpdir(), `mttr-warmup-${process.pid}.sock`)
  try {
    rmSync(path, { force: true })
    await new Promise((resolve, reject) => {
      warm.once('error', reject)
      warm.listen(path, resolve)
    })
  } catch (err) { // slower first connections, but a broker all the same
    process.stderr.write(`warm-up skipped: ${err.message}\n`)
    return
  }
  for (let i = 0; i < rounds; i++) {
    await new Promise((resolve) => {
      const socket = tls.connect({ path, rejectUnauthorized: false }, () => {
        socket.write(connectPacket(warmUpPrefix + i))
      })
      socket.setTimeout(2000, () => { socket.destroy(); resolve() })
      socket.once('data', () => { socket.end(Buffer.from([0xe0, 0])); resolve() })
      socket.once('error', resolve)
    })
  }
  await new Promise((resolve) => warm.close(() => resolve()))
}

// The session a persistent subscriber would have left behind: aedes
// queues QoS 1 messages for every stored subscription whose client is
// offline, and restores the subscription when the client connects with
// clean session false.
if (verifierId && verifierTopic) {
  await broker.persistence.addSubscriptions({ id: verifierId }, [{ topic: verifierTopic, qos: 1 }])
}

await warmUp(3)
const server = tls.createServer(tlsOptions, handle)
server.on('tlsClientError', (err) => log('connection_error', { clientId: null, error: err.message }))
server.on('error', (err) => {
  log('fatal', { error: `listen: ${err.message}` })
  process.exit(1)
})
server.listen({ port, host }, () => log('listening', { port, host: host ?? null }))

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
