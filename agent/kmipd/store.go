// SPDX-License-Identifier: Apache-2.0

package kmipd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/byokd/byokd/agent/lock"
	"github.com/byokd/byokd/crypto/block"
	"github.com/byokd/byokd/crypto/datakey"
	"github.com/byokd/byokd/crypto/seal"
	"github.com/byokd/byokd/crypto/secmem"
	"github.com/byokd/byokd/internal/atomicfile"
)

// Deriver computes keys from the node's sealed DEK; crypto/seal's sealers do.
type Deriver interface {
	Derive(ctx context.Context, info []byte, out []byte) error
}

// Gate says whether the node serves keys, and which; *lock.Machine does.
type Gate interface {
	Status() lock.Status
}

// The object states byokd stores. Destroyed objects are removed, so they
// have no state here.
const (
	statePreActive   = "PreActive"
	stateActive      = "Active"
	stateDeactivated = "Deactivated"
	stateCompromised = "Compromised"
)

// recordVersion is the version of the object file format.
const recordVersion = 1

// Object is what byokd keeps about one managed object, in its file under
// the store's folder: attributes in the clear, key material sealed.
type Object struct {
	Version   int      `json:"version"`
	ID        string   `json:"id"`
	Algorithm string   `json:"algorithm"` // "AES"
	Length    int32    `json:"length"`    // bits
	UsageMask int32    `json:"usage_mask"`
	Names     []string `json:"names,omitempty"`
	// Owner is the Common Name of the client that registered or created
	// the object; only that client sees it.
	Owner        string     `json:"owner"`
	State        string     `json:"state"`
	Initial      time.Time  `json:"initial_date"`
	Activation   *time.Time `json:"activation_date,omitempty"`
	Deactivation *time.Time `json:"deactivation_date,omitempty"`
	Compromise   *time.Time `json:"compromise_date,omitempty"`
	LastChange   time.Time  `json:"last_change_date"`
	// DEK is the fingerprint of the node's data key the material is
	// sealed under (as lock.Status shows it).
	DEK string `json:"dek_fingerprint"`
	// Sealed is the key material in byokd's block format, under a key
	// derived from the DEK for this object alone (datakey.KMIPInfo).
	Sealed []byte `json:"sealed"`
}

func (o *Object) clone() *Object {
	c := *o
	c.Names = slices.Clone(o.Names)
	c.Sealed = slices.Clone(o.Sealed)
	return &c
}

// LockedError is returned for any call that needs key material while the
// node does not serve keys.
type LockedError struct{ State, Reason string }

func (e *LockedError) Error() string {
	msg := "byokd node " + strings.ToLower(e.State)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg + "; KMIP keys are served again when the node unlocks"
}

// ErrNotFound: no object has the id.
var ErrNotFound = errors.New("no such object")

// sealAAD binds sealed material to its purpose.
var sealAAD = []byte("byokd kmip object material v1")

// MaxObjects bounds the objects a node keeps: a database needs a handful
// (one master key, and one more per rotation).
const MaxObjects = 4096

// ErrFull: the store holds as many objects as it keeps.
var ErrFull = errors.New("the KMIP store is full")

// ErrRetry: the sealed key is being sealed again (ErrReseal); the call may
// be retried.
var ErrRetry = errors.New("the node's key is being sealed again; retry")

// Store keeps the KMIP objects of one node in a folder of its state
// directory, one file per object, each written atomically with mode 0600.
type Store struct {
	dir     atomicfile.Dir
	cluster string
	keys    Deriver
	gate    Gate
	now     func() time.Time
	// Reseal asks the key manager to seal the DEK again after the
	// sealer said ErrReseal; nil does nothing.
	Reseal func()

	// maxObjects is MaxObjects; tests lower it.
	maxObjects int

	mu   sync.Mutex
	objs map[string]*Object // guarded by mu
}

const fileSuffix = ".json"

// OpenStore opens (creating it 0700) the folder at path and reads every
// object in it. A file that does not parse fails the open, naming it: a
// database's key is never dropped silently.
func OpenStore(path, clusterID string, keys Deriver, gate Gate) (*Store, error) {
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("kmip store: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("kmip store: %w", err)
	}
	s := &Store{dir: atomicfile.NewDir(f), cluster: clusterID, keys: keys, gate: gate,
		now: time.Now, objs: map[string]*Object{}, maxObjects: MaxObjects}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("kmip store %s: %w", path, err)
	}
	if st.Mode&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("kmip store %s: mode %#o lets others in; want 0700", path, st.Mode&0o777)
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kmip store %s: %w", path, err)
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A writer's temporary file, left by a crash: byokd is the
			// folder's only writer, so every one of them goes, whether
			// its object was stored or not.
			if base, _, ok := strings.Cut(name[1:], ".tmp-"); ok {
				names = append(names, base)
			}
			continue
		}
		if !strings.HasSuffix(name, fileSuffix) || !e.Type().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("kmip store %s: unexpected entry %q", path, name)
		}
		names = append(names, name)
		o, err := readObject(filepath.Join(path, name))
		if err != nil {
			f.Close()
			return nil, err
		}
		if o.ID+fileSuffix != name {
			f.Close()
			return nil, fmt.Errorf("kmip store: %s holds object %q", filepath.Join(path, name), o.ID)
		}
		s.objs[o.ID] = o
	}
	s.dir.RemoveTemps(names...)
	return s, nil
}

func readObject(path string) (*Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kmip store: %w", err)
	}
	var o Object
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("kmip store: %s: %w", path, err)
	}
	if o.Version != recordVersion {
		return nil, fmt.Errorf("kmip store: %s: version %d, want %d", path, o.Version, recordVersion)
	}
	if err := validID(o.ID); err != nil {
		return nil, fmt.Errorf("kmip store: %s: %w", path, err)
	}
	return &o, nil
}

// Close closes the folder.
func (s *Store) Close() error { return s.dir.File.Close() }

// Len is the number of objects the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objs)
}

// newID is a random UUID (version 4).
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// validID accepts the ids newID makes; anything else names no object.
func validID(id string) error {
	if len(id) != 36 {
		return ErrNotFound
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return ErrNotFound
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		default:
			return ErrNotFound
		}
	}
	return nil
}

// serving returns the node's status, or a LockedError when it serves no keys.
func (s *Store) serving() (lock.Status, error) {
	st := s.gate.Status()
	if !st.State.Serving() {
		return st, &LockedError{State: st.State.String(), Reason: st.Reason}
	}
	return st, nil
}

// Serving reports whether the object's key material can be had now: the
// node serves keys, and the key the object is sealed under.
func (s *Store) Serving(o *Object) bool {
	st := s.gate.Status()
	return st.State.Serving() && st.Fingerprint == o.DEK
}

func (s *Store) errFull() error {
	return fmt.Errorf("byokd keeps at most %d KMIP objects; destroy some first (%w)", s.maxObjects, ErrFull)
}

// withKey derives the object's wrapping key and runs fn with it while the
// node serves the key named dek, then wipes it.
func (s *Store) withKey(ctx context.Context, id, dek string, fn func(key []byte) error) error {
	st, err := s.serving()
	if err != nil {
		return err
	}
	if dek != "" && dek != st.Fingerprint {
		return fmt.Errorf("object %s is sealed under data key %s; the node serves %s", id, dek, st.Fingerprint)
	}
	info, err := datakey.KMIPInfo(s.cluster, id)
	if err != nil {
		return err
	}
	var k [datakey.Size]byte
	defer secmem.Wipe(k[:])
	if err := s.keys.Derive(ctx, info, k[:]); err != nil {
		if errors.Is(err, seal.ErrReseal) {
			if s.Reseal != nil {
				s.Reseal()
			}
			return ErrRetry
		}
		if errors.Is(err, seal.ErrWiped) {
			_, lerr := s.serving()
			if lerr != nil {
				return lerr
			}
		}
		return fmt.Errorf("derive the object's key: %w", err)
	}
	if now := s.gate.Status(); !now.State.Serving() || now.Fingerprint != st.Fingerprint {
		// Locked, or another key taken, while the sealer worked.
		return &LockedError{State: now.State.String(), Reason: now.Reason}
	}
	return fn(k[:])
}

// Add seals material under a new object's key and stores the object; o
// gives its attributes (its ID, DEK and Sealed are set here). It returns the
// stored object. material is left to the caller to wipe.
func (s *Store) Add(ctx context.Context, o Object, material []byte) (*Object, error) {
	s.mu.Lock()
	full := len(s.objs) >= s.maxObjects
	s.mu.Unlock()
	if full {
		return nil, s.errFull()
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	st, err := s.serving()
	if err != nil {
		return nil, err
	}
	o.Version, o.ID, o.DEK = recordVersion, id, st.Fingerprint
	if err := s.withKey(ctx, id, o.DEK, func(key []byte) error {
		o.Sealed, err = block.Seal(nil, key, 0, id, material, sealAAD)
		return err
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.objs) >= s.maxObjects {
		return nil, s.errFull()
	}
	if err := s.writeMuHeld(&o, true); err != nil {
		return nil, err
	}
	s.objs[id] = &o
	return o.clone(), nil
}

// Material opens the object's key material; the caller wipes it.
func (s *Store) Material(ctx context.Context, id string) (*Object, []byte, error) {
	o, ok := s.Get(id)
	if !ok {
		return nil, nil, ErrNotFound
	}
	var out []byte
	err := s.withKey(ctx, id, o.DEK, func(key []byte) error {
		var err error
		out, err = block.Open(nil, key, id, o.Sealed, sealAAD)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return o, out, nil
}

// Get returns a copy of the object's record.
func (s *Store) Get(id string) (*Object, bool) {
	if validID(id) != nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[id]
	if !ok {
		return nil, false
	}
	return o.clone(), true
}

// List returns copies of every object's record, ordered by creation.
func (s *Store) List() []*Object {
	s.mu.Lock()
	out := make([]*Object, 0, len(s.objs))
	for _, o := range s.objs {
		out = append(out, o.clone())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *Object) int {
		if c := a.Initial.Compare(b.Initial); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Update changes an object's attributes with fn and writes it; fn sees a
// copy and its error leaves the object as it was. Updates need the node to
// serve keys, so that a locked node changes nothing.
func (s *Store) Update(id string, fn func(o *Object) error) (*Object, error) {
	if _, err := s.serving(); err != nil {
		return nil, err
	}
	if validID(id) != nil {
		return nil, ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.objs[id]
	if !ok {
		return nil, ErrNotFound
	}
	next := cur.clone()
	if err := fn(next); err != nil {
		return nil, err
	}
	next.LastChange = s.now().UTC().Truncate(time.Second)
	if err := s.writeMuHeld(next, false); err != nil {
		return nil, err
	}
	s.objs[id] = next
	return next.clone(), nil
}

// Remove destroys an object: its file goes, and with it the sealed
// material. check runs under the store's lock and may refuse.
func (s *Store) Remove(id string, check func(o *Object) error) error {
	if _, err := s.serving(); err != nil {
		return err
	}
	if validID(id) != nil {
		return ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.objs[id]
	if !ok {
		return ErrNotFound
	}
	if err := check(cur.clone()); err != nil {
		return err
	}
	if err := unix.Unlinkat(int(s.dir.File.Fd()), id+fileSuffix, 0); err != nil {
		return fmt.Errorf("remove object %s: %w", id, err)
	}
	delete(s.objs, id)
	if err := s.dir.File.Sync(); err != nil {
		return fmt.Errorf("remove object %s: sync folder: %w", id, err)
	}
	return nil
}

func (s *Store) writeMuHeld(o *Object, create bool) error {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if create {
		err = s.dir.Create(o.ID+fileSuffix, b, 0o600)
	} else {
		err = s.dir.Write(o.ID+fileSuffix, b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("store object %s: %w", o.ID, err)
	}
	return nil
}
