// SPDX-License-Identifier: Apache-2.0

package keymgr

import (
	"context"
	"errors"
	"fmt"

	"github.com/byokd/byokd/agent/audit"
	"github.com/byokd/byokd/agent/wdek"
)

// Errors of the operator actions, for the caller to map to an answer.
var (
	// ErrMismatch: a fingerprint the operator gave is not the one byokd
	// holds; nothing changed.
	ErrMismatch = errors.New("fingerprint does not match")
	// ErrNotApplicable: the node is not in a state the action is for;
	// nothing changed.
	ErrNotApplicable = errors.New("not applicable")
)

// Operator names who asked for an operator action, for the audit log.
type Operator struct {
	UID, PID int
}

// AcceptKey makes the node serve the other key it refused: the wrapped key
// file unwraps to offered, not to current, the key the node serves. Both
// are the 16-digit fingerprints Status shows, and both must match what
// byokd holds, so the operator names exactly the change they accept. The
// new key gets the next generation, the old identity is kept as
// identity.json.prev, and the next round unlocks.
func (m *Manager) AcceptKey(ctx context.Context, who Operator, current, offered string) (*wdek.KeyIdentity, error) {
	if err := m.acquire(ctx); err != nil {
		return nil, err
	}
	defer func() { <-m.sem }()
	if m.sticky == nil || m.sticky.cause != audit.KeyChanged || m.identity == nil {
		return nil, fmt.Errorf("%w: the node has not refused another key; accept-key is for a node locked because its wrapped key unwraps to a different key", ErrNotApplicable)
	}
	if current != m.identity.Short() || offered != wdek.ShortFingerprint(m.sticky.offered) {
		return nil, fmt.Errorf("%w: byokd serves %s and was offered %s; accept-key %s %s changes nothing",
			ErrMismatch, m.identity.Short(), wdek.ShortFingerprint(m.sticky.offered), current, offered)
	}
	next := *m.identity
	next.Fingerprint = m.sticky.offered
	next.Generation++
	next.Recorded = m.cfg.Clock.Now().UTC()
	if err := m.cfg.Store.ReplaceIdentity(&next); err != nil {
		return nil, fmt.Errorf("record the accepted key: %w", err)
	}
	old := m.identity
	m.identity, m.held, m.sticky = &next, nil, nil
	m.publishIdentity()
	audit.Warn(m.cfg.Log, "operator accepted another data encryption key", audit.AcceptKey,
		audit.From(old.Short()), audit.FromGeneration(old.Generation), audit.To(next.Short()), audit.ToGeneration(next.Generation),
		audit.UID(who.UID), audit.PID(who.PID), audit.Path(m.cfg.Store.IdentityPath()))
	m.kick()
	return &next, nil
}

// ForgetKey gives up the key the node served, named by its fingerprint, so
// that a node whose wrapped key is lost for good may provision a new one
// (with provision = true). The data written under the forgotten key stays
// unreadable. It is refused while the node serves, and while a wrapped key
// file is in place: a file that holds another key is accept-key's, which
// names both keys, and a damaged one is removed first.
func (m *Manager) ForgetKey(ctx context.Context, who Operator, current string) error {
	if err := m.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-m.sem }()
	if st := m.cfg.Machine.Status(); st.State.Serving() {
		return fmt.Errorf("%w: the node serves key %s; forget-key is only for a locked node", ErrNotApplicable, st.Fingerprint)
	}
	if err := m.loadIdentity(); err != nil {
		return err
	}
	if m.identity == nil {
		return fmt.Errorf("%w: no key identity is recorded", ErrNotApplicable)
	}
	if current != m.identity.Short() {
		return fmt.Errorf("%w: the node's key is %s, not %s", ErrMismatch, m.identity.Short(), current)
	}
	if _, err := m.cfg.Store.Load(); !errors.Is(err, wdek.ErrNotExist) {
		return fmt.Errorf("%w: %s is in place; forget-key is for a node whose wrapped key is lost. To serve the key that file "+
			"holds, use accept-key; to give up a damaged one, remove it first", ErrNotApplicable, m.cfg.Store.Path())
	}
	if err := m.cfg.Store.RetireIdentity(); err != nil {
		return fmt.Errorf("forget the key: %w", err)
	}
	old := m.identity
	m.identity, m.held, m.sticky = nil, nil, nil
	m.publishIdentity()
	audit.Warn(m.cfg.Log, "operator gave up the node's data encryption key", audit.ForgetKey,
		audit.Fingerprint(old.Short()), audit.Generation(old.Generation), audit.UID(who.UID), audit.PID(who.PID),
		audit.KeptAs(m.cfg.Store.IdentityPath()+wdek.PrevSuffix))
	m.kick()
	return nil
}

// acquire waits for the round in progress, or for ctx.
func (m *Manager) acquire(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("byokd is busy with a round: %w", ctx.Err())
	}
}
