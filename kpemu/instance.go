// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Instance policies, in the shape keyprotect-go-client's instances.go sends
// and parses: allowedNetwork and allowedIP are enforced on every Key Protect
// request (not IAM, not /_kpemu); dualAuthDelete and rotation apply to keys
// created after they are set; metrics is only stored.

const (
	policyAllowedNetwork = "allowedNetwork"
	policyAllowedIP      = "allowedIP"
	policyMetrics        = "metrics"
	networkPublicPrivate = "public-and-private"
	networkPrivateOnly   = "private-only"
	maxAllowedIPs        = 1000 // settings-allowed-ip.md
	whatInstancePolicy   = "Instance policy could not be created"
	adminIdentity        = "kpemu-admin"
)

var instancePolicyTypes = []string{policyAllowedIP, policyAllowedNetwork, policyDualAuth, policyMetrics, policyRotation}

// instancePolicy is one instance policy as the state file keeps it.
type instancePolicy struct {
	Type           string    `json:"type"`
	Enabled        bool      `json:"enabled"`
	AllowedNetwork string    `json:"allowedNetwork,omitempty"`
	AllowedIPs     []string  `json:"allowedIPs,omitempty"`
	IntervalMonth  int       `json:"intervalMonth,omitempty"`
	Created        time.Time `json:"created"`
	CreatedBy      string    `json:"createdBy"`
	Updated        time.Time `json:"updated"`
	UpdatedBy      string    `json:"updatedBy"`
}

type instancePolicyJSON struct {
	CreatedBy    string             `json:"createdBy"`
	CreationDate time.Time          `json:"creationDate"`
	LastUpdated  time.Time          `json:"lastUpdated"`
	UpdatedBy    string             `json:"updatedBy"`
	PolicyType   string             `json:"policy_type"`
	PolicyData   instancePolicyData `json:"policy_data"`
}

type instancePolicyData struct {
	Enabled    bool                `json:"enabled"`
	Attributes *instancePolicyAttr `json:"attributes,omitempty"`
}

type instancePolicyAttr struct {
	AllowedNetwork string   `json:"allowed_network,omitempty"`
	AllowedIP      []string `json:"allowed_ip,omitempty"`
	IntervalMonth  int      `json:"interval_month,omitempty"`
}

type instancePoliciesBody struct {
	Metadata  collectionMeta       `json:"metadata"`
	Resources []instancePolicyJSON `json:"resources,omitempty"`
}

// instanceChange is one validated instance policy of a PUT.
type instanceChange struct {
	typ      string
	enabled  bool
	network  string
	ips      []string
	interval int
}

type putInstancePoliciesRequest struct {
	Metadata  *requestMeta `json:"metadata"`
	Resources []struct {
		PolicyType string `json:"policy_type"`
		PolicyData *struct {
			Enabled    *bool `json:"enabled"`
			Attributes *struct {
				AllowedNetwork *string  `json:"allowed_network"`
				AllowedIP      []string `json:"allowed_ip"`
				IntervalMonth  *int     `json:"interval_month"`
			} `json:"attributes"`
		} `json:"policy_data"`
	} `json:"resources"`
}

func instancePolicyParam(r *http.Request, w string) (string, *apiError) {
	p := r.URL.Query().Get("policy")
	if p != "" && !slices.Contains(instancePolicyTypes, p) {
		return "", errQueryParam(w, "policy must be one of "+strings.Join(instancePolicyTypes, ", ")+" (kpemu emulates no other)")
	}
	return p, nil
}

// decodeInstancePolicies parses and checks a PUT of instance policies; it
// does not touch the emulator's state, so it can be fuzzed alone.
func decodeInstancePolicies(body []byte, which string) ([]instanceChange, *apiError) {
	w := whatInstancePolicy
	if body == nil {
		return nil, errNoBody(w)
	}
	var req putInstancePoliciesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errBadBody(w, "the body is not valid JSON")
	}
	if e := checkPolicyEnvelope(w, req.Metadata, len(req.Resources)); e != nil {
		return nil, e
	}
	numErr := reasonErr(http.StatusBadRequest, w, "NUM_COLLECTION_RESOURCE_ERR",
		"Only a single instance policy may be created per query parameter: Please pass single resource object")
	if which != "" && len(req.Resources) > 1 {
		return nil, numErr
	}
	var out []instanceChange
	for _, res := range req.Resources {
		if which != "" && res.PolicyType != which {
			return nil, reasonErr(http.StatusBadRequest, w, "BODY_QUERY_PARAM_MISMATCH_ERR", "Data in body does not match data required by query parameter")
		}
		if !slices.Contains(instancePolicyTypes, res.PolicyType) {
			return nil, errFieldMust(w, "policy_type", "one of "+strings.Join(instancePolicyTypes, ", ")+" (kpemu emulates no other)")
		}
		if slices.ContainsFunc(out, func(c instanceChange) bool { return c.typ == res.PolicyType }) {
			return nil, numErr
		}
		if res.PolicyData == nil || res.PolicyData.Enabled == nil {
			return nil, errFieldMust(w, "enabled", "a boolean")
		}
		c := instanceChange{typ: res.PolicyType, enabled: *res.PolicyData.Enabled}
		attr := res.PolicyData.Attributes
		switch c.typ {
		case policyAllowedNetwork:
			if attr != nil && attr.AllowedNetwork != nil {
				c.network = *attr.AllowedNetwork
			}
			if c.network == "" && !c.enabled {
				break
			}
			if c.network != networkPublicPrivate && c.network != networkPrivateOnly {
				return nil, errFieldMust(w, "allowed_network", "public-and-private or private-only")
			}
		case policyAllowedIP:
			if attr != nil {
				c.ips = attr.AllowedIP
			}
			if !c.enabled {
				if len(c.ips) > 0 {
					return nil, errFieldMust(w, "allowed_ip", "left out when the policy is disabled")
				}
				break
			}
			if _, err := parseCIDRs(c.ips); err != nil {
				return nil, errFieldMust(w, "allowed_ip", fmt.Sprintf("a list of 1 to %d IPv4 or IPv6 subnets in CIDR notation: %v", maxAllowedIPs, err))
			}
		case policyRotation:
			if attr != nil && attr.IntervalMonth != nil {
				c.interval = *attr.IntervalMonth
			}
			switch {
			case c.enabled && (c.interval < 1 || c.interval > 12):
				return nil, errFieldMust(w, "interval_month", msgIntervalMonth)
			case !c.enabled && c.interval != 0:
				return nil, errFieldMust(w, "interval_month", "provided only if the policy is being enabled")
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// parseCIDRs parses an allowed-IP list: 1 to 1000 subnets in CIDR notation.
func parseCIDRs(cidrs []string) ([]netip.Prefix, error) {
	if len(cidrs) == 0 || len(cidrs) > maxAllowedIPs {
		return nil, fmt.Errorf("%d subnets given", len(cidrs))
	}
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("%q is not a subnet in CIDR notation", c)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (s *Server) renderInstancePolicy(p *instancePolicy) instancePolicyJSON {
	j := instancePolicyJSON{
		CreatedBy: p.CreatedBy, CreationDate: p.Created, LastUpdated: p.Updated, UpdatedBy: p.UpdatedBy,
		PolicyType: p.Type, PolicyData: instancePolicyData{Enabled: p.Enabled},
	}
	switch {
	case p.Type == policyAllowedNetwork && p.AllowedNetwork != "":
		j.PolicyData.Attributes = &instancePolicyAttr{AllowedNetwork: p.AllowedNetwork}
	case p.Type == policyAllowedIP && len(p.AllowedIPs) > 0:
		j.PolicyData.Attributes = &instancePolicyAttr{AllowedIP: p.AllowedIPs}
	case p.Type == policyRotation && p.IntervalMonth > 0:
		j.PolicyData.Attributes = &instancePolicyAttr{IntervalMonth: p.IntervalMonth}
	}
	return j
}

// instancePolicies answers the instance's policies (one type, or all when
// which is empty) in the service's shape.
func (s *Server) instancePolicies(which string) instancePoliciesBody {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := instancePoliciesBody{Metadata: collectionMeta{CollectionType: typePolicy}}
	for _, t := range instancePolicyTypes {
		if p := s.instPolicies[t]; p != nil && (which == "" || which == t) {
			out.Resources = append(out.Resources, s.renderInstancePolicy(p))
		}
	}
	out.Metadata.CollectionTotal = len(out.Resources)
	return out
}

func (s *Server) getInstancePolicies(r *http.Request, now time.Time) result {
	which, e := instancePolicyParam(r, "Instance policy could not be retrieved")
	if e != nil {
		return fail(e)
	}
	return ok(http.StatusOK, s.instancePolicies(which))
}

func (s *Server) putInstancePolicies(r *http.Request, now time.Time) result {
	which, e := instancePolicyParam(r, whatInstancePolicy)
	if e != nil {
		return fail(e)
	}
	body, e := readBody(r)
	if e != nil {
		return fail(e)
	}
	changes, e := decodeInstancePolicies(body, which)
	if e != nil {
		return fail(e)
	}
	if err := s.applyInstanceChanges(changes, subject(r), now); err != nil {
		return fail(s.persistFailed(err))
	}
	return ok(http.StatusNoContent, nil)
}

// applyInstanceChanges sets checked instance policies and persists them.
func (s *Server) applyInstanceChanges(changes []instanceChange, by string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changes {
		p := s.instPolicies[c.typ]
		if p == nil {
			p = &instancePolicy{Type: c.typ, Created: now, CreatedBy: by}
			s.instPolicies[c.typ] = p
		}
		p.Enabled, p.AllowedNetwork, p.AllowedIPs, p.IntervalMonth = c.enabled, c.network, c.ips, c.interval
		p.Updated, p.UpdatedBy = now, by
	}
	if err := s.refreshNetworkMuHeld(); err != nil {
		return err
	}
	return s.persistMuHeld()
}

// refreshNetworkMuHeld recomputes what networkPolicy enforces from the
// instance policies; s.mu must be held for writing.
func (s *Server) refreshNetworkMuHeld() error {
	s.privateOnly, s.allowedIPOn, s.allowedIPs = false, false, nil
	if p := s.instPolicies[policyAllowedNetwork]; p != nil && p.Enabled {
		s.privateOnly = p.AllowedNetwork == networkPrivateOnly
	}
	if p := s.instPolicies[policyAllowedIP]; p != nil && p.Enabled {
		prefixes, err := parseCIDRs(p.AllowedIPs)
		if err != nil {
			return fmt.Errorf("allowedIP policy: %w", err)
		}
		s.allowedIPOn, s.allowedIPs = true, prefixes
	}
	return nil
}

// networkPolicy enforces allowedNetwork and allowedIP on a Key Protect
// request: a private-only instance answers 401 to a request whose Host is
// not private.<region>...; an allowed-IP list answers 401 to an IPv4 client
// outside it and 403 FEATURE_RESTRICTED_ERR to an IPv6 client
// (error-messages.md). The client address is the connection's (RemoteAddr);
// forwarding headers are not trusted.
func (s *Server) networkPolicy(r *http.Request) *apiError {
	s.mu.RLock()
	privateOnly, ipOn, prefixes := s.privateOnly, s.allowedIPOn, s.allowedIPs
	s.mu.RUnlock()
	if privateOnly {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !strings.HasPrefix(strings.ToLower(host), "private.") {
			return errUnauthorized()
		}
	}
	if ipOn {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return errUnauthorized()
		}
		addr := ap.Addr().Unmap()
		if addr.Is6() {
			return errFeatureRestricted()
		}
		if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return errUnauthorized()
		}
	}
	return nil
}

// SetAllowedNetwork sets the instance's allowedNetwork policy, bypassing
// the network policies themselves (a customer whose policy locks them out
// would need IBM): private-only refuses every request whose Host does not
// start with "private." (401).
func (s *Server) SetAllowedNetwork(privateOnly bool) error {
	network := networkPublicPrivate
	if privateOnly {
		network = networkPrivateOnly
	}
	return s.applyInstanceChanges([]instanceChange{{typ: policyAllowedNetwork, enabled: true, network: network}}, adminIdentity, s.now())
}

// SetAllowedIPs sets the instance's allowedIP policy to these subnets (CIDR
// notation, IPv4 or IPv6), bypassing the network policies; none disables it.
func (s *Server) SetAllowedIPs(cidrs []string) error {
	c := instanceChange{typ: policyAllowedIP, enabled: len(cidrs) > 0, ips: cidrs}
	if c.enabled {
		if _, err := parseCIDRs(cidrs); err != nil {
			return fmt.Errorf("kpemu: allowed IPs: %w", err)
		}
	}
	return s.applyInstanceChanges([]instanceChange{c}, adminIdentity, s.now())
}

// SetInstanceDualAuthDelete sets the instance's dualAuthDelete policy: keys
// created while it is enabled carry a dual authorization policy.
func (s *Server) SetInstanceDualAuthDelete(enabled bool) error {
	return s.applyInstanceChanges([]instanceChange{{typ: policyDualAuth, enabled: enabled}}, adminIdentity, s.now())
}

// SetInstanceRotation sets the instance's rotation policy: generated root
// keys created while it is enabled carry a rotation policy of this many
// months (1 to 12); 0 disables it.
func (s *Server) SetInstanceRotation(months int) error {
	if months < 0 || months > 12 {
		return fmt.Errorf("kpemu: rotation interval %d: want 1 to 12 months, or 0 to disable", months)
	}
	return s.applyInstanceChanges([]instanceChange{{typ: policyRotation, enabled: months > 0, interval: months}}, adminIdentity, s.now())
}

// ClearInstancePolicies removes every instance policy.
func (s *Server) ClearInstancePolicies() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.instPolicies)
	if err := s.refreshNetworkMuHeld(); err != nil {
		return err
	}
	return s.persistMuHeld()
}

// applyInstanceKeyPolicies gives a new key the policies the instance's
// dualAuthDelete and rotation policies hand down; s.mu must be held.
func (s *Server) applyInstanceKeyPolicies(k *key, by string, now time.Time) {
	if p := s.instPolicies[policyDualAuth]; p != nil && p.Enabled {
		k.DualAuthPolicy = &keyPolicy{ID: newUUID(), Enabled: true, Created: now, CreatedBy: by, Updated: now, UpdatedBy: by}
	}
	if p := s.instPolicies[policyRotation]; p != nil && p.Enabled && k.root() && !k.Imported {
		k.RotationPolicy = &keyPolicy{ID: newUUID(), Enabled: true, IntervalMonth: p.IntervalMonth, Since: now,
			Created: now, CreatedBy: by, Updated: now, UpdatedBy: by}
		s.trackRotation(k)
	}
}
