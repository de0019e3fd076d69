package device

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the api-version an IoT hub device puts in its MQTT username.
const APIVersion = "2021-04-12"

// Identity is who a device says it is, parsed from an IoT hub style
// connection string "HostName=...;DeviceId=...;SharedAccessKey=...".
type Identity struct {
	HostName        string
	DeviceID        string
	SharedAccessKey string // base64, as in the connection string
}

// ParseConnectionString parses s into an Identity. HostName, DeviceId and
// SharedAccessKey are required; the key must be base64. Other keys (such as
// ModuleId or GatewayHostName) are ignored.
func ParseConnectionString(s string) (Identity, error) {
	var id Identity
	if strings.TrimSpace(s) == "" {
		return id, errors.New("connection string is empty")
	}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return id, fmt.Errorf("connection string: %q is not key=value", part)
		}
		switch k {
		case "HostName":
			id.HostName = v
		case "DeviceId":
			id.DeviceID = v
		case "SharedAccessKey":
			id.SharedAccessKey = v
		}
	}
	switch {
	case id.HostName == "":
		return id, errors.New("connection string: HostName is missing")
	case id.DeviceID == "":
		return id, errors.New("connection string: DeviceId is missing")
	case id.SharedAccessKey == "":
		return id, errors.New("connection string: SharedAccessKey is missing")
	}
	if _, err := base64.StdEncoding.DecodeString(id.SharedAccessKey); err != nil {
		return id, fmt.Errorf("connection string: SharedAccessKey is not base64: %w", err)
	}
	return id, nil
}

// ClientID is the MQTT client id: the device id.
func (id Identity) ClientID() string { return id.DeviceID }

// Username is the MQTT user name an IoT hub expects.
func (id Identity) Username() string {
	return id.HostName + "/" + id.DeviceID + "/?api-version=" + APIVersion
}

// Topic is where the device publishes telemetry.
func (id Identity) Topic() string { return "devices/" + id.DeviceID + "/messages/events/" }

// SASToken returns a shared access signature for the device, valid until
// expiry: HMAC-SHA256 with the decoded key over the URL-encoded resource
// "<host>/devices/<device>", a newline and the expiry in Unix seconds.
func (id Identity) SASToken(expiry time.Time) (string, error) {
	key, err := base64.StdEncoding.DecodeString(id.SharedAccessKey)
	if err != nil {
		return "", fmt.Errorf("sas token: key is not base64: %w", err)
	}
	resource := url.QueryEscape(id.HostName + "/devices/" + id.DeviceID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(resource + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + resource + "&sig=" + url.QueryEscape(sig) + "&se=" + se, nil
}

// redactedPrefix starts the stand-in for a redacted key.
const redactedPrefix = "<redacted"

// KeyFingerprint names a key without revealing it: "<redacted
// sha256:1a2b3c4d>", the first 8 hex digits of its SHA-256, enough to tell
// two keys apart.
func KeyFingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("%s sha256:%x>", redactedPrefix, sum[:4])
}

// KeyForms are the forms in which a client may print key: as given
// (base64), and decoded to its raw bytes when it decodes; every one is
// masked wherever a client's output goes.
func KeyForms(key string) []string {
	if key == "" {
		return nil
	}
	forms := []string{key}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(key); err == nil && len(raw) > 0 {
			return append(forms, string(raw))
		}
	}
	return forms
}

// RedactConnectionString replaces the SharedAccessKey in a connection
// string with its fingerprint, leaving everything else as it was. A string
// already redacted is returned unchanged.
func RedactConnectionString(s string) string {
	parts := strings.Split(s, ";")
	for i, part := range parts {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == "SharedAccessKey" && !strings.HasPrefix(v, redactedPrefix) {
			parts[i] = k + "=" + KeyFingerprint(v)
		}
	}
	return strings.Join(parts, ";")
}
