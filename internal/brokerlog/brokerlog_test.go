package brokerlog

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	engine := time.Date(2026, 11, 26, 17, 6, 18, 123456789, time.UTC)
	tests := []struct {
		in   string
		ok   bool
		want Event
	}{
		{`2026-11-26T17:06:18.123456789Z {"ts":1795712778123,"event":"connect","clientId":"dev"}`, true,
			Event{At: engine, Kind: Connect, ClientID: "dev"}},
		{`2026-11-26T17:06:18.141Z {"ts":1795712778123,"event":"listening","port":8883}`, true, // the engine read it 18 ms late
			Event{At: time.UnixMilli(1795712778123), Kind: Listening}},
		{`{"ts":1795712778123,"event":"publish","clientId":"dev","topic":"devices/dev/messages/events/","qos":1,"messageId":7,"bytes":61,"digest":"2cf24dba5fb0a30e"}`, true,
			Event{At: time.UnixMilli(1795712778123), Kind: Publish, ClientID: "dev", Topic: "devices/dev/messages/events/", QoS: 1, MessageID: 7, Digest: "2cf24dba5fb0a30e"}},
		{`{"ts":1795712778123,"event":"listening","port":8883}` + "\r", true, Event{At: time.UnixMilli(1795712778123), Kind: Listening}},
		{`{"ts":1795712778123,"event":"connection_error","clientId":null,"error":"x"}`, true, Event{At: time.UnixMilli(1795712778123), Kind: ConnectionError}},
		{``, false, Event{}},
		{`npm notice: something`, false, Event{}},
		{`{"ts":1795712778123,"event":"conn`, false, Event{}},
		{`2026-11-26T17:06:18Z {"ts":17`, false, Event{}},
		{`not-a-time {"ts":1,"event":"connect"}`, false, Event{}},
		{`{"ts":0,"event":"connect"}`, false, Event{}},
		{`{"ts":5,"clientId":"x"}`, false, Event{}},
		{`[1,2,3]`, false, Event{}},
	}
	for _, tt := range tests {
		got, ok := Parse([]byte(tt.in))
		if ok != tt.ok || ok && (!got.At.Equal(tt.want.At) || got.Kind != tt.want.Kind || got.ClientID != tt.want.ClientID ||
			got.Topic != tt.want.Topic || got.MessageID != tt.want.MessageID || got.QoS != tt.want.QoS || got.Digest != tt.want.Digest) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStamp(t *testing.T) {
	own := time.UnixMilli(1795712778123)
	for _, tt := range []struct {
		read, want time.Time
	}{
		{own.Add(1500 * time.Microsecond), own.Add(1500 * time.Microsecond)}, // read promptly: the finer time
		{own.Add(3 * time.Millisecond), own},                                 // read late: the broker's own
		{time.Time{}, own},
	} {
		if got := Stamp(tt.read, own); !got.Equal(tt.want) {
			t.Errorf("Stamp(%v) = %v, want %v", tt.read.Sub(own), got.Sub(own), tt.want.Sub(own))
		}
	}
	if read := own.Add(time.Hour); !Stamp(read, time.Time{}).Equal(read) {
		t.Error("without a ts, the read time stands")
	}
}

// TestDigest pins the digest to the one the broker computes in server.js:
// the first 16 hex digits of SHA-256 ("hello" is the well-known 2cf24dba…).
func TestDigest(t *testing.T) {
	if got := Digest([]byte("hello")); got != "2cf24dba5fb0a30e" {
		t.Errorf("Digest(hello) = %s", got)
	}
}

func TestLinesAcrossWrites(t *testing.T) {
	var got []string
	l := NewLines(16, func(b []byte) { got = append(got, string(b)) })
	for _, chunk := range []string{"ab", "c\nde", "f\n", "\n", "0123456789", "0123456789xx\n", "ok\n", "tail"} {
		if n, err := l.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	want := []string{"abc", "def", "", "ok"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", got, want)
	}
	if l.Dropped != 1 {
		t.Errorf("Dropped = %d, want 1 (the 22-byte line)", l.Dropped)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`2026-11-26T17:06:18.123456789Z {"ts":1,"event":"connect","clientId":"dev"}`))
	f.Add([]byte(`{"ts":1,"event":"publish","messageId":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, ok := Parse(b)
		if ok && (e.Kind == "" || e.At.IsZero()) {
			t.Errorf("Parse(%q) accepted an event without kind or time: %+v", b, e)
		}
	})
}

// TestParseDownstreamEvents reads the lines the downstream needs: a
// subscribe's filters with their granted QoS, a connack's session flag and
// an ack's message.
func TestParseDownstreamEvents(t *testing.T) {
	sub, ok := Parse([]byte(`{"ts":1800000000000,"event":"subscribe","clientId":"d","topics":[{"topic":"devices/d/messages/devicebound/#","qos":1},{"topic":"$iothub/twin/res/#","qos":0}]}`))
	if !ok || len(sub.Subscriptions) != 2 || sub.Subscriptions[0] != (Subscription{"devices/d/messages/devicebound/#", 1}) || sub.Subscriptions[1].QoS != 0 {
		t.Errorf("subscribe: %+v %v", sub, ok)
	}
	ca, ok := Parse([]byte(`{"ts":1800000000001,"event":"connack","clientId":"d","sessionPresent":true,"returnCode":0}`))
	if !ok || ca.Kind != Connack || !ca.SessionPresent {
		t.Errorf("connack: %+v %v", ca, ok)
	}
	ack, ok := Parse([]byte(`{"ts":1800000000002,"event":"ack","clientId":"d","messageId":7,"topic":"devices/d/messages/devicebound/","digest":"00ff00ff00ff00ff"}`))
	if !ok || ack.Kind != Ack || ack.MessageID != 7 || ack.Topic != "devices/d/messages/devicebound/" || ack.Digest != "00ff00ff00ff00ff" {
		t.Errorf("ack: %+v %v", ack, ok)
	}
}
