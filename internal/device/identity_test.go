package device

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConnectionString(t *testing.T) {
	id, err := ParseConnectionString("HostName=localhost;DeviceId=devicemtr;SharedAccessKey=Zm9vYmFy")
	if err != nil {
		t.Fatal(err)
	}
	if id != (Identity{HostName: "localhost", DeviceID: "devicemtr", SharedAccessKey: "Zm9vYmFy"}) {
		t.Errorf("got %+v", id)
	}
	if got := id.Username(); got != "localhost/devicemtr/?api-version=2021-04-12" {
		t.Errorf("Username() = %q", got)
	}
	if got := id.Topic(); got != "devices/devicemtr/messages/events/" {
		t.Errorf("Topic() = %q", got)
	}
	if got := id.ClientID(); got != "devicemtr" {
		t.Errorf("ClientID() = %q", got)
	}
	// A key with '=' padding and an unknown key both parse.
	id, err = ParseConnectionString("HostName=h.example;DeviceId=d;SharedAccessKey=YQ==;ModuleId=m")
	if err != nil || id.SharedAccessKey != "YQ==" {
		t.Errorf("padded key: %+v, %v", id, err)
	}
}

func TestParseConnectionStringErrors(t *testing.T) {
	tests := map[string]string{
		"":                                          "empty",
		"HostName=h;DeviceId=d":                     "SharedAccessKey is missing",
		"DeviceId=d;SharedAccessKey=YQ==":           "HostName is missing",
		"HostName=h;SharedAccessKey=YQ==":           "DeviceId is missing",
		"HostName=h;DeviceId=d;garbage":             `"garbage" is not key=value`,
		"HostName=h;DeviceId=d;SharedAccessKey=***": "not base64",
	}
	for in, want := range tests {
		_, err := ParseConnectionString(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConnectionString(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

// The expected token was computed independently:
//
//	python3 -c 'import hmac,hashlib,base64,urllib.parse as u
//	sr=u.quote_plus("localhost/devices/devicemtr"); se="1800000000"
//	sig=base64.b64encode(hmac.new(b"foobar",(sr+"\n"+se).encode(),hashlib.sha256).digest()).decode()
//	print("SharedAccessSignature sr="+sr+"&sig="+u.quote_plus(sig)+"&se="+se)'
func TestSASToken(t *testing.T) {
	id := Identity{HostName: "localhost", DeviceID: "devicemtr", SharedAccessKey: "Zm9vYmFy"}
	got, err := id.SASToken(time.Unix(1800000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	const want = "SharedAccessSignature sr=localhost%2Fdevices%2Fdevicemtr&sig=iyZoq3qjUYjn1rN6IdwnQ%2BYmnbabiM0EYk4D46ezQgg%3D&se=1800000000"
	if got != want {
		t.Errorf("SASToken =\n%s\nwant\n%s", got, want)
	}
}

func TestRedactConnectionString(t *testing.T) {
	const key = "c2VjcmV0LWtleS0xMjM="
	s := "HostName=h;DeviceId=d;SharedAccessKey=" + key
	r := RedactConnectionString(s)
	if strings.Contains(r, key) || !strings.HasPrefix(r, "HostName=h;DeviceId=d;SharedAccessKey=<redacted sha256:") {
		t.Errorf("RedactConnectionString = %q", r)
	}
	if again := RedactConnectionString(r); again != r {
		t.Errorf("redacting twice changed it: %q", again)
	}
	if other := RedactConnectionString("HostName=h;DeviceId=d;SharedAccessKey=b3RoZXI="); other == r {
		t.Error("two keys have the same fingerprint")
	}
	if plain := "HostName=h;DeviceId=d"; RedactConnectionString(plain) != plain {
		t.Error("a string without a key changed")
	}
}

// TestKeyForms guards the forms of a key that are masked: as given, and
// its raw bytes when it is base64 (padded or not, either alphabet).
func TestKeyForms(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want []string
	}{
		{"", nil},
		{"c2VjcmV0LWtleQ==", []string{"c2VjcmV0LWtleQ==", "secret-key"}},
		{"c2VjcmV0LWtleQ", []string{"c2VjcmV0LWtleQ", "secret-key"}},
		{"not base64!", []string{"not base64!"}},
	} {
		if got := KeyForms(tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("KeyForms(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
