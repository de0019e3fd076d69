package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults
	want.BrokerAddr = "localhost:8883"
	want.KeepDead = 7500 * time.Millisecond
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(empty) =\n%+v\nwant\n%+v", c, want)
	}
}

func TestLoadOverrides(t *testing.T) {
	c, err := Load(env(map[string]string{
		"MTTR_HOST":          "alohomora.net",
		"MTTR_PORT":          "18883",
		"MTTR_CERT_DAYS":     "7",
		"MTTR_KEEP_ALIVE":    "30",
		"MTTR_SEND_INTERVAL": "1500ms",
		"MTTR_BIND":          "0.0.0.0",
		"MTTR_IMAGE":         " ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "alohomora.net" || c.Port != 18883 || c.CertDays != 7 || c.Bind != "0.0.0.0" {
		t.Errorf("got %+v", c)
	}
	if c.KeepAlive != 30*time.Second || c.SendInterval != 1500*time.Millisecond {
		t.Errorf("durations %s %s", c.KeepAlive, c.SendInterval)
	}
	if c.BrokerAddr != "alohomora.net:18883" {
		t.Errorf("BrokerAddr = %q", c.BrokerAddr)
	}
	if c.Image != Defaults.Image {
		t.Errorf("blank MTTR_IMAGE gave %q, want the default", c.Image)
	}
	c, err = Load(env(map[string]string{"MTTR_HOST": "alohomora.net", "MTTR_BROKER_ADDR": "127.0.0.1:9000"}))
	if err != nil || c.BrokerAddr != "127.0.0.1:9000" || c.Host != "alohomora.net" {
		t.Errorf("MTTR_BROKER_ADDR: %+v, %v", c, err)
	}
}

func TestLoadBadValues(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"MTTR_CERT_DAYS", "abc", `MTTR_CERT_DAYS="abc": not a whole number`},
		{"MTTR_CERT_DAYS", "0", `MTTR_CERT_DAYS="0": must be at least 1`},
		{"MTTR_PORT", "70000", `MTTR_PORT="70000": not a port number`},
		{"MTTR_PORT", "http", `MTTR_PORT="http": not a port number`},
		{"MTTR_KEEP_ALIVE", "soon", `MTTR_KEEP_ALIVE="soon": not a duration`},
		{"MTTR_KEEP_ALIVE", "500ms", `MTTR_KEEP_ALIVE="500ms": MQTT keep-alive is whole seconds`},
		{"MTTR_SEND_INTERVAL", "-1s", `MTTR_SEND_INTERVAL="-1s": must be positive`},
		{"MTTR_READY_TIMEOUT", "0", `MTTR_READY_TIMEOUT="0": must be positive`},
		{"MTTR_BIND", "localhost", `MTTR_BIND="localhost": not an IP address`},
		{"MTTR_HOST", "bad host", `MTTR_HOST="bad host"`},
		{"MTTR_BROKER_ADDR", "nohostport", `MTTR_BROKER_ADDR="nohostport": want host:port`},
		{"MTTR_DEVICES", "0", `MTTR_DEVICES="0": must be at least 1`},
		{"MTTR_RESTART_COUNT", "many", `MTTR_RESTART_COUNT="many": not a whole number`},
		{"MTTR_FACTOR_OF_KEEP_ALIVE", "0", `MTTR_FACTOR_OF_KEEP_ALIVE="0": must be greater than 0`},
		{"MTTR_FACTOR_OF_KEEP_ALIVE", "half", `MTTR_FACTOR_OF_KEEP_ALIVE="half": not a number`},
		{"MTTR_FAULT", "explode", `MTTR_FAULT="explode": want one of stop, kill, restart, recreate, pause, disconnect`},
		{"MTTR_QOS", "2", `MTTR_QOS="2": want one of 0, 1`},
		{"MTTR_BROKER", "vm", `MTTR_BROKER="vm": want one of docker, process`},
		{"MTTR_NETNS", "host", `MTTR_NETNS="host": want one of holder, plain`},
		{"MTTR_CLEAN_SESSION", "maybe", `MTTR_CLEAN_SESSION="maybe": want true or false`},
		{"MTTR_KEEP_DEAD", "1x", `MTTR_KEEP_DEAD="1x": not a duration`},
		{"MTTR_RECOVERY_TIMEOUT", "-5", `MTTR_RECOVERY_TIMEOUT="-5": must be positive`},
		{"MTTR_CLIENT", "java", `MTTR_CLIENT="java": want one of paho, external`},
		{"MTTR_CLIENT", "external", `MTTR_CLIENT=external needs MTTR_CLIENT_CMD`},
		{"MTTR_FORMAT", "xml", `MTTR_FORMAT="xml": want one of text, markdown, csv, json`},
		{"MTTR_LAST", "none", `MTTR_LAST="none": not a whole number`},
		{"MTTR_ALPHA", "5", `MTTR_ALPHA=5: want a level between 0 and 1`},
		{"MTTR_MAX_P95", "fast", `MTTR_MAX_P95="fast": not a duration`},
		{"MTTR_KEEP_ALIVE", "1.5s", `MTTR_KEEP_ALIVE="1.5s": MQTT keep-alive is whole seconds`},
		{"MTTR_KEEP_ALIVE", "65537", `MTTR_KEEP_ALIVE="65537": at most 18h12m15s`},
		{"MTTR_KEEP_ALIVE", "99999h", `MTTR_KEEP_ALIVE="99999h": at most 18h12m15s`},
		{"MTTR_KEEP_DEAD", "99999h", `MTTR_KEEP_DEAD="99999h": at most 24h0m0s`},
		{"MTTR_RECOVERY_TIMEOUT", "25h", `MTTR_RECOVERY_TIMEOUT="25h": at most 24h0m0s`},
		{"MTTR_RESTART_COUNT", "1000000000", `MTTR_RESTART_COUNT="1000000000": at most 100000`},
		{"MTTR_CERT_DAYS", "10000000", `MTTR_CERT_DAYS="10000000": at most 36500`},
		{"MTTR_CONTAINER", "bad name!", `MTTR_CONTAINER="bad name!": not a container name`},
		{"MTTR_KEEP_ALIVE", "70000", `MTTR_KEEP_ALIVE="70000": at most 18h12m15s`},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			_, err := Load(env(map[string]string{tt.name: tt.value}))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestKeepDead(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{nil, 7500 * time.Millisecond},
		{map[string]string{"MTTR_KEEP_ALIVE": "4", "MTTR_FACTOR_OF_KEEP_ALIVE": "1.5"}, 6 * time.Second},
		{map[string]string{"MTTR_KEEP_ALIVE": "4", "MTTR_KEEP_DEAD": "2s"}, 2 * time.Second},
	} {
		c, err := Load(env(tt.env))
		if err != nil || c.KeepDead != tt.want {
			t.Errorf("Load(%v).KeepDead = %s, %v; want %s", tt.env, c.KeepDead, err, tt.want)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"15": 15 * time.Second, "0.5": 500 * time.Millisecond, "1500ms": 1500 * time.Millisecond, "2m": 2 * time.Minute,
	} {
		got, err := Duration(in)
		if err != nil || got != want {
			t.Errorf("Duration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := Duration("fast"); err == nil {
		t.Error(`Duration("fast") = nil error`)
	}
}

// TestVarsRoundTrip checks that Vars names every setting and that loading
// what it returns gives the same configuration back, but for the
// connection string's key, which it never gives out.
func TestVarsRoundTrip(t *testing.T) {
	c, err := Load(env(map[string]string{"MTTR_FAULT": "pause", "MTTR_KEEP_DEAD": "2s", "MTTR_QOS": "0", "MTTR_LABEL": "sdk 1.2", "MTTR_MAX_P95": "1500ms", "MTTR_FORMAT": "json",
		"MTTR_CLIENT": "external", "MTTR_CLIENT_CMD": "python3 client.py", "MTTR_TLS_RESUMPTION": "true", "MTTR_TLS_GROUPS": "x25519,P-256"}))
	if err != nil {
		t.Fatal(err)
	}
	vars := c.Vars()
	// Cells is no setting of its own; TLS holds two.
	if n := reflect.TypeFor[Config]().NumField() - 1 + 1; len(vars) != n {
		t.Errorf("Vars has %d entries, Config %d settings", len(vars), n)
	}
	if vars["MTTR_TLS_GROUPS"] != "X25519,P-256" || vars["MTTR_TLS_RESUMPTION"] != "true" {
		t.Errorf("TLS policy stored as %q, %q", vars["MTTR_TLS_RESUMPTION"], vars["MTTR_TLS_GROUPS"])
	}
	if strings.Contains(vars["MTTR_CONNECTION_STRING"], "Zm9vYmFy") {
		t.Errorf("Vars gives out the key: %s", vars["MTTR_CONNECTION_STRING"])
	}
	back, err := Load(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	back.ConnectionString = c.ConnectionString
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n%+v\n%+v", back, c)
	}
}

func TestProcessBrokerRefusesDockerFaults(t *testing.T) {
	for _, fault := range []string{"restart", "recreate", "disconnect"} {
		_, err := Load(env(map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": fault}))
		if err == nil || !strings.Contains(err.Error(), "MTTR_FAULT="+fault+" needs Docker: MTTR_BROKER=process supports stop, kill, pause") {
			t.Errorf("process broker with fault %s: %v", fault, err)
		}
	}
	for _, fault := range []string{"stop", "kill", "pause"} {
		if _, err := Load(env(map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": fault})); err != nil {
			t.Errorf("process broker with fault %s: %v", fault, err)
		}
	}
}

func TestVarsRedactKeyInClientCommand(t *testing.T) {
	c, err := Load(env(map[string]string{"MTTR_CLIENT": "external",
		"MTTR_CONNECTION_STRING": "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0",
		"MTTR_CLIENT_CMD":        "my-sdk --key c2VjcmV0 --raw-key secret"}))
	if err != nil {
		t.Fatal(err)
	}
	if cmd := c.Vars()["MTTR_CLIENT_CMD"]; strings.Contains(cmd, "c2VjcmV0") || strings.Contains(cmd, "secret") ||
		!strings.HasPrefix(cmd, "my-sdk --key <redacted sha256:") || !strings.Contains(cmd, "--raw-key <redacted sha256:") {
		t.Errorf("MTTR_CLIENT_CMD stored as %q", cmd)
	}
}

func TestBrokerAddrPublished(t *testing.T) {
	for addr, want := range map[string]bool{
		"":                true, // derived: MTTR_HOST:MTTR_PORT
		"localhost:8883":  true,
		"127.0.0.1:8883":  true,
		"[::1]:8883":      true,
		"127.0.0.1:18883": false,
		"172.17.0.2:8883": false,
		"broker.lan:8883": false,
	} {
		vars := map[string]string{}
		if addr != "" {
			vars["MTTR_BROKER_ADDR"] = addr
		}
		c, err := Load(env(vars))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.BrokerAddrPublished(); got != want {
			t.Errorf("MTTR_BROKER_ADDR=%q: published %v, want %v", addr, got, want)
		}
	}
}

// TestNetworkFaultSettings refuses what a network fault cannot do, naming
// the variable, and takes what it can.
func TestNetworkFaultSettings(t *testing.T) {
	for _, tt := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"MTTR_FAULT": "loss", "MTTR_LOSS": "0%"}, "MTTR_LOSS=0%: MTTR_FAULT=loss would drop nothing"},
		{map[string]string{"MTTR_LOSS": "150%"}, `MTTR_LOSS="150%"`},
		{map[string]string{"MTTR_FAULT": "latency", "MTTR_LATENCY": "0"}, "MTTR_LATENCY=0s: MTTR_FAULT=latency would add nothing"},
		{map[string]string{"MTTR_LATENCY": "100ms", "MTTR_JITTER": "200ms"}, "MTTR_JITTER=200ms: more than MTTR_LATENCY=100ms"},
		{map[string]string{"MTTR_RATE": "fast"}, `MTTR_RATE="fast"`},
		{map[string]string{"MTTR_LINK": "latency=1h"}, `MTTR_LINK="latency=1h"`},
		{map[string]string{"MTTR_LINK": "4g"}, `MTTR_LINK="4g"`},
		{map[string]string{"MTTR_FAULT": "idle", "MTTR_IDLE_TIMEOUT": "500ms"}, "MTTR_IDLE_TIMEOUT=500ms: at least 1s"},
		{map[string]string{"MTTR_FAULT": "idle", "MTTR_IDLE_TIMEOUT": "2s", "MTTR_SEND_INTERVAL": "3s"}, "MTTR_SEND_INTERVAL=3s: not shorter than MTTR_IDLE_TIMEOUT=2s"},
		{map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": "blackhole"}, "MTTR_FAULT=blackhole needs Docker"},
		{map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": "idle"}, "MTTR_FAULT=idle needs Docker"},
		{map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": "readdress"}, "MTTR_FAULT=readdress needs Docker"},
		{map[string]string{"MTTR_KEEP_RUNNING": "1s", "MTTR_KEEP_RUNNING_JITTER": "2s"}, "MTTR_KEEP_RUNNING_JITTER=2s: more than MTTR_KEEP_RUNNING=1s"},
		{map[string]string{"MTTR_FAULT": "readdress", "MTTR_LINK": "3g"}, "with MTTR_FAULT=readdress: the broker may come back at another address"},
		{map[string]string{"MTTR_NETNS": "plain", "MTTR_FAULT": "stop", "MTTR_LINK": "latency=10ms"}, "use MTTR_NETNS=holder"},
		{map[string]string{"MTTR_FAULT": "disconnect", "MTTR_LINK": "latency=10ms"}, "MTTR_LINK=latency=10ms with MTTR_FAULT=disconnect"},
		{map[string]string{"MTTR_BROKER": "process", "MTTR_LINK": "3g"}, "MTTR_LINK=" + "latency=100ms,jitter=20ms,loss=0.5%,rate=768kbit: loss needs"},
	} {
		_, err := Load(env(tt.vars))
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tt.vars, err, tt.want)
		}
	}
	for _, vars := range []map[string]string{
		{"MTTR_BROKER": "process", "MTTR_FAULT": "latency"},
		{"MTTR_BROKER": "process", "MTTR_FAULT": "stop", "MTTR_LINK": "latency=200ms,rate=1mbit"},
		{"MTTR_FAULT": "idle", "MTTR_IDLE_TIMEOUT": "5s", "MTTR_SEND_INTERVAL": "1s"},
		{"MTTR_FAULT": "loss", "MTTR_LOSS": "100%"},
		{"MTTR_NETNS": "plain", "MTTR_FAULT": "blackhole", "MTTR_LINK": "latency=10ms"},
	} {
		if _, err := Load(env(vars)); err != nil {
			t.Errorf("%v: %v", vars, err)
		}
	}
}

// TestStudyCells makes a study of every combination of the listed
// settings, each validated as a run of its own.
func TestStudyCells(t *testing.T) {
	c, err := Load(env(map[string]string{"MTTR_FAULT": "stop, kill", "MTTR_KEEP_DEAD": "1s,2s,5s", "MTTR_STUDY": "s1", "MTTR_STUDY_SEED": "42"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cell := range c.Cells {
		got = append(got, fmt.Sprintf("%s/%s/%d/%s/%d", cell.Fault, cell.KeepDead, cell.Devices, cell.Study, cell.StudySeed))
	}
	want := "stop/1s/1/s1/42 stop/2s/1/s1/42 stop/5s/1/s1/42 kill/1s/1/s1/42 kill/2s/1/s1/42 kill/5s/1/s1/42"
	if strings.Join(got, " ") != want {
		t.Errorf("cells %v, want %s", got, want)
	}
	if c.Fault != "stop" || c.KeepDead != time.Second {
		t.Errorf("the first combination: %s %s", c.Fault, c.KeepDead)
	}
	if one, err := Load(env(map[string]string{"MTTR_FAULT": "kill"})); err != nil || one.Cells != nil {
		t.Errorf("a single run: cells %v, %v", one.Cells, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"MTTR_FAULT": "stop,stop"}, `MTTR_FAULT="stop,stop": "stop" named twice`},
		{map[string]string{"MTTR_FAULT": "stop,,kill"}, `MTTR_FAULT="stop,,kill": member 2 of 3 is empty`},
		{map[string]string{"MTTR_FAULT": "stop,bogus"}, "study combination MTTR_FAULT=bogus: MTTR_FAULT"},
		{map[string]string{"MTTR_BROKER": "process", "MTTR_FAULT": "stop,blackhole"}, "study combination MTTR_FAULT=blackhole: MTTR_FAULT=blackhole needs Docker"},
		{map[string]string{"MTTR_DEVICES": "1,0"}, "study combination MTTR_DEVICES=0: MTTR_DEVICES"},
		{map[string]string{"MTTR_KEEP_DEAD": "1s,1000ms"}, "study: the combination MTTR_FAULT=stop MTTR_KEEP_DEAD=1s MTTR_DEVICES=1 comes twice"},
		{map[string]string{"MTTR_STUDY": "s", "MTTR_STUDY_SEED": "-1"}, `MTTR_STUDY_SEED="-1"`},
	} {
		if _, err := Load(env(tc.env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
}

// TestDerivedSettings guards the rule of every derived setting: checked
// against the limits of the setting it derives, never wrapped, and refused
// naming the inputs the user gave (or left at their defaults), not the
// setting the user did not set; a derived setting the user sets is their
// own value.
func TestDerivedSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string // the error's text; empty: accepted
	}{
		{map[string]string{"MTTR_FACTOR_OF_KEEP_ALIVE": "1e300"},
			`MTTR_KEEP_DEAD=beyond any duration, from MTTR_KEEP_ALIVE (default) and MTTR_FACTOR_OF_KEEP_ALIVE="1e300": at most 24h0m0s`},
		{map[string]string{"MTTR_FACTOR_OF_KEEP_ALIVE": "10000"},
			`MTTR_KEEP_DEAD=41h40m0s, from MTTR_KEEP_ALIVE (default) and MTTR_FACTOR_OF_KEEP_ALIVE="10000": at most 24h0m0s`},
		{map[string]string{"MTTR_KEEP_ALIVE": "18h", "MTTR_FACTOR_OF_KEEP_ALIVE": "2"},
			`MTTR_KEEP_DEAD=36h0m0s, from MTTR_KEEP_ALIVE="18h" and MTTR_FACTOR_OF_KEEP_ALIVE="2": at most 24h0m0s`},
		{map[string]string{"MTTR_FACTOR_OF_KEEP_ALIVE": "1e300", "MTTR_KEEP_DEAD": "3s"}, ""},
		{map[string]string{"MTTR_FACTOR_OF_KEEP_ALIVE": "4"}, ""},
		{map[string]string{"MTTR_HOST": "bad:host"}, `MTTR_HOST="bad:host"`},
		{map[string]string{"MTTR_BROKER_ADDR": "no-port"}, `MTTR_BROKER_ADDR="no-port": want host:port`},
	} {
		c, err := Load(env(tc.env))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.want == "" && (c.KeepDead <= 0 || c.KeepDead > MaxDuration):
			t.Errorf("%v: keep-dead %v", tc.env, c.KeepDead)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
}

// TestDBOfAnotherScheme guards that MTTR_DB of a scheme other than
// PostgreSQL's is refused, naming MTTR_DB, and that no form of MTTR_DB's
// password is shown by the error or the stored settings.
func TestDBOfAnotherScheme(t *testing.T) {
	_, err := Load(env(map[string]string{"MTTR_DB": "mysql://root:SECRET@127.0.0.1/x"}))
	if err == nil || !strings.Contains(err.Error(), `MTTR_DB="mysql://root:xxxxx@127.0.0.1/x": a mysql URL`) || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Load = %v", err)
	}
	c, err := Load(env(map[string]string{"MTTR_DB": "postgres://u:SECRET@h/db?sslpassword=SECRET2"}))
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Vars()["MTTR_DB"]; strings.Contains(v, "SECRET") {
		t.Errorf("stored MTTR_DB %q", v)
	}
}
