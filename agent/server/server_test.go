// SPDX-License-Identifier: Apache-2.0

package server

import (
	"strings"
	"testing"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/client/keyprovider"
)

func TestValidKeyID(t *testing.T) {
	for id, ok := range map[string]bool{
		"table:orders":           true,
		"a":                      true,
		strings.Repeat("k", 255): true,
		"":                       false,
		strings.Repeat("k", 256): false,
		"tab\tle":                false,
		"tablé":                  false,
		"x\x7f":                  false,
	} {
		if err := ValidKeyID(id); (err == nil) != ok {
			t.Errorf("ValidKeyID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestPolicyChecksUIDGroupsAndExe(t *testing.T) {
	pol := Policy{UIDs: []uint32{999}, GIDs: []uint32{500}}
	for name, tc := range map[string]struct {
		p  Peer
		ok bool
	}{
		"allowed uid":           {Peer{UID: 999, GID: 1}, true},
		"allowed primary gid":   {Peer{UID: 1, GID: 500}, true},
		"allowed supplementary": {Peer{UID: 1, GID: 1, Groups: []uint32{7, 500}}, true},
		"nobody":                {Peer{UID: 65534, GID: 65534}, false},
	} {
		if got := pol.check(tc.p) == ""; got != tc.ok {
			t.Errorf("%s: allowed=%v, want %v", name, got, tc.ok)
		}
	}
}

// FuzzValidKeyID: the validator never panics and accepts only what a block
// can be bound to.
func FuzzValidKeyID(f *testing.F) {
	f.Add("table:orders")
	f.Add("")
	f.Add("\x00")
	f.Fuzz(func(t *testing.T, id string) {
		if ValidKeyID(id) != nil {
			return
		}
		if len(id) == 0 || len(id) > 255 {
			t.Fatalf("accepted %d bytes", len(id))
		}
		for i := 0; i < len(id); i++ {
			if id[i] < 0x20 || id[i] > 0x7e {
				t.Fatalf("accepted byte 0x%02x", id[i])
			}
		}
	})
}

// TestServingStatesAgree: a client decides whether byokd serves keys from
// the state on the wire (keyprovider.Serving); the server decides from its
// own (lock.State.Serving). Every state maps, and both say the same.
func TestServingStatesAgree(t *testing.T) {
	for s := lock.Starting; s <= lock.Locked; s++ {
		p, ok := stateProto[s]
		if !ok {
			t.Fatalf("%v has no wire state", s)
		}
		if s.Serving() != keyprovider.Serving(p) {
			t.Errorf("%v serves: %v; on the wire (%v): %v", s, s.Serving(), p, keyprovider.Serving(p))
		}
	}
	if len(stateProto) != int(lock.Locked) {
		t.Fatalf("%d states map to the wire, want %d", len(stateProto), lock.Locked)
	}
}
