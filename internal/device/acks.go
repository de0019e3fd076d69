package device

import (
	"fmt"
	"sync"
	"time"
)

// MQTT control packet types this package reads off the wire.
const (
	packetConnack = 2
	packetPuback  = 4
)

// framer splits the byte stream the broker sends into MQTT packets, fed as
// it arrives in reads of any size, and hands on the type and the first
// bytes of the body of each (enough for a CONNACK's flags or a PUBACK's
// packet id).
type framer struct {
	state  int // 0: fixed header; 1: remaining length; 2: body
	typ    byte
	length int // remaining length read so far
	shift  uint
	left   int    // body bytes still to come
	head   []byte // the body's first bytes, up to framerHead
}

const framerHead = 4

func (f *framer) feed(b []byte, packet func(typ byte, head []byte)) {
	for len(b) > 0 {
		switch f.state {
		case 0:
			f.typ, f.length, f.shift, f.head = b[0]>>4, 0, 0, f.head[:0]
			f.state = 1
			b = b[1:]
		case 1:
			c := b[0]
			b = b[1:]
			f.length |= int(c&0x7f) << f.shift
			f.shift += 7
			if c&0x80 != 0 && f.shift < 28 {
				continue
			}
			f.left, f.state = f.length, 2
			if f.left == 0 {
				f.state = 0
				packet(f.typ, f.head)
			}
		case 2:
			n := min(len(b), f.left)
			if room := framerHead - len(f.head); room > 0 {
				f.head = append(f.head, b[:min(n, room)]...)
			}
			b, f.left = b[n:], f.left-n
			if f.left == 0 {
				f.state = 0
				packet(f.typ, f.head)
			}
		}
	}
}

// acks matches the PUBACKs read off the wire to the QoS 1 messages they
// acknowledge, by packet id. paho's token is not enough: when it sends a
// stored message again after a reconnect, it completes the message's
// token at once (its id changes hands inside paho), before the broker's
// PUBACK for it.
//
// A PUBACK can be read before its message is registered (paho has sent it
// before Publish returned): it waits in early. paho frees a packet id only
// once it has processed the PUBACK that our Read returned, so the id
// cannot yet belong to another message of the device's.
type acks struct {
	mu      sync.Mutex
	waiting map[uint16]*Pending  // handed to paho, no PUBACK read yet
	early   map[uint16]time.Time // PUBACKs read before their message was registered
}

// publish runs send, which hands a message to paho, and registers the
// message under the packet id paho gave it. paho's Publish can wait for
// its writer: the lock is not held meanwhile, so that PUBACKs and pings
// are read on.
func (a *acks) publish(send func() *Pending) *Pending {
	p := send()
	id := p.id
	if id == 0 { // QoS 0, or refused: its token says all
		return p
	}
	if p.done == nil {
		p.acked = make(chan struct{})
	}
	a.mu.Lock()
	old := a.waiting[id]
	at, early := a.early[id]
	delete(a.early, id)
	if early && !at.Before(p.SentAt) {
		delete(a.waiting, id)
	} else {
		if a.waiting == nil {
			a.waiting = map[uint16]*Pending{}
		}
		a.waiting[id] = p
		early = false
	}
	a.mu.Unlock()
	if old != nil {
		old.settle(time.Time{}, fmt.Errorf("publish %d: paho gave its packet id %d to another message before the broker acknowledged it", old.Seq, id))
	}
	if early {
		p.settle(at, nil)
	}
	return p
}

// puback settles the message waiting for packet id: the broker
// acknowledged it at at.
func (a *acks) puback(id uint16, at time.Time) {
	a.mu.Lock()
	p := a.waiting[id]
	if p != nil {
		delete(a.waiting, id)
	} else {
		if a.early == nil {
			a.early = map[uint16]time.Time{}
		}
		a.early[id] = at
	}
	a.mu.Unlock()
	if p != nil {
		p.settle(at, nil)
	}
}

// failed settles the messages waiting for a PUBACK whose token paho
// failed: a write on a connection that broke (paho fails it before it
// reports the loss), or a disconnect. Wait would notice by itself; a
// message sent with SendNotify has nobody waiting.
func (a *acks) failed() {
	a.mu.Lock()
	var failed []*Pending
	for _, p := range a.waiting {
		if p.failed() != nil {
			failed = append(failed, p)
		}
	}
	a.mu.Unlock()
	for _, p := range failed {
		p.settle(time.Time{}, p.failed())
	}
}
