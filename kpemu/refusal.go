// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Refusal presets: what answers a request that something between the client
// and Key Protect's keys refuses. The first four are Key Protect's own
// answers, in its error shape; the last three come from something in front
// of it (a proxy, a load balancer) and are not in Key Protect's shape.
const (
	// RefuseNetworkPolicy is 401 with no reasons: an allowed-IP list, a
	// private-only instance reached over the public endpoint or a
	// context-based restriction refused the request. The body is the one
	// removed access gets; a client cannot tell them apart.
	RefuseNetworkPolicy = "network-policy"
	// RefuseWrongRegion is 401 "Either the user does not have access to the
	// specified resource, the resource does not exist, or the region is
	// incorrectly set".
	RefuseWrongRegion = "wrong-region"
	// RefuseIPv6Policy is 403 FEATURE_RESTRICTED_ERR, as an IPv6 client of an
	// instance with an allowed-IP policy gets.
	RefuseIPv6Policy = "ipv6-policy"
	// RefuseHSM is 422 UNPROCESSABLE_CIPHERTEXT_ERR, documented as an
	// internal error of the service's HSM.
	RefuseHSM = "hsm"
	// RefuseProxy407 is 407 Proxy Authentication Required from an HTTP proxy,
	// with an HTML body.
	RefuseProxy407 = "proxy-407"
	// RefuseLB403 is 403 with the HTML page of a load balancer or WAF.
	RefuseLB403 = "lb-403"
	// RefuseLB404 is 404 with the HTML page of a load balancer.
	RefuseLB404 = "lb-404"
)

// refusalPresets lists the names Faults.Refusal accepts.
var refusalPresets = []string{
	RefuseNetworkPolicy, RefuseWrongRegion, RefuseIPv6Policy, RefuseHSM,
	RefuseProxy407, RefuseLB403, RefuseLB404,
}

func validRefusal(name string) error {
	if !slices.Contains(refusalPresets, name) {
		return fmt.Errorf("refusal %q is not one of %s", name, strings.Join(refusalPresets, ", "))
	}
	return nil
}

// writeRefusal answers a request with the refusal preset name (validated by
// SetFaults).
func writeRefusal(w http.ResponseWriter, name, route string) {
	switch name {
	case RefuseNetworkPolicy:
		writeError(w, errUnauthorized())
	case RefuseWrongRegion:
		writeError(w, errWrongRegion())
	case RefuseIPv6Policy:
		writeError(w, errFeatureRestricted())
	case RefuseHSM:
		writeError(w, errHSM(whatForRoute(route)))
	case RefuseProxy407:
		w.Header().Set("Proxy-Authenticate", `Basic realm="corporate proxy"`)
		writeHTML(w, http.StatusProxyAuthRequired, "407 Proxy Authentication Required",
			"The proxy server requires you to sign in before it forwards this request.")
	case RefuseLB403:
		writeHTML(w, http.StatusForbidden, "403 Forbidden",
			"Access to this resource was denied by the edge firewall. Reference: kpemu-edge")
	case RefuseLB404:
		writeHTML(w, http.StatusNotFound, "404 Not Found",
			"No route to a backend matches this host and path.")
	}
}

// whatForRoute names the failed operation of a route for errorMsg.
func whatForRoute(route string) string {
	if a, ok := strings.CutPrefix(route, "action_"); ok && knownActions[a] {
		return what(a)
	}
	return "Request could not be processed"
}

// writeHTML answers as a proxy or load balancer does: a short HTML page, not
// Key Protect's JSON.
func writeHTML(w http.ResponseWriter, status int, title, text string) {
	b := []byte("<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<h1>" + title +
		"</h1>\r\n<p>" + text + "</p>\r\n</body>\r\n</html>\r\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
