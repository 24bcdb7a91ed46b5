package server

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeyring(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("alice-secret"))
	path := filepath.Join(t.TempDir(), "keys.yaml")
	file := "keys:\n  - name: alice\n    key_sha256: " + hex.EncodeToString(sum[:]) +
		"\n  - name: bob\n    key_env: BOB_KEY\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BOB_KEY": "bob-secret"}
	k, err := LoadKeyring(path, "carol:c:with:colons, dave:d", func(n string) string { return env[n] })
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"alice-secret": "alice", "bob-secret": "bob",
		"c:with:colons": "carol", "d": "dave"} {
		if got, ok := k.Lookup(key); !ok || got != want {
			t.Errorf("Lookup(%q) = %q %v, want %q", key, got, ok, want)
		}
	}
	if _, ok := k.Lookup("alice-secretX"); ok {
		t.Error("a wrong key was accepted")
	}
	if _, ok := k.Lookup(""); ok {
		t.Error("the empty key was accepted")
	}
}

func TestLoadKeyring_Errors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := func(string) string { return "" }
	cases := []struct {
		path, env string
		want      []string
	}{
		{write("bad.yaml", "keys:\n  - name: a\n    key_sha256: zz\n  - name: \"\"\n    key_env: X\n"+
			"  - name: b\n    key_env: UNSET\n  - name: c\n"), "",
			[]string{"keys[0].key_sha256: must be 64 hex", "keys[1].name: must not be empty",
				"keys[2].key_env: environment variable UNSET is not set", "keys[3]: set exactly one"}},
		{write("typo.yaml", "keys:\n  - name: a\n    key: plain\n"), "", []string{"keys[0].key: unknown key (line 3)"}},
		{write("empty.yaml", "keys: []\n"), "", []string{"lists no keys"}},
		{"", "no-colon-secret", []string{"TASKPIPE_API_KEYS: entry 1: must be name:key"}},
		{"", "a:x,b:x", []string{"already given to \"a\""}},
	}
	for _, tc := range cases {
		_, err := LoadKeyring(tc.path, tc.env, none)
		if err == nil {
			t.Fatalf("%s %q: no error", tc.path, tc.env)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "no-colon-secret") {
			t.Errorf("error echoes a key: %q", err)
		}
	}
}
