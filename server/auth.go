package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/specs"

	"github.com/taskpipe/taskpipe/api"
)

// KeysEnv is the environment variable holding API keys as comma-separated
// name:key pairs, e.g. "alice:s3cret,bob:other".
const KeysEnv = "TASKPIPE_API_KEYS"

// Keyring holds the accepted API keys, each under the name of its owner.
// Only SHA-256 digests are kept; a presented key is hashed and compared
// with every digest in constant time.
type Keyring struct {
	keys []namedKey
}

// namedKey is one accepted key.
type namedKey struct {
	owner string
	sum   [sha256.Size]byte
}

// Len returns the number of keys; zero for a nil Keyring.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Add accepts key for owner.
func (k *Keyring) Add(owner, key string) error {
	if key == "" {
		return fmt.Errorf("add key of %q: empty key", owner)
	}
	return k.addDigest(owner, sha256.Sum256([]byte(key)))
}

// addDigest accepts the key whose SHA-256 digest is sum for owner.
func (k *Keyring) addDigest(owner string, sum [sha256.Size]byte) error {
	if owner == "" {
		return errors.New("add key: empty name")
	}
	for _, nk := range k.keys {
		if nk.sum == sum {
			return fmt.Errorf("add key of %q: the same key is already given to %q", owner, nk.owner)
		}
	}
	k.keys = append(k.keys, namedKey{owner: owner, sum: sum})
	return nil
}

// Lookup returns the owner of key. It compares against every key, so its
// time does not depend on which key matched.
func (k *Keyring) Lookup(key string) (owner string, ok bool) {
	if k == nil || key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	for _, nk := range k.keys {
		if subtle.ConstantTimeCompare(sum[:], nk.sum[:]) == 1 {
			owner, ok = nk.owner, true
		}
	}
	return owner, ok
}

// keysFile is the YAML keys file.
type keysFile struct {
	Keys []struct {
		Name      string `yaml:"name"`
		KeySHA256 string `yaml:"key_sha256"`
		KeyEnv    string `yaml:"key_env"`
	} `yaml:"keys"`
}

// LoadKeyring builds the keyring from a YAML keys file (path, may be empty)
// and from envKeys (the value of TASKPIPE_API_KEYS, may be empty). getenv
// resolves the key_env entries of the file. Every problem is reported at
// once, each naming its entry.
//
// The file lists the keys by owner name, either as the hex SHA-256 digest
// of the key or as the name of an environment variable holding the key:
//
//	keys:
//	  - name: alice
//	    key_sha256: 9f86d08...
//	  - name: bob
//	    key_env: BOB_KEY
func LoadKeyring(path, envKeys string, getenv func(string) string) (*Keyring, error) {
	k := &Keyring{}
	var errs []error
	if path != "" {
		if err := k.loadFile(path, getenv); err != nil {
			errs = append(errs, err)
		}
	}
	if err := k.loadEnv(envKeys); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return k, nil
}

// loadFile adds the keys of a keys file.
func (k *Keyring) loadFile(path string, getenv func(string) string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read keys file: %w", err)
	}
	var f keysFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("parse keys file %s: %w", path, specs.DescribeYAMLError(b, err))
	}
	if len(f.Keys) == 0 {
		return fmt.Errorf("keys file %s: lists no keys", path)
	}
	var errs []error
	for i, e := range f.Keys {
		at := fmt.Sprintf("%s: keys[%d]", path, i)
		switch {
		case strings.TrimSpace(e.Name) == "":
			errs = append(errs, fmt.Errorf("%s.name: must not be empty", at))
		case (e.KeySHA256 == "") == (e.KeyEnv == ""):
			errs = append(errs, fmt.Errorf("%s: set exactly one of key_sha256 and key_env", at))
		case e.KeySHA256 != "":
			raw, err := hex.DecodeString(strings.TrimSpace(e.KeySHA256))
			if err != nil || len(raw) != sha256.Size {
				errs = append(errs, fmt.Errorf("%s.key_sha256: must be 64 hex digits", at))
				continue
			}
			if err := k.addDigest(e.Name, [sha256.Size]byte(raw)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		default:
			key := getenv(e.KeyEnv)
			if key == "" {
				errs = append(errs, fmt.Errorf("%s.key_env: environment variable %s is not set",
					at, e.KeyEnv))
				continue
			}
			if err := k.Add(e.Name, key); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		}
	}
	return errors.Join(errs...)
}

// loadEnv adds the name:key pairs of TASKPIPE_API_KEYS.
func (k *Keyring) loadEnv(v string) error {
	var errs []error
	for i, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, key, ok := strings.Cut(pair, ":")
		name, key = strings.TrimSpace(name), strings.TrimSpace(key)
		if !ok || name == "" || key == "" {
			// The pair may be a bare key: never echo it.
			errs = append(errs, fmt.Errorf("%s: entry %d: must be name:key", KeysEnv, i+1))
			continue
		}
		if err := k.Add(name, key); err != nil {
			errs = append(errs, fmt.Errorf("%s: entry %d: %w", KeysEnv, i+1, err))
		}
	}
	return errors.Join(errs...)
}

// authed wraps an API handler: it resolves the x-api-key header to an
// owner (401 when missing or unknown, outside development mode) and runs
// the handler acting for that owner.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner := DevOwner
		if !s.dev {
			key := r.Header.Get("x-api-key")
			o, ok := s.keys.Lookup(key)
			if !ok {
				msg := "invalid API key"
				if key == "" {
					msg = "missing API key: send it in the x-api-key header"
				}
				s.writeError(w, r, api.Errorf(api.ErrUnauthorized, "%s", msg))
				return
			}
			owner = o
		}
		h(w, r.WithContext(s.withOwner(r.Context(), owner)))
	})
}
